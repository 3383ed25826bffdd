"""A scripted LM for fast unit tests of the run loop's edge cases (the end-to-end tests use the real engine)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from rlm_local.engines.base import Engine, Generation, GenerationRequest, SamplingOptions
from rlm_local.errors import PromptTooLong

RootScript = list[str] | Callable[[list[dict[str, str]]], str]


class ScriptedEngine(Engine):
    """Root turns come from a script; sub-calls answer with `sub(prompt)`; token counts are word counts.

    Root requests at temperature > 0 (the loop's re-samples) answer with `sampled(options)`, or by default with the
    last scripted reply (a model that says the same at any temperature); they are recorded in `sampled_options`.
    """

    name = "scripted"

    def __init__(
        self,
        root: RootScript,
        sub: Callable[[str], str] = lambda prompt: f"echo:{prompt[:40]}",
        *,
        max_model_len: int = 32768,
        cached_fraction: float = 0.0,
        delay_s: float = 0.0,
        sampled: Callable[[SamplingOptions], str] | None = None,
    ) -> None:
        self.root = root
        self.sub = sub
        self.model = "scripted"
        self.max_model_len = max_model_len
        self.cached_fraction = cached_fraction
        self.delay_s = delay_s
        self.root_prompts: list[list[dict[str, str]]] = []
        self.sub_prompts: list[str] = []
        self.sampled = sampled
        self.sampled_options: list[SamplingOptions] = []
        self._last_root = ""
        self.concurrent = 0
        self.max_concurrent = 0

    def count_tokens(self, messages: list[dict[str, str]]) -> int:
        return sum(len(m["content"].split()) + 4 for m in messages)

    async def generate(self, request: GenerationRequest) -> Generation:
        tokens = self.count_tokens(request.messages)
        if tokens > self.max_model_len:
            raise PromptTooLong(tokens, self.max_model_len, self.model)
        self.concurrent += 1
        self.max_concurrent = max(self.max_concurrent, self.concurrent)
        try:
            await asyncio.sleep(self.delay_s)
            if request.kind == "root" and request.options.temperature > 0:
                self.sampled_options.append(request.options)
                text = self.sampled(request.options) if self.sampled else self._last_root
            elif request.kind == "root":
                self.root_prompts.append([dict(m) for m in request.messages])
                text = self._last_root = self._next_root(request.messages)
            else:
                prompt = request.messages[-1]["content"]
                self.sub_prompts.append(prompt)
                text = self.sub(prompt)
        finally:
            self.concurrent -= 1
        return Generation(
            text=text,
            prompt_tokens=tokens,
            cached_tokens=int(tokens * self.cached_fraction),
            completion_tokens=len(text.split()),
            engine=self.name,
        )

    def _next_root(self, messages: list[dict[str, str]]) -> str:
        if callable(self.root):
            return self.root(messages)
        if not self.root:
            return "I have nothing more to say."
        return self.root.pop(0)


def repl(code: str) -> str:
    """A root reply holding one code block."""
    return f"Let me look.\n```repl\n{code}\n```"
