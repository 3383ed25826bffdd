"""`rlm-local serve`: start the engines and the sandbox once, then serve runs over HTTP until stopped."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from pathlib import Path

from rlm_local.config import RLMConfig
from rlm_local.errors import ConfigError

# Served model names -> RLM settings; all share the engines, the scheduler and the sandbox.
PROFILES: dict[str, dict[str, object]] = {
    "rlm": {},
    "rlm-code": {"mode": "code"},
    "rlm-structured": {"mode": "structured"},
}
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def add_parser(
    commands: argparse._SubParsersAction, add_config_options: Callable[[argparse.ArgumentParser], None]
) -> None:
    serve = commands.add_parser("serve", help="serve runs over HTTP: OpenAI-compatible chat completions, jobs, files")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--api-keys", type=Path, default=None, help="file of 'TENANT KEY' lines (or RLM_LOCAL_API_KEYS)")
    serve.add_argument("--no-auth", action="store_true", help="one tenant, no keys: only on a loopback host")
    serve.add_argument(
        "--data",
        type=Path,
        default=Path.home() / ".local" / "share" / "rlm-local" / "server",
        help="uploaded documents and job records",
    )
    serve.add_argument("--max-upload-mb", type=float, default=100.0)
    serve.add_argument("--max-running-per-key", type=int, default=4, help="runs of one key at once")
    serve.add_argument("--max-queued-per-key", type=int, default=64, help="more waiting runs of one key: 429")
    add_config_options(serve)


def cmd_serve(args: argparse.Namespace, config: RLMConfig) -> int:
    import uvicorn

    from rlm_local.rlm import RLM
    from rlm_local.server.app import create_app
    from rlm_local.server.auth import ApiKeys, NoAuth
    from rlm_local.server.documents import DocumentStore
    from rlm_local.server.jobs import JobManager, profile_rlms

    if args.no_auth and args.host not in LOOPBACK:
        raise ConfigError("--no-auth serves anyone who can connect: it is allowed on a loopback host only")
    if min(args.max_running_per_key, args.max_queued_per_key + 1, args.port) < 1:
        raise ConfigError("--port, --max-running-per-key and --max-queued-per-key must be positive")
    keys = NoAuth() if args.no_auth else ApiKeys.load(args.api_keys)
    upload_bytes = int(args.max_upload_mb * 1024 * 1024)
    documents = DocumentStore(args.data / "documents", upload_bytes)

    async def serve() -> None:
        async with RLM(config) as rlm:
            jobs = JobManager(
                rlm,
                profile_rlms(rlm, PROFILES),
                max_running=args.max_running_per_key,
                max_queued=args.max_queued_per_key,
                folder=args.data / "jobs",
            )
            app = create_app(jobs, documents, keys, max_request_bytes=upload_bytes + (1 << 20))
            server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, log_level="warning"))
            print(f"[serving on http://{args.host}:{args.port}/v1]", file=sys.stderr, flush=True)
            try:
                await server.serve()
            finally:
                await jobs.shutdown()

    asyncio.run(serve())
    return 0
