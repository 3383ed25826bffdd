"""Benchmark the scheduler with synthetic sub-call-heavy RLM runs: 1, 4 and 8 at once on the same engines.

Each synthetic run is what an RLM run does to the engines: a root turn, then N sub-calls sent as one batch (like
`llm_query_batched`), then a second root turn that extends the first conversation (a prefix-cache hit). Phases use
fresh texts so that no phase profits from an earlier phase's cache.

Prints aggregate generated tokens/s, speed-up against 1 run, p50/p99 queue wait per priority class (our queue plus
the engine's), prefix-cache hit rate, and PASS/MISS against the targets: 8 runs reach >= 3x the throughput of 1 run,
and under saturation the root turns' p99 queue wait is <= 1/4 of the sub-calls' p99.

    PYTHONPATH=. .venv/bin/python scripts/bench_scheduler.py                      # one in-process engine
    PYTHONPATH=. .venv/bin/python scripts/bench_scheduler.py --deployment docs/examples/one-gpu-root-and-sub.toml
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rlm_local.deployment import Deployment, EngineSpec, build_engines, load_deployment
from rlm_local.engines.base import GenerationRequest, SamplingOptions
from rlm_local.engines.engine_log import new_log_path
from rlm_local.scheduler import Scheduler, is_root_class
from rlm_local.scheduler.metrics import percentile

SYSTEM = (
    "You are the root model of a Recursive Language Model. The context is stored in the variable `context` of a "
    "Python REPL. Write code in ```repl blocks to inspect it, call llm_query(prompt) or llm_query_batched(prompts) to "
    "ask a sub-model about pieces of it, and answer with FINAL(answer) when you are done."
)
WORDS = (
    *("alpha", "beta", "gamma", "delta", "epsilon", "river", "mountain", "ledger"),
    *("invoice", "account", "meeting", "report", "budget", "harbor", "orbit"),
)


@dataclass
class Phase:
    runs: int
    elapsed_s: float
    generated_tokens: int
    tokens_per_s: float
    root_wait_p50_s: float | None
    root_wait_p99_s: float | None
    sub_wait_p50_s: float | None
    sub_wait_p99_s: float | None
    sub_engine_queue_p99_s: float | None  # the part of the sub-calls' wait spent in vLLM's own queue
    root_first_token_p50_s: float | None
    prefix_hit_rate: float | None
    requests: int


def text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


async def synthetic_run(sched: Scheduler, run_id: str, args: argparse.Namespace, rng: random.Random) -> None:
    """Root turn, a batch of sub-calls, root turn: the shape of a sub-call-heavy RLM task."""
    root_options = SamplingOptions(max_tokens=args.root_max_tokens, temperature=0.0)
    sub_options = SamplingOptions(max_tokens=args.sub_max_tokens, temperature=0.0)
    messages = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": f"Query: which topics recur? Context preview: {text(rng, args.context_words)}"},
    ]
    first = await sched.root_engine.generate(
        GenerationRequest(messages=messages, options=root_options, kind="root", run_id=run_id)
    )
    chunks = [text(rng, args.chunk_words) for _ in range(args.subcalls)]
    answers = await asyncio.gather(
        *(
            sched.sub_engine.generate(
                GenerationRequest(
                    messages=[{"role": "user", "content": f"Describe in detail the topics of this text: {chunk}"}],
                    options=sub_options,
                    kind="sub",
                    run_id=run_id,
                    depth=1,
                )
            )
            for chunk in chunks
        )
    )
    notes = "\n".join(f"- {a.text[:80]}" for a in answers)
    messages += [{"role": "assistant", "content": first.text}, {"role": "user", "content": f"Output:\n{notes}"}]
    await sched.root_engine.generate(
        GenerationRequest(messages=messages, options=root_options, kind="root", run_id=run_id)
    )


async def phase(sched: Scheduler, runs: int, args: argparse.Namespace, seed: int) -> Phase:
    sched.metrics.reset()
    started = time.monotonic()
    await asyncio.gather(
        *(synthetic_run(sched, f"bench{seed}-{i}", args, random.Random(seed * 1000 + i)) for i in range(runs))
    )
    elapsed = time.monotonic() - started
    samples = [s for s in sched.metrics.samples() if s.ok]
    roots = [s.queue_wait_s for s in samples if is_root_class(s.priority)]
    subs = [s.queue_wait_s for s in samples if not is_root_class(s.priority)]
    generated = sum(s.completion_tokens for s in samples)
    prompt = sum(s.prompt_tokens for s in samples)
    return Phase(
        runs=runs,
        elapsed_s=elapsed,
        generated_tokens=generated,
        tokens_per_s=generated / elapsed,
        root_wait_p50_s=percentile(roots, 50),
        root_wait_p99_s=percentile(roots, 99),
        sub_wait_p50_s=percentile(subs, 50),
        sub_wait_p99_s=percentile(subs, 99),
        sub_engine_queue_p99_s=percentile([s.engine_queue_s for s in samples if not is_root_class(s.priority)], 99),
        root_first_token_p50_s=percentile(
            [s.first_token_s for s in samples if is_root_class(s.priority) and s.first_token_s is not None], 50
        ),
        prefix_hit_rate=sum(s.cached_tokens for s in samples) / prompt if prompt else None,
        requests=len(samples),
    )


def one_engine(args: argparse.Namespace) -> Deployment:
    return Deployment(
        engines=[
            EngineSpec(
                name="local",
                model=args.model,
                dtype=args.dtype,
                max_model_len=args.max_model_len,
                max_num_seqs=args.max_num_seqs,
                cpu_kv_cache_gib=args.kv_gib,
                enforce_eager=True,
            )
        ],
    )


def fmt(value: float | None, unit: str = "s") -> str:
    return "-" if value is None else f"{value:.3f}{unit}"


async def main(args: argparse.Namespace) -> int:
    deployment = load_deployment(args.deployment) if args.deployment else one_engine(args)
    started = time.monotonic()
    log_file = new_log_path()
    print(f"(engine logs: {log_file})", file=sys.stderr)
    sched = await build_engines(deployment, log_file=log_file)
    print(f"engines ready in {time.monotonic() - started:.0f} s: " + ", ".join(s.name for s in sched.slots), flush=True)
    for slot in sched.slots:
        lim = slot.limits
        print(
            f"  {slot.name}: max_in_flight {lim.max_in_flight} ({lim.reserved_for_roots} for roots), "
            f"prompt tokens {lim.max_prompt_tokens:,}"
        )
    try:
        await phase(sched, 1, args, seed=999)  # warm-up: first requests pay one-time costs
        results = []
        for i, n in enumerate(args.runs):
            results.append(await phase(sched, n, args, seed=i))
            r = results[-1]
            print(f"  {n} run(s): {r.elapsed_s:.1f} s, {r.tokens_per_s:.1f} tok/s", flush=True)
    finally:
        await sched.close()
    base = results[0].tokens_per_s if results and results[0].runs == 1 else None
    print()
    shape = f"{args.subcalls} sub-calls x {args.sub_max_tokens} tokens, 2 root turns x {args.root_max_tokens} tokens"
    print(f"each run: {shape}")
    header = f"{'runs':>4} {'time':>8} {'tokens':>7} {'tok/s':>8} {'speed-up':>8} {'root p50':>9} {'root p99':>9} "
    header += f"{'sub p50':>9} {'sub p99':>9} {'(vLLM)':>9} {'root TTFT':>9} {'prefix hit':>10}"
    print(header)
    for r in results:
        speedup = f"{r.tokens_per_s / base:.2f}x" if base else "-"
        hit = "-" if r.prefix_hit_rate is None else f"{r.prefix_hit_rate:.0%}"
        print(
            f"{r.runs:>4} {r.elapsed_s:>7.1f}s {r.generated_tokens:>7} {r.tokens_per_s:>8.1f} {speedup:>8} "
            f"{fmt(r.root_wait_p50_s):>9} {fmt(r.root_wait_p99_s):>9} {fmt(r.sub_wait_p50_s):>9} "
            f"{fmt(r.sub_wait_p99_s):>9} {fmt(r.sub_engine_queue_p99_s):>9} {fmt(r.root_first_token_p50_s):>9} "
            f"{hit:>10}"
        )
    print()
    ok = True
    biggest = max(results, key=lambda r: r.runs)
    if base and biggest.runs >= 8:
        speedup = biggest.tokens_per_s / base
        passed = speedup >= 3.0
        ok &= passed
        print(
            f"{'PASS' if passed else 'MISS'}: {biggest.runs} runs reach {speedup:.2f}x the throughput of 1 run (>= 3x)"
        )
    if biggest.root_wait_p99_s is not None and biggest.sub_wait_p99_s:
        ratio = biggest.root_wait_p99_s / biggest.sub_wait_p99_s
        passed = ratio <= 0.25
        ok &= passed
        print(
            f"{'PASS' if passed else 'MISS'}: with {biggest.runs} runs, root p99 queue wait "
            f"{biggest.root_wait_p99_s:.3f}s is {ratio:.2f} of the sub-calls' {biggest.sub_wait_p99_s:.3f}s (<= 0.25)"
        )
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in results], indent=2))
    return 0 if ok else 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deployment", type=Path, help="deployment TOML (default: one in-process engine)")
    parser.add_argument("--model", default=None, help="model for the default engine (default: the catalog default)")
    parser.add_argument("--runs", type=lambda s: [int(x) for x in s.split(",")], default=[1, 4, 8])
    parser.add_argument("--subcalls", type=int, default=8, help="sub-calls per run (one batch)")
    parser.add_argument("--sub-max-tokens", type=int, default=32)
    parser.add_argument("--root-max-tokens", type=int, default=32)
    parser.add_argument("--context-words", type=int, default=80)
    parser.add_argument("--chunk-words", type=int, default=40)
    parser.add_argument("--max-num-seqs", type=int, default=32)
    parser.add_argument("--dtype", default="auto", help="default engine: float32 batches far better on some CPUs")
    parser.add_argument("--max-model-len", type=int, default=4096)
    parser.add_argument("--kv-gib", type=float, default=2.0)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.model is None and not args.deployment:
        from rlm_local.models import resolve_model

        args.model = resolve_model(None, prepare=False)
    return args


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
