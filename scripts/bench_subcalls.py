"""Sub-call batching and root-turn prefix caching, measured side by side on one warm engine.

(a) the same 32 sub-call prompts one after another through `llm_query`, then (b) all at once through
`llm_query_batched`, both issued by real REPL code through the real worker channel; prints both times and the ratio
(target on a 2-core CPU machine: batched at least 4x faster). Then a 5-turn root conversation, printing the share
of prompt tokens served from the prefix cache on turns 2..5 (target at least 80%).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

try:
    import rlm_local  # noqa: F401
except ImportError:  # a checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rlm_local.config import Budgets, EngineConfig, RLMConfig
from rlm_local.context import prepare_context
from rlm_local.engines.engine_log import new_log_path
from rlm_local.engines.vllm_engine import VLLMEngine
from rlm_local.parsing import extract_code_blocks
from rlm_local.prompts import FIRST_USER
from rlm_local.repl.process_sandbox import ProcessSandbox
from rlm_local.repl.session import ReplSession
from rlm_local.rlm import RLM
from rlm_local.runtime.run import RLMRun
from rlm_local.synthetic import needle_task

BATCH_TARGET = 4.0
CACHE_TARGET = 0.80


def prompts_code(n: int) -> str:
    return f"prompts = [f'In one short sentence, what is special about the number {{i}}?' for i in range({n})]\n"


async def time_subcalls(engine: VLLMEngine, n: int, max_tokens: int) -> tuple[float, float]:
    sequential = prompts_code(n) + f"answers = [llm_query(p, max_tokens={max_tokens}) for p in prompts]\n"
    batched = prompts_code(n) + f"answers = llm_query_batched(prompts, max_tokens={max_tokens})\n"
    times = []
    for code in (sequential, batched):
        rlm = RLM(
            RLMConfig(sandbox="process", budgets=Budgets(max_iterations=1, max_subcalls=10_000)),
            root_engine=engine,
            sandbox=ProcessSandbox(),
        )
        started = time.perf_counter()
        await run_cell(rlm, code + "print(len(answers))")
        times.append(time.perf_counter() - started)
    return times[0], times[1]


async def run_cell(rlm: RLM, code: str) -> None:
    """Run one cell in a real REPL session whose sub-calls go through the run loop's handler to the engine."""
    await rlm.start()
    context = prepare_context("unused")
    run = RLMRun(rlm.new_tree("bench"), "bench", context)
    async with ReplSession(rlm.sandbox, context.file, run.serve_subcalls) as session:
        result = await session.execute(code)
    context.cleanup()
    if result.error:
        raise RuntimeError(result.error)


async def root_cache_share(engine: VLLMEngine, turns: int = 5) -> tuple[list[tuple[int, int]], float]:
    """Five real root turns (the model's own code, run in the REPL) of one append-only conversation; FINAL does
    not end it, so every run measures five turns. Returns (prompt, cached) per turn and the cached share of 2..5."""
    rlm = RLM(RLMConfig(sandbox="process"), root_engine=engine, sandbox=ProcessSandbox())
    await rlm.start()
    task = needle_task(123, chars=200_000)
    context = prepare_context(task.context)
    run = RLMRun(rlm.new_tree("cache"), task.query, context)
    run.messages = [
        *run._opening(),
        {"role": "user", "content": FIRST_USER.format(query=task.query, context_description=context.describe())},
    ]
    counts = []
    async with ReplSession(rlm.sandbox, context.file, run.serve_subcalls) as session:
        for turn in range(1, turns + 1):
            reply, meta = await run._root_turn()
            counts.append((meta["prompt_tokens"], meta["cached_tokens"]))
            outputs, _ = await run._run_blocks(session, extract_code_blocks(reply))
            run._append_feedback(outputs or ["(no code)"], None if turn < turns else "Keep checking.")
    context.cleanup()
    later = counts[1:]
    prompt = sum(p for p, _ in later)
    return counts, (sum(c for _, c in later) / prompt if prompt else 0.0)


async def main(args: argparse.Namespace) -> int:
    log_file = new_log_path()  # the engine's logs; stdout carries only the results
    print(f"(engine logs: {log_file})", file=sys.stderr)
    engine = await VLLMEngine.start(
        EngineConfig(model=args.model, max_model_len=8192, cpu_kv_cache_gib=2, log_file=log_file)
    )
    try:
        await time_subcalls(engine, 2, 4)  # warm-up
        sequential, batched = await time_subcalls(engine, args.prompts, args.max_tokens)
        ratio = sequential / batched
        print(f"sub-calls: {args.prompts} prompts, max_tokens={args.max_tokens}")
        print(f"  llm_query one after another : {sequential:8.2f} s")
        print(f"  llm_query_batched           : {batched:8.2f} s")
        print(
            f"  speed-up                    : {ratio:8.2f}x  (target >= {BATCH_TARGET:g}x: "
            f"{'PASS' if ratio >= BATCH_TARGET else 'MISS'})"
        )
        turns, share = await root_cache_share(engine)
        print(f"root conversation: {len(turns)} turns, (prompt, cached) tokens per turn: {turns}")
        print(
            f"  prefix-cache share of prompt tokens, turns 2..5: {share:.1%}  (target >= {CACHE_TARGET:.0%}: "
            f"{'PASS' if share >= CACHE_TARGET else 'MISS'})"
        )
    finally:
        await engine.close()
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=32)
    sys.exit(asyncio.run(main(parser.parse_args())))
