"""Accuracy on seeded synthetic long-context tasks, one warm engine: `python scripts/eval_tasks.py --seeds 5`."""

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
from rlm_local.rlm import RLM
from rlm_local.synthetic import counting_task, needle_task

TASKS = {"needle": needle_task, "counting": counting_task}


async def evaluate(args: argparse.Namespace) -> int:
    config = RLMConfig(
        root=EngineConfig(model=args.model, max_model_len=args.max_model_len),
        sandbox=args.sandbox,
        profile=args.profile,
        budgets=Budgets(max_iterations=args.max_iterations),
    )
    correct = 0
    async with RLM(config) as rlm:
        for seed in range(args.seeds):
            task = TASKS[args.task](seed)
            started = time.monotonic()
            trajectory = args.trajectory_dir / f"{args.task}-{seed}.jsonl" if args.trajectory_dir else None
            result = await rlm.acompletion(task.query, task.context, trajectory_path=trajectory)
            ok = result.answer is not None and task.answer.lower() in result.answer.lower()
            correct += ok
            print(
                f"seed {seed}: {'OK ' if ok else 'BAD'} expected {task.answer!r} got {result.answer!r} "
                f"({result.stop_reason}, {result.turns} turns, {result.usage.sub_calls} sub-calls, "
                f"{time.monotonic() - started:.1f}s)",
                flush=True,
            )
            if args.verbose and not ok:
                for event in result.trajectory:
                    if event["event"] == "turn":
                        print(f"  turn {event['turn']}: {event['response'][:300]!r} -> {event['outputs']!s:.300}")
    print(f"{args.task}: {correct}/{args.seeds} correct")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--task", choices=sorted(TASKS), default="needle")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--model", default=None)
    parser.add_argument("--max-model-len", type=int, default=None)
    parser.add_argument("--sandbox", default="process")
    parser.add_argument("--profile", default="auto")
    parser.add_argument("--max-iterations", type=int, default=6)
    parser.add_argument("--trajectory-dir", type=Path, default=None, help="write one JSONL trajectory per task")
    parser.add_argument("-v", "--verbose", action="store_true")
    return asyncio.run(evaluate(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
