"""The base model: the whole context in one prompt, cut to the window, as a user without rlm-local would do.

When the context does not fit, the middle is cut out and the head and tail are kept (the LongBench convention):
that is what a careful user does by hand, and it is the comparison the RLM has to beat.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from rlm_local.engines.base import Engine, GenerationRequest, SamplingOptions
from rlm_local.parsing import strip_think

BASE_PROMPT = """Read the text below, then answer the question that follows it.

{text}

Question: {query}
Answer concisely: give the answer itself, with no explanation."""
CUT_MARK = "\n\n[... the middle of the text was cut to fit the model's window ...]\n\n"
ANSWER_TOKENS = 256


def render_context(context: str | list[str] | dict[str, str]) -> str:
    """The context as one text, the way a user would paste it: documents separated, files under their names."""
    if isinstance(context, str):
        return context
    if isinstance(context, dict):
        return "\n\n".join(f"# {name}\n{text}" for name, text in context.items())
    return "\n\n".join(context)


def context_tokens(engine: Engine, context: str | list[str] | dict[str, str]) -> int:
    """The context's length in the engine's tokens (what the base model would have to read)."""
    return engine.count_tokens([{"role": "user", "content": render_context(context)}])


@dataclass
class BaseResult:
    answer: str | None
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    elapsed_s: float
    kept_chars: int  # of the rendered context, after the cut
    context_chars: int


def fit_to_window(engine: Engine, text: str, query: str, answer_tokens: int = ANSWER_TOKENS) -> str:
    """The prompt with as much of `text` as fits the window (head and tail kept, middle cut)."""

    def prompt(body: str) -> list[dict[str, str]]:
        return [{"role": "user", "content": BASE_PROMPT.format(text=body, query=query)}]

    budget = engine.max_model_len - answer_tokens
    body, keep = text, len(text)
    tokens = engine.count_tokens(prompt(body))
    while tokens > budget and keep > 0:
        keep = int(keep * min(0.97, budget / tokens * 0.98))
        body = text[: keep // 2] + CUT_MARK + text[len(text) - keep // 2 :]
        tokens = engine.count_tokens(prompt(body))
    return prompt(body)[0]["content"]


async def base_completion(
    engine: Engine,
    query: str,
    context: str | list[str] | dict[str, str],
    *,
    run_id: str,
    max_tokens: int = ANSWER_TOKENS,
) -> BaseResult:
    """One call of the root model over the (cut) context; tokenising the long text runs off the event loop."""
    text = render_context(context)
    prompt = await asyncio.to_thread(fit_to_window, engine, text, query, max_tokens)
    request = GenerationRequest(
        messages=[{"role": "user", "content": prompt}],
        options=SamplingOptions(max_tokens=max_tokens, temperature=0.0, seed=0),
        kind="root",
        run_id=run_id,
    )
    started = time.monotonic()
    generation = await engine.generate(request)
    answer = strip_think(generation.text).strip() or None
    kept = len(prompt) - len(BASE_PROMPT.format(text="", query=query))
    return BaseResult(
        answer=answer,
        prompt_tokens=generation.prompt_tokens,
        cached_tokens=generation.cached_tokens,
        completion_tokens=generation.completion_tokens,
        elapsed_s=time.monotonic() - started,
        kept_chars=min(kept, len(text)),
        context_chars=len(text),
    )


def base_record(result: BaseResult) -> dict[str, Any]:
    """The cost fields of an eval record, in the same names as an RLM run's."""
    return {
        "answer": result.answer,
        "stop_reason": "final" if result.answer else "no_answer",
        "turns": 1,
        "sub_calls": 0,
        "prompt_tokens": result.prompt_tokens,
        "cached_tokens": result.cached_tokens,
        "completion_tokens": result.completion_tokens,
        "total_tokens": result.prompt_tokens + result.completion_tokens,
        "kept_fraction": round(result.kept_chars / max(1, result.context_chars), 4),
    }
