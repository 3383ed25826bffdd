"""Which piece size reads a long context fastest: sub-call throughput (context characters per second) by piece size.

The strategy helpers cut the context into pieces and send one sub-call per piece, all at once: `ask_all` first scores
every piece (a one-token `llm_choose` request), then reads a few (a short reply). Bigger pieces mean fewer requests
and less repeated instruction text, smaller ones shorter prompts (attention grows with the prompt) and a small model
that reads better. This measures the speed side on one warm engine, each size on fresh text (no prefix-cache help),
and prints each size's throughput against the helpers' current size. Results only on stdout; engine logs to a file.

    .venv/bin/python scripts/bench_pieces.py [--model ALIAS] [--chars 48000] [--sizes 600,1200,2400,4800,9600]
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
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sandbox"))

import rlm_helpers

from rlm_local.config import EngineConfig
from rlm_local.engines.base import GenerationRequest, SamplingOptions
from rlm_local.engines.engine_log import new_log_path
from rlm_local.engines.vllm_engine import VLLMEngine
from rlm_local.runtime.choose import TOP_LOGPROBS
from rlm_local.synthetic import needle_task

QUESTION = "Which city did the delegation visit after the summit?"
JOBS = {
    "score": (rlm_helpers.RELEVANT_PROMPT, SamplingOptions(max_tokens=1, top_logprobs=TOP_LOGPROBS)),
    "read": (rlm_helpers.READ_PROMPT, SamplingOptions(max_tokens=16, temperature=0.0)),
}


async def measure(engine: VLLMEngine, job: str, size: int, chars: int, salt: int) -> tuple[float, int, float]:
    """(seconds, requests, mean prompt tokens) to send `job` over every piece of a fresh `chars`-long text."""
    template, options = JOBS[job]
    parts = rlm_helpers.pieces(f"[{salt}] " + needle_task(salt, chars=chars).context, size)
    prompts = [template.format(piece=p, question=QUESTION) for p in parts]
    started = time.perf_counter()
    done = await asyncio.gather(
        *(engine.generate(GenerationRequest([{"role": "user", "content": p}], options)) for p in prompts)
    )
    elapsed = time.perf_counter() - started
    return elapsed, len(prompts), sum(d.prompt_tokens for d in done) / len(done)


async def main(args: argparse.Namespace) -> None:
    window = max(4096, max(args.sizes) // 2)
    engine = await VLLMEngine.start(EngineConfig(model=args.model, max_model_len=window, log_file=new_log_path()))
    try:
        await measure(engine, "read", 600, 3000, salt=999)  # warm-up
        print(f"piece-size throughput, model {engine.model}, {args.chars:,} characters per measurement")
        print(f"helpers now: ask_all pieces {rlm_helpers.CLOSE_CHARS:,} chars, ask_each {rlm_helpers.PIECE_CHARS:,}")
        print("| job | piece chars | requests | prompt tokens | seconds | chars/s | vs now |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for number, job in enumerate(JOBS):
            rows = []
            for salt, size in enumerate(args.sizes):  # a new text for every row: no prefix-cache hits
                elapsed, requests, tokens = await measure(engine, job, size, args.chars, 1000 * number + salt)
                rows.append((size, requests, tokens, elapsed, args.chars / elapsed))
            now = next((r[4] for r in rows if r[0] == rlm_helpers.CLOSE_CHARS), rows[0][4])
            for size, requests, tokens, elapsed, speed in rows:
                print(
                    f"| {job} | {size:,} | {requests} | {tokens:,.0f} | {elapsed:.1f} | {speed:,.0f} "
                    f"| {speed / now:.2f}x |"
                )
    finally:
        await engine.close()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="catalog alias or folder (default: the default model)")
    parser.add_argument("--chars", type=int, default=48_000, help="context characters read per measurement")
    parser.add_argument("--sizes", default="600,1200,2400,4800,9600", help="piece sizes in characters")
    args = parser.parse_args()
    args.sizes = [int(s) for s in args.sizes.split(",")]
    return args


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
