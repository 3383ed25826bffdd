"""Real servers for the engine tests: a free port, and `vllm serve` (the OpenAI-compatible server) in a subprocess."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_vllm_server(model: str, served_name: str, log_path: Path) -> tuple[subprocess.Popen, str]:
    """Start the server on the real model (its own session, output to `log_path`); returns at once with its URL."""
    from rlm_local.engines.vllm_engine import preload_tcmalloc

    port = free_port()
    cpus = ",".join(str(c) for c in sorted(os.sched_getaffinity(0)))
    preload_tcmalloc()  # the set-up the in-process CPU engine runs with (and float32, 32-token blocks below)
    env = {
        **os.environ,
        "VLLM_CPU_KVCACHE_SPACE": "2",
        "VLLM_CPU_OMP_THREADS_BIND": cpus,
        "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
    }
    command = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        *("--model", model, "--served-model-name", served_name, "--host", "127.0.0.1", "--port", str(port)),
        *("--max-model-len", "4096", "--max-num-seqs", "8", "--dtype", "float32", "--block-size", "32", "--seed", "0"),
        *("--enforce-eager", "--generation-config", "vllm", "--enable-prompt-tokens-details"),
        *("--scheduling-policy", "priority"),
    ]
    with log_path.open("wb") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    return server, f"http://127.0.0.1:{port}/v1"


def wait_until_serving(server: subprocess.Popen, url: str, log_path: Path, timeout_s: float = 600) -> None:
    started = time.monotonic()
    while True:
        if server.poll() is not None:
            raise RuntimeError(f"the vLLM server exited: {log_path.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() - started > timeout_s:
            raise RuntimeError(f"the vLLM server did not answer in {timeout_s:.0f} s: {log_path.read_text()[-3000:]}")
        time.sleep(1)


class SharedVllmServer:
    """One `vllm serve` of the test model for every test module that needs an OpenAI-compatible server: a start
    costs over a minute on CPU. `start()` launches it unless it is running (a test that killed it, to see the
    error a client gets, leaves the next user a fresh one) and returns at once; `wait()` blocks until it serves."""

    def __init__(self, log_dir: Path, served_name: str = "qwen-test") -> None:
        self.log_dir = log_dir
        self.served_name = served_name
        self.process: subprocess.Popen | None = None
        self.url = ""
        self.log_path = log_dir / "server-0.log"
        self._starts = 0

    def start(self) -> SharedVllmServer:
        from rlm_local.models import resolve_model

        if self.process is None or self.process.poll() is not None:
            self._starts += 1
            self.log_path = self.log_dir / f"server-{self._starts}.log"  # a restart keeps the killed one's log
            model = resolve_model(None, prepare=False)
            self.process, self.url = launch_vllm_server(model, self.served_name, self.log_path)
        return self

    def wait(self) -> str:
        assert self.process is not None, "start() first"
        wait_until_serving(self.process, self.url, self.log_path)
        return self.url

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)
