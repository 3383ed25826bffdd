"""Benchmark `rlm-local serve`: RLM jobs per minute through the jobs API at 1, 4 and 16 jobs in flight, one engine.

Starts the server (real engine, the sandbox of `--sandbox`), then for each concurrency level submits `--jobs` needle
questions over distinct synthetic contexts, keeping that many in flight, and times them to the last answer. Prints
jobs/minute, the ratio against concurrency 1, and how many were answered right; results only, on stdout (the
server's and the engine's logs go to files).

    PYTHONPATH=. .venv/bin/python scripts/bench_serve.py --jobs 8
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rlm_local.synthetic import needle_task


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args: argparse.Namespace, port: int, log: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "rlm_local.cli", "serve", "--no-auth", "--port", str(port)]
    command += ["--max-running-per-key", "64", "--max-queued-per-key", "256", "--sandbox", args.sandbox]
    command += ["--model", args.model, "--max-model-len", str(args.max_model_len)]
    with open(log, "w") as sink:
        server = subprocess.Popen(command, stdout=sink, stderr=sink, start_new_session=True)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server stopped: see {log}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                return server
        time.sleep(1)
    raise SystemExit(f"the server did not start in 10 minutes: see {log}")


async def one_level(url: str, concurrency: int, jobs: int, first_seed: int) -> tuple[float, int]:
    """Seconds to finish `jobs` jobs with `concurrency` in flight, and how many answers were right."""
    tasks = [needle_task(first_seed + i, chars=30_000) for i in range(jobs)]
    gate = asyncio.Semaphore(concurrency)
    right = 0
    async with httpx.AsyncClient(base_url=url, timeout=1800) as http:

        async def run(task) -> None:
            nonlocal right
            async with gate:
                job = (await http.post("/v1/jobs", json={"query": task.query, "context": task.context})).json()
                while (state := (await http.get(f"/v1/jobs/{job['id']}")).json())["status"] in ("queued", "running"):
                    await asyncio.sleep(0.25)
            right += task.answer in ((state.get("result") or {}).get("answer") or "")

        started = time.monotonic()
        await asyncio.gather(*(run(t) for t in tasks))
    return time.monotonic() - started, right


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=8, help="jobs per concurrency level")
    parser.add_argument("--levels", default="1,4,16")
    parser.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    parser.add_argument("--max-model-len", type=int, default=8192)
    parser.add_argument("--sandbox", default="docker", choices=["docker", "process"])
    args = parser.parse_args()
    port = free_port()
    log = Path(tempfile.gettempdir()) / f"bench-serve-{os.getpid()}.log"
    server = start_server(args, port, log)
    try:
        url = f"http://127.0.0.1:{port}"
        asyncio.run(one_level(url, 1, 1, 10_000))  # warm-up: the first run pays one-time costs
        base = None
        for number, level in enumerate(int(x) for x in args.levels.split(",")):
            seconds, right = asyncio.run(one_level(url, level, args.jobs, 1000 * (number + 1)))
            per_minute = args.jobs / seconds * 60
            base = base or per_minute
            print(
                f"concurrency {level:>3}: {args.jobs} jobs in {seconds:6.1f}s = {per_minute:5.2f} jobs/min "
                f"({per_minute / base:.2f}x concurrency 1), {right}/{args.jobs} right"
            )
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=120)


if __name__ == "__main__":
    main()
