"""A remote server's failure, as the SDK or the transport raised it, in the runtime's terms: `PromptTooLong` for a
prompt over the window (the run loop tells the model to send less), else an `EngineError` that names the server and
says what happened in its own words."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import httpx
import openai

from rlm_local.errors import EngineError, PromptTooLong

if TYPE_CHECKING:
    from rlm_local.engines.openai_engine import OpenAIEngine

_WINDOW = re.compile(r"maximum context length is (\d+) tokens")
_PROMPT = re.compile(r"contains (?:at least )?(\d+) input tokens")


def as_engine_error(exc: Exception, engine: OpenAIEngine, messages: list[dict[str, str]]) -> Exception:
    """`exc` as an `EngineError` that names `engine`'s server, or `PromptTooLong` (the prompt counted by the engine
    where the server did not say)."""
    where = f"the server at {engine.base_url}"
    if isinstance(exc, openai.BadRequestError) and (window := _WINDOW.search(server_message(exc))):
        prompt = _PROMPT.search(server_message(exc))
        tokens = int(prompt.group(1)) if prompt else engine.count_tokens(messages)
        return PromptTooLong(tokens, int(window.group(1)), engine.model)
    if isinstance(exc, openai.APITimeoutError | httpx.TimeoutException):
        return EngineError(f"{where} is not answering: no reply within {engine.timeout_s:g} s")
    if isinstance(exc, openai.APIConnectionError | httpx.TransportError):
        cause = exc.__cause__ or exc
        why = f"{type(cause).__name__}: {cause}".rstrip(": ")
        return EngineError(
            f"{where} went away / is not answering: {why} (gave up after {engine.max_retries + 1} attempts)"
        )
    if isinstance(exc, openai.APIStatusError):
        verb = "failed" if exc.status_code >= 500 else "refused the request"
        return EngineError(f"{where} {verb} (HTTP {exc.status_code}): {server_message(exc)}")
    return EngineError(
        f"{where} failed on a request: {server_message(exc) if isinstance(exc, openai.APIError) else exc}"
    )


def server_message(exc: openai.APIError) -> str:
    """The server's own words (its error body's `message`, without the SDK's prefix), on one line, at most 300."""
    text = exc.body.get("message") if isinstance(exc.body, dict) else None
    text = " ".join(str(text or exc.message).split())
    return text if len(text) <= 300 else text[:300] + "..."
