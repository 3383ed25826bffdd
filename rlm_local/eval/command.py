"""`rlm-local eval`: generate (or load) tasks, run every system on one warm engine, write the report."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from rlm_local.config import EngineConfig, RLMConfig
from rlm_local.errors import ConfigError

DEFAULT_LENGTHS = "16000,120000"
DEFAULT_FAMILIES = "needle,aggregation,listing,multihop,codeqa"


def add_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "eval",
        help="measure the RLM against the base model on seeded long-context tasks",
        description="Runs every system on every task (families x lengths x seeds) on one warm engine, appends "
        "results to OUT/results.jsonl (a rerun skips finished tasks), then writes OUT/report.md and OUT/plots/.",
    )
    p.add_argument("--model", default=None, help="catalog alias, local folder or Hugging Face id")
    p.add_argument("--base-url", default=None, help="a remote OpenAI-compatible server instead of in-process vLLM")
    p.add_argument("--max-model-len", type=int, default=None, help="the window, in tokens (RLM and base alike)")
    p.add_argument("--families", default=DEFAULT_FAMILIES, help=f"comma-separated (default: {DEFAULT_FAMILIES})")
    p.add_argument("--lengths", default=DEFAULT_LENGTHS, help="context sizes in characters, comma-separated")
    p.add_argument("--seeds", default="dev:3", help="dev:N, report:N or explicit seeds (report seeds start at 1000)")
    p.add_argument(
        "--systems",
        nargs="+",
        default=["rlm", "base"],
        help="space-separated: rlm, base, or rlm:key=value,... (RLMConfig overrides, e.g. rlm:guards=false)",
    )
    p.add_argument("--dataset", default=None, help="oolong:PATH or longbench:PATH instead of generated tasks")
    p.add_argument("--limit", type=int, default=None, help="at most this many data set rows")
    p.add_argument("--out", type=Path, default=Path("runs/eval"), help="output folder (resumable)")
    p.add_argument("--concurrency", type=int, default=4, help="tasks in flight at once, through the scheduler")
    p.add_argument("--sandbox", choices=["auto", "docker", "process"], default="auto")
    p.add_argument("--max-iterations", type=int, default=None)
    p.add_argument("--report-only", action="store_true", help="rebuild the report from OUT/results.jsonl")


def build_tasks(args: argparse.Namespace) -> list:
    from rlm_local.eval.datasets import load_dataset
    from rlm_local.eval.seeds import parse_seeds
    from rlm_local.eval.tasks import FAMILIES, make_tasks

    if args.dataset:
        return load_dataset(args.dataset, args.limit)
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    unknown = [f for f in families if f not in FAMILIES]
    if unknown or not families:
        raise ConfigError(f"unknown families {unknown}: choose from {', '.join(FAMILIES)}")
    try:
        lengths = [int(n) for n in args.lengths.split(",") if n.strip()]
    except ValueError as exc:
        raise ConfigError(f"--lengths {args.lengths!r}: give sizes in characters, e.g. 16000,120000") from exc
    if not lengths or min(lengths) < 1000:
        raise ConfigError("--lengths: every size must be at least 1000 characters")
    return make_tasks(families, parse_seeds(args.seeds), lengths)


def cmd_eval(args: argparse.Namespace) -> int:
    from rlm_local.eval.report import write_report

    if args.report_only:
        print(write_report(args.out))
        return 0
    from rlm_local.engines.engine_log import log_engines_to_file
    from rlm_local.eval.runner import EvalRunner, System
    from rlm_local.models import check_model
    from rlm_local.rlm import RLM

    if args.concurrency < 1:
        raise ConfigError("--concurrency must be at least 1")
    systems = [System.parse(s) for s in args.systems]
    tasks = build_tasks(args)
    root = EngineConfig(model=args.model, max_model_len=args.max_model_len)
    if args.base_url:
        root.backend, root.base_url = "openai", args.base_url
    else:
        check_model(root.model)  # an unknown model is an error before the engine spends a minute starting
    config = RLMConfig(root=root, sandbox=args.sandbox)
    if not args.verbose:
        log_engines_to_file(config, args.out / "engine.log")
    if args.max_iterations:
        config.budgets.max_iterations = args.max_iterations

    async def go() -> None:
        async with RLM(config) as rlm:
            await EvalRunner(rlm, args.out, concurrency=args.concurrency).run(tasks, systems)

    asyncio.run(go())
    print(write_report(args.out))
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="rlm-local")
    add_parser(parser.add_subparsers(dest="command", required=True))
    sys.exit(cmd_eval(parser.parse_args()))
