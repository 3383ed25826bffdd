"""The engine interface: what the run loop needs from a model server, in-process or remote.

Requests carry chat messages; the engine applies the model's chat template itself (in-process engines turn it into
token ids so that vLLM's prefix cache sees exactly the same tokens turn after turn). Every request names its run
and a priority so that a scheduler in front of engines can order, cancel and account for them.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, Literal

RequestKind = Literal["root", "sub"]


@dataclass
class SamplingOptions:
    max_tokens: int = 1024
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] | None = None
    top_logprobs: int = 0  # > 0: the first generated token's most likely alternatives come back (for scoring)


@dataclass
class GenerationRequest:
    messages: list[dict[str, str]]
    options: SamplingOptions = field(default_factory=SamplingOptions)
    kind: RequestKind = "sub"
    run_id: str = ""
    depth: int = 0
    priority: int = 0  # lower runs sooner, as in vLLM's priority scheduling; the scheduler sets it
    cache_salt: str | None = None  # prompts with different salts share no prefix-cache blocks (one per tenant)


@dataclass
class Generation:
    text: str
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str | None = None
    latency_s: float = 0.0
    queue_s: float = 0.0  # time waiting for admission before the engine saw the request
    first_token_s: float | None = None
    engine: str = ""
    first_token_logprobs: dict[str, float] = field(default_factory=dict)  # token text -> log-probability


class Engine(abc.ABC):
    """A served model. Implementations must allow many concurrent `generate` calls: that is how sub-calls batch."""

    name: str = "engine"
    model: str = ""
    source: str = ""  # the folder or hub id the weights came from, when known (a served name may not say the size)
    max_model_len: int = 0
    max_num_seqs: int = 0

    @abc.abstractmethod
    async def generate(self, request: GenerationRequest) -> Generation:
        """One completion; raises `rlm_local.errors.EngineError` when the engine fails."""

    @abc.abstractmethod
    def count_tokens(self, messages: list[dict[str, str]]) -> int:
        """Prompt length in tokens of these messages under the chat template (an estimate for remote engines)."""

    async def abort_run(self, run_id: str) -> int:
        """Abort every queued and running request of a run; returns how many were aborted."""
        return 0

    def in_flight(self) -> int:
        """Requests the engine is working on now."""
        return 0

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "model": self.model, "max_model_len": self.max_model_len}

    async def close(self) -> None:
        """Release the model and its memory."""
