"""Token counts for an engine that is not in this process: the model's own tokenizer when it is on disk, else an
estimate (the remote engine uses these to fit prompts into the window before sending them)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rlm_local.errors import PromptTooLong

log = logging.getLogger(__name__)

CHARS_PER_TOKEN = 4


def estimate_tokens(messages: list[dict[str, str]]) -> int:
    """chars/4 plus 4 tokens of template per message (used without a local tokenizer)."""
    return sum(len(m.get("content") or "") // CHARS_PER_TOKEN + 4 for m in messages) + 2


def most_tokens(messages: list[dict[str, str]]) -> int:
    """An upper bound no tokenizer exceeds (a token covers at least one UTF-8 byte; 16 tokens of template per
    message): below a window it spares an exact count, which renders and tokenizes the whole conversation."""
    return sum(len((m.get("content") or "").encode()) + 16 for m in messages) + 16


def load_tokenizer(spec: str | None) -> Any | None:
    """A Hugging Face tokenizer from a local folder or a prepared catalog model; None (estimates) otherwise."""
    path = Path(spec).expanduser() if spec else None
    if spec and path and not path.is_dir():
        from rlm_local.models import resolve_model

        with contextlib.suppress(Exception):
            path = Path(resolve_model(spec, prepare=False))
    if not (path and path.is_dir()):
        return None  # nothing given, or a Hugging Face id: loading it would need the hub
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(path))
    except Exception as exc:
        log.warning("no tokenizer from %s (%s); token counts are estimates", path, exc)
        return None


def reply_room(
    messages: list[dict[str, str]],
    max_tokens: int,
    window: int,
    count: Callable[[list[dict[str, str]]], int],
    model: str,
) -> int:
    """A reply's `max_tokens` within the room the prompt leaves in `window` (the prompt counted only where it could
    take that room), or PromptTooLong when it leaves none."""
    if not window or most_tokens(messages) + max_tokens <= window:
        return max_tokens
    tokens = count(messages)
    if tokens >= window:
        raise PromptTooLong(tokens, window, model)
    return min(max_tokens, window - tokens)
