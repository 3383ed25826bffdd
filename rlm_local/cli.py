"""`rlm-local`: run an RLM query, prepare models, manage the sandbox image, show engines."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from rlm_local.config import Budgets, EngineConfig, RLMConfig
from rlm_local.errors import ConfigError, RLMError
from rlm_local.prompts import PROFILES

EXIT_ERROR = 2


def add_config_options(parser: argparse.ArgumentParser) -> None:
    """Engine, sandbox and budget flags, shared by `run` and `batch`."""
    parser.add_argument("--model", default=None, help="root model: catalog alias, local folder or Hugging Face id")
    parser.add_argument("--sub-model", default=None, help="sub-call model (default: the root model)")
    parser.add_argument("--base-url", default=None, help="use a remote OpenAI-compatible server (vllm serve, SGLang)")
    parser.add_argument("--config", type=Path, default=None, help="TOML file with an [rlm] table of RLMConfig fields")
    parser.add_argument("--deployment", type=Path, default=None, help="deployment TOML: engines, replicas, limits")
    parser.add_argument("--sandbox", choices=["auto", "docker", "process"], default=None)
    parser.add_argument("--profile", choices=["auto", *PROFILES], default=None)
    parser.add_argument(
        "--mode",
        choices=["code", "structured", "auto"],
        default=None,
        help="auto (default): the model writes the code, and the structured program runs if the code found no "
        "answer; code: the model's code only; structured: a planned map/filter/reduce program",
    )
    parser.add_argument("--no-guards", action="store_true", help="turn the loop guards off (for comparisons)")
    parser.add_argument("--samples", type=int, default=None, help="K trajectories at once, answer by majority vote")
    parser.add_argument("--max-iterations", type=int, default=None)
    parser.add_argument("--max-subcalls", type=int, default=None)
    parser.add_argument("--max-tokens", type=int, default=None, help="token budget of the whole run")
    parser.add_argument("--deadline", type=float, default=None, help="wall-clock limit in seconds")
    parser.add_argument("--max-depth", type=int, default=None, help="1: sub-calls are plain LM calls; 2+: sub-RLMs")
    parser.add_argument("--max-model-len", type=int, default=None)
    parser.add_argument("--cell-timeout", type=float, default=None)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rlm-local", description="Recursive Language Models on your own hardware.")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="engine logs on stderr (else in ~/.cache/rlm-local/logs/)"
    )
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="answer a query over a context of any size")
    run.add_argument("--context", required=True, help="a file, a folder of files, or - for standard input")
    run.add_argument("--query", required=True, help="the question")
    add_config_options(run)
    run.add_argument("--trajectory", type=Path, default=None, help="JSONL file of every turn and sub-call")
    run.add_argument(
        "--view", action="store_true", help="write the run as an HTML page (next to --trajectory, else under runs/)"
    )
    run.add_argument("--json", action="store_true", help="print the result as JSON")
    run.add_argument("--quiet", action="store_true", help="no progress display")

    batch = commands.add_parser("batch", help="run many jobs (a JSONL file) on warm engines; a rerun resumes")
    batch.add_argument("jobs", type=Path, help='JSONL: {"id", "query", "context" or "context_path", "options"}')
    batch.add_argument("out", type=Path, help="JSONL of results, one line per finished job (appended)")
    batch.add_argument("--concurrency", type=int, default=4, help="jobs running at once (with --ray: on each worker)")
    batch.add_argument(
        "--ray", metavar="ADDRESS", default=None, help='spread the jobs over a Ray cluster ("auto", host:port, "local")'
    )
    batch.add_argument("--ray-workers", type=int, default=None, help="Ray workers (default: one per alive node)")
    add_config_options(batch)

    from rlm_local.server.command import add_parser as add_serve_parser

    add_serve_parser(commands, add_config_options)

    models = commands.add_parser("models", help="list or prepare the offline catalog models")
    models.add_argument("action", choices=["list", "prepare"], nargs="?", default="list")
    models.add_argument("names", nargs="*", help="aliases to prepare (default: the default model)")

    sandbox = commands.add_parser("sandbox", help="the Docker sandbox image and containers")
    sandbox.add_argument("action", choices=["build", "gc", "status"])
    sandbox.add_argument("--force", action="store_true", help="build: rebuild even if the image exists")
    sandbox.add_argument("--all", action="store_true", help="gc: remove every rlm-local container, not only orphans")

    view = commands.add_parser("view", help="a run's trajectory (JSONL) as one self-contained HTML page")
    view.add_argument("trajectory", type=Path, help="the JSONL file written by `run --trajectory`")
    view.add_argument("-o", "--out", type=Path, default=None, help="the HTML file (default: beside the JSONL)")

    from rlm_local.eval.command import add_parser as add_eval_parser

    add_eval_parser(commands)

    engines = commands.add_parser("engines", help="show configured engines and live figures")
    engines.add_argument("--config", type=Path, default=None, help="deployment TOML file")
    return parser


def config_from_args(args: argparse.Namespace) -> RLMConfig:
    """Defaults, then the TOML file, then command-line flags; invalid values become one clear error."""
    try:
        return _config_from_args(args)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid configuration: {problems}") from exc


def _config_from_args(args: argparse.Namespace) -> RLMConfig:
    data: dict[str, Any] = {}
    if args.config is not None:
        import tomllib

        try:
            data = tomllib.loads(args.config.read_text()).get("rlm", {})
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise RLMError(f"cannot read config {args.config}: {exc}") from exc
    config = RLMConfig.model_validate(data)
    root: EngineConfig = config.root
    if args.model:
        root.model = args.model
    if args.base_url:
        root.backend, root.base_url = "openai", args.base_url
    if args.max_model_len:
        root.max_model_len = args.max_model_len
    if args.sub_model and args.sub_model != root.model:
        config.sub = root.model_copy(update={"model": args.sub_model})
    budget_flags = {
        "max_iterations": args.max_iterations,
        "max_subcalls": args.max_subcalls,
        "max_total_tokens": args.max_tokens,
        "deadline_s": args.deadline,
        "max_depth": args.max_depth,
    }
    config.budgets = Budgets.model_validate(
        {**config.budgets.model_dump(), **{k: v for k, v in budget_flags.items() if v is not None}}
    )
    settings = (
        ("sandbox", args.sandbox),
        ("profile", args.profile),
        ("cell_timeout_s", args.cell_timeout),
        ("deployment", args.deployment),
        ("mode", args.mode),
        ("samples", args.samples),
        ("guards", False if args.no_guards else None),
    )
    for field, value in settings:
        if value is not None:
            setattr(config, field, value)
    if not args.verbose:
        from rlm_local.engines.engine_log import log_engines_to_file

        log_engines_to_file(config)
    return RLMConfig.model_validate(config.model_dump())  # every flag validated, not only the budgets


def check_models(config: RLMConfig) -> None:
    """An unknown model, or a model folder that is not there, is an error before an engine spends a minute starting
    (each engine resolves its model, and prepares a missing catalog model, once, when it starts)."""
    from rlm_local.deployment import deployment_of
    from rlm_local.models import check_model

    deployment = deployment_of(config)
    for spec in deployment.engines:
        if spec.backend == "vllm":
            check_model(deployment.replica_configs(spec)[0].model)


def read_context_arg(value: str) -> Any:
    """A path stays a path (the worker reads the file itself); stdin is spooled to a temporary file."""
    if value != "-":
        return Path(value)
    if sys.stdin.isatty():
        raise RLMError("--context - reads standard input, but nothing is piped in")
    spool = tempfile.NamedTemporaryFile(prefix="rlm-stdin-", suffix=".txt", delete=False)  # noqa: SIM115
    with spool:
        while block := sys.stdin.buffer.read(1 << 20):
            spool.write(block)
    return Path(spool.name)


def cmd_run(args: argparse.Namespace) -> int:
    from rlm_local.context import PreparedContext, prepare_context
    from rlm_local.progress import ProgressView
    from rlm_local.rlm import RLM

    config = config_from_args(args)
    if not args.query.strip():
        raise RLMError("the query is empty")
    context = read_context_arg(args.context)
    if args.view and args.trajectory is None:  # the page is made from the trajectory: keep one under runs/
        args.trajectory = Path("runs") / f"run-{time.strftime('%Y%m%d-%H%M%S')}.jsonl"
        print(f"[trajectory: {args.trajectory}]", file=sys.stderr)
    try:
        # Everything a user can get wrong is checked before the engine spends a minute starting.
        context = prepare_context(context)
        check_models(config)
        with RLM(config) as rlm:
            if args.quiet:
                result = rlm.completion(args.query, context, trajectory_path=args.trajectory)
            else:
                with ProgressView() as view:
                    result = rlm.completion(args.query, context, trajectory_path=args.trajectory, listeners=[view])
    finally:
        if args.context == "-":
            Path(context.file.path if isinstance(context, PreparedContext) else context).unlink(missing_ok=True)
    for file in result.unreadable:
        print(f"[not read: {file['path']}: {file['reason']}]", file=sys.stderr)
    if args.view:
        from rlm_local.viewer import write_view

        print(f"[view: {write_view(args.trajectory)}]", file=sys.stderr)
    if args.json:
        print(json.dumps(result.summary(), indent=2, ensure_ascii=False))
    else:
        print(result.answer if result.answer is not None else "")
        usage = result.usage
        print(
            f"[{result.stop_reason}: {result.stop_detail}; {result.turns} turns, {usage.sub_calls} sub-calls, "
            f"{usage.total_tokens:,} tokens, cache hit {usage.cache_hit_rate:.0%}, {result.elapsed_s:.1f}s]",
            file=sys.stderr,
        )
    return 0 if result.answer is not None else 1


def cmd_models(args: argparse.Namespace) -> int:
    from rlm_local import model_catalog, models

    if args.action == "prepare":
        for name in args.names or [model_catalog.DEFAULT_MODEL]:
            print(model_catalog.prepare_model(name))
        return 0
    for row in models.list_models():
        state = "prepared" if row.prepared else "not prepared (rlm-local models prepare " + row.alias + ")"
        print(f"{row.alias}{' (default)' if row.default else ''}\t{row.title}\t{state}\t{row.path}")
    return 0


def cmd_sandbox(args: argparse.Namespace) -> int:
    from rlm_local import sandbox_image
    from rlm_local.docker_host import docker_available

    if args.action == "build":
        print(sandbox_image.build_image(force=args.force))
    elif args.action == "gc":
        removed = sandbox_image.gc_containers(all=args.all)
        print(f"removed {removed if isinstance(removed, int) else len(removed)} container(s)")
    else:
        print("docker engine: " + ("answering" if docker_available() else "not answering"))
    return 0


def cmd_view(args: argparse.Namespace) -> int:
    from rlm_local.viewer import write_view

    print(write_view(args.trajectory, args.out))
    return 0


def cmd_engines(args: argparse.Namespace) -> int:
    from rlm_local import deployment

    return deployment.engines_command(args.config)


def cmd_eval(args: argparse.Namespace) -> int:
    from rlm_local.eval.command import cmd_eval as run_eval

    return run_eval(args)


def cmd_batch(args: argparse.Namespace) -> int:
    import asyncio
    from functools import partial

    from rlm_local.batch import BatchRunner, load_jobs, run_job, summary
    from rlm_local.rlm import RLM

    if args.concurrency < 1:
        raise ConfigError("--concurrency must be at least 1")
    config = config_from_args(args)
    jobs = load_jobs(args.jobs)  # every line, and the models, checked before the engine spends a minute starting
    check_models(config)
    started = time.monotonic()

    async def here() -> list[dict[str, Any]]:
        async with RLM(config) as rlm:
            return await BatchRunner(partial(run_job, rlm), args.out, concurrency=args.concurrency).run(jobs)

    async def on_ray(workers: Any) -> list[dict[str, Any]]:
        try:
            await workers.start()
            concurrency = args.concurrency * len(workers.actors)
            return await BatchRunner(workers.run, args.out, concurrency=concurrency).run(jobs)
        finally:
            await workers.close()

    if args.ray is None:
        results = asyncio.run(here())
    else:
        from rlm_local.batch_ray import RayWorkers

        results = asyncio.run(on_ray(RayWorkers.connect(config, args.ray, args.ray_workers)))
    print(summary(results, len(jobs), time.monotonic() - started))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from rlm_local.server.command import cmd_serve as serve

    config = config_from_args(args)
    check_models(config)
    return serve(args, config)


COMMANDS = {
    "run": cmd_run,
    "serve": cmd_serve,
    "batch": cmd_batch,
    "models": cmd_models,
    "sandbox": cmd_sandbox,
    "engines": cmd_engines,
    "eval": cmd_eval,
    "view": cmd_view,
}


def _interrupt(signum: int, frame: object) -> None:
    from rlm_local.rlm import STOP_REQUESTED

    STOP_REQUESTED.set()
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    if not args.verbose:
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    # Engine logs (and those of its child processes, which inherit this) go to stderr: stdout is the answer alone.
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    # SIGTERM (kill, a job runner) unwinds like Ctrl-C, so engines and containers are closed: measured, a killed
    # `rlm-local eval` otherwise left its vLLM engine processes running, holding 9 GB of memory each.
    signal.signal(signal.SIGTERM, _interrupt)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not where the shell has it ignored
        signal.signal(signal.SIGINT, _interrupt)
    try:
        return COMMANDS[args.command](args)
    except RLMError as exc:
        print(f"rlm-local: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("rlm-local: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
