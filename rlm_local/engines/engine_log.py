"""Where vLLM's own output goes: a log file instead of the terminal, when the caller asks for one.

Why: vLLM's engine processes share our stderr and write to it for their whole life — start-up chatter, and on a
Ctrl-C (which a terminal sends to every process of the group) the tracebacks of workers stopped mid-step. A user of
`rlm-local run` wants the answer and our own messages; the engine's story belongs in a file they can open.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from rlm_local.config import RLMConfig

KEEP_LOGS = 20


def default_log_dir() -> Path:
    return Path(os.environ.get("RLM_LOCAL_LOG_DIR", Path.home() / ".cache" / "rlm-local" / "logs"))


def new_log_path(kind: str = "engine") -> Path:
    """A fresh file under the log folder; the oldest are removed so that only the last `KEEP_LOGS` stay."""
    folder = default_log_dir()
    folder.mkdir(parents=True, exist_ok=True)
    for old in sorted(folder.glob(f"{kind}-*.log"))[: -(KEEP_LOGS - 1) or None]:
        with contextlib.suppress(OSError):
            old.unlink()
    return folder / f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"


def log_engines_to_file(config: RLMConfig, path: Path | None = None) -> None:
    """In-process engines log to a file (a fresh one under the log folder by default), not to the terminal."""
    for engine in (config.root, config.sub):
        if engine is not None and engine.backend == "vllm" and engine.log_file is None:
            path = path or new_log_path()
            engine.log_file = path


@contextlib.contextmanager
def engine_output_to(path: Path | None) -> Iterator[None]:
    """While engine processes start, point file descriptor 2 at `path` so they inherit it; this process's vLLM
    loggers write there from now on. Our own stderr is the terminal again once the block ends."""
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    # vLLM logs to stdout by default, in this process and in the engine processes it starts: stderr, and so the file.
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    with open(path, "a", buffering=1) as log_file:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(log_file.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            _send_vllm_loggers_to(path)  # vLLM (re)configures its logger on import and while the engine starts


def _send_vllm_loggers_to(path: Path) -> None:
    """vLLM configures its `vllm` logger with a stream handler on import: swap it for a file handler."""
    logger = logging.getLogger("vllm")
    formatter = next((h.formatter for h in logger.handlers if h.formatter), None)
    for handler in list(logger.handlers):
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename) == path.resolve():
            return
        if isinstance(handler, logging.StreamHandler):
            logger.removeHandler(handler)
    file_handler = logging.FileHandler(path)
    file_handler.setFormatter(formatter or logging.Formatter("%(levelname)s %(asctime)s %(name)s: %(message)s"))
    logger.addHandler(file_handler)
    logger.propagate = False


def last_error_lines(path: Path | None, count: int = 3) -> str:
    """The last lines of a log that say what failed, for an error message that points at the cause."""
    if path is None or not path.exists():
        return ""
    lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if "Error" in line or "error" in line]
    return " | ".join((errors or lines)[-count:])[:800]
