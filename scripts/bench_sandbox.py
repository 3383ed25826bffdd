"""Benchmark of the Docker sandbox: what a persistent REPL in a pre-started container costs per cell and per sub-call.

One process, the real Docker engine and image (`rlm-local sandbox build` first). Prints a table of figures, ratios and
PASS/MISS per target:

  trivial cell round trip p50 <= 5 ms         (host -> worker -> host through the Unix socket, over >= 200 cells)
  sub-call overhead p50 <= 2 ms               (llm_query answered at once by the host, timed inside the cell)
  100 MB context usable <= 1 s                (acquire -> a cell printing len(context); the file goes as a descriptor)
  start from the warm pool <= 50 ms           (acquire -> worker ready), against a cold container start
and, for comparison, `docker exec` of a fresh python per cell, as sandboxes without a persistent worker do.

    .venv/bin/python scripts/bench_sandbox.py [--cells 300] [--subcalls 500] [--exec-cells 30]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rlm_local.docker_host import ENGINE_HINT, docker_available
from rlm_local.repl.docker_sandbox import DockerSandbox
from rlm_local.repl.session import ContextFile, ReplSession
from rlm_local.sandbox_image import DEFAULT_IMAGE, build_image, image_status


async def instant(kind: str, prompts: list[str], options: dict) -> list[str]:
    return ["ok"] * len(prompts)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:9.2f} ms"


async def start_session(sandbox: DockerSandbox, context: Path | None) -> tuple[ReplSession, float]:
    repl = ReplSession(sandbox, ContextFile(context) if context else None, instant, cell_timeout_s=60)
    started = time.perf_counter()
    await repl.start()
    return repl, time.perf_counter() - started


async def main(args: argparse.Namespace) -> int:
    if not docker_available(timeout=5):
        print(f"the Docker engine does not answer: {ENGINE_HINT}", file=sys.stderr)
        return 1
    if image_status() != "ok":
        build_image()
    work = Path(tempfile.mkdtemp(prefix="rlm-bench-"))
    big = work / "context-100mb.txt"
    line = "The quick brown fox jumps over the lazy dog; the needle is elsewhere. 0123456789\n"
    with big.open("w") as f:
        f.write(line * (100_000_000 // len(line)))
    big_chars = big.stat().st_size
    rows: list[tuple[str, str, str]] = []
    figures: dict[str, float] = {}

    pooled = DockerSandbox(pool_size=1, mem_limit="2g", root=work)
    cold = DockerSandbox(pool_size=0, mem_limit="2g", root=work)
    try:
        await pooled.start()
        await asyncio.to_thread(cold.prepare)

        # -- start: cold container vs warm pool (acquire -> worker ready, no context) --------------------------------
        cold_starts, pool_starts, pool_acquires = [], [], []
        for _ in range(args.starts):
            repl, seconds = await start_session(cold, None)
            cold_starts.append(seconds)
            await repl.close()
            await pooled.start()  # wait for the refill, as a pool between two runs would be
            started = time.perf_counter()
            slot = await pooled.acquire()
            pool_acquires.append(time.perf_counter() - started)
            await slot.kill()
            await pooled.start()
            repl, seconds = await start_session(pooled, None)
            pool_starts.append(seconds)
            await repl.close()
        figures["cold"] = statistics.median(cold_starts)
        figures["pool"] = statistics.median(pool_starts)
        rows.append(("container start, cold (acquire -> ready) p50", ms(figures["cold"]), ""))
        rows.append(("start from the warm pool (acquire -> ready) p50", ms(figures["pool"]), "target <= 50 ms"))
        rows.append(("  of which acquire() from the pool p50", ms(statistics.median(pool_acquires)), ""))

        # -- trivial cells and sub-calls through one warm worker ----------------------------------------------------
        await pooled.start()
        repl, _ = await start_session(pooled, None)
        for _ in range(20):
            await repl.execute("pass")
        cells = []
        for i in range(args.cells):
            started = time.perf_counter()
            result = await repl.execute(f"x = {i}")
            cells.append(time.perf_counter() - started)
            assert result.error is None, result.error
        figures["cell"] = pct(cells, 50)
        rows.append(("trivial cell round trip p50", ms(figures["cell"]), "target <= 5 ms"))
        rows.append(("trivial cell round trip p99", ms(pct(cells, 99)), f"{len(cells)} cells"))

        code = (
            "import time\n_t = []\n"
            f"for _i in range({args.subcalls}):\n"
            "    _s = time.perf_counter(); llm_query('ping'); _t.append(time.perf_counter() - _s)\n"
            "print(' '.join(repr(v) for v in _t))"
        )
        result = await repl.execute(code)
        assert result.error is None, result.error
        subcalls = [float(v) for v in result.stdout.split()]
        figures["subcall"] = pct(subcalls, 50)
        rows.append(("sub-call overhead (instant handler) p50", ms(figures["subcall"]), "target <= 2 ms"))
        rows.append(("sub-call overhead (instant handler) p99", ms(pct(subcalls, 99)), f"{len(subcalls)} calls"))

        # -- docker exec of a fresh python per cell, for comparison --------------------------------------------------
        api = pooled._api()
        container = repl._slot.container_id
        execs = []
        for _ in range(args.exec_cells):
            started = time.perf_counter()
            exec_id = api.exec_create(container, ["python3", "-c", "x = 1"], user="10001:10001")["Id"]
            api.exec_start(exec_id)
            execs.append(time.perf_counter() - started)
            assert api.exec_inspect(exec_id)["ExitCode"] == 0
        figures["exec"] = statistics.median(execs)
        rows.append(("`docker exec python3 -c ...` per cell p50", ms(figures["exec"]), f"{len(execs)} cells"))
        await repl.close()

        # -- a 100 MB context: acquire -> first cell prints len(context) -------------------------------------------
        loads = []
        for _ in range(args.big_runs):
            await pooled.start()
            started = time.perf_counter()
            repl = ReplSession(pooled, ContextFile(big), instant, cell_timeout_s=60)
            result = await repl.execute("print(len(context))")
            loads.append(time.perf_counter() - started)
            assert result.stdout.strip() == str(big_chars), (result.stdout, result.error)
            await repl.close()
        figures["big"] = statistics.median(loads)
        rows.append((f"{big_chars / 1e6:.0f} MB context usable (warm pool) p50", ms(figures["big"]), "target <= 1 s"))
    finally:
        await pooled.close()
        await cold.close()
        big.unlink(missing_ok=True)
        for path in sorted(work.glob("**/*"), reverse=True):
            path.rmdir() if path.is_dir() else path.unlink()
        work.rmdir()

    rows.append(("ratio: docker exec / persistent cell", f"{figures['exec'] / figures['cell']:9.1f} x", ""))
    rows.append(("ratio: cold start / warm-pool start", f"{figures['cold'] / figures['pool']:9.1f} x", ""))
    targets = [
        ("trivial cell p50 <= 5 ms", figures["cell"] <= 0.005),
        ("sub-call overhead p50 <= 2 ms", figures["subcall"] <= 0.002),
        ("100 MB context usable <= 1 s", figures["big"] <= 1.0),
        ("warm-pool start <= 50 ms", figures["pool"] <= 0.050),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"\nDocker sandbox benchmark ({DEFAULT_IMAGE}, {sys.platform})")
    print("-" * (width + 32))
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>12}  {note}")
    print("-" * (width + 32))
    for name, ok in targets:
        print(f"{'PASS' if ok else 'MISS'}  {name}")
    return 0 if all(ok for _, ok in targets) else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=300)
    parser.add_argument("--subcalls", type=int, default=500)
    parser.add_argument("--exec-cells", type=int, default=30)
    parser.add_argument("--starts", type=int, default=5)
    parser.add_argument("--big-runs", type=int, default=3)
    sys.exit(asyncio.run(main(parser.parse_args())))
