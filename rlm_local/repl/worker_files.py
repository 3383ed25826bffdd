"""Where the REPL worker program lives, in a source checkout or an installed package."""

from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent.parent
# What the sandbox image is built from, in digest order (scripts/build_sandbox_image.sh hashes the same files).
SANDBOX_FILES = ("Dockerfile", "repl_worker.py", "rlm_helpers.py", "seccomp_filter.py")


def worker_script() -> Path:
    """The worker is `sandbox/repl_worker.py`; wheels carry a copy inside the package."""
    for candidate in (_PACKAGE_DIR / "_sandbox" / "repl_worker.py", _PACKAGE_DIR.parent / "sandbox" / "repl_worker.py"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError("the REPL worker sandbox/repl_worker.py is missing from this installation")


def sandbox_dir() -> Path:
    """The folder holding the Dockerfile and the worker."""
    return worker_script().parent
