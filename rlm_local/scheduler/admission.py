"""Admission limits per engine, derived from its capacity (max_num_seqs, KV cache).

Why bound what an engine holds: requests beyond what it can run at once only wait in vLLM's queue, where our
fairness across runs cannot reach them and an aborted run leaves work behind. Holding them in our queue instead makes
callers feel backpressure (their `generate` awaits) and keeps a few slots free for root turns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rlm_local.engines.base import Engine

DEFAULT_MAX_NUM_SEQS = 32  # an engine that does not say how many sequences it batches (e.g. a remote one)


@dataclass(frozen=True)
class AdmissionLimits:
    """What one engine may hold at once.

    `max_in_flight` bounds all requests; sub-calls may use only `max_in_flight - reserved_for_roots` of them, so a root
    turn that arrives while sub-calls saturate the engine starts at once instead of waiting for a sub-call to end.
    `max_prompt_tokens` bounds the prompt tokens in flight (one request is always admitted into an idle engine, so an
    oversized prompt cannot wait forever).
    """

    max_in_flight: int
    max_prompt_tokens: int
    reserved_for_roots: int = 0

    def __post_init__(self) -> None:
        if self.max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        if not 0 <= self.reserved_for_roots < self.max_in_flight:
            raise ValueError("reserved_for_roots must be at least 0 and less than max_in_flight")

    @property
    def max_sub_in_flight(self) -> int:
        return self.max_in_flight - self.reserved_for_roots


@dataclass(frozen=True)
class LimitOverrides:
    """Deployment settings; None derives the limit from the engine."""

    max_in_flight: int | None = None
    max_prompt_tokens: int | None = None
    reserved_for_roots: int | None = None
    kv_fraction: float = 1.0  # prompt tokens in flight, as a share of the KV cache's token capacity


def kv_cache_tokens(engine: Engine) -> int | None:
    """Tokens the engine's KV cache holds, when it says (`engine.kv_cache_tokens`, or vLLM's cache config)."""
    declared = getattr(engine, "kv_cache_tokens", None)
    if isinstance(declared, int) and declared > 0:
        return declared
    llm: Any = getattr(engine, "_llm", None)  # VLLMEngine's AsyncLLM; the frontend's config has the block count
    cache = getattr(getattr(llm, "vllm_config", None), "cache_config", None)
    blocks, block_size = getattr(cache, "num_gpu_blocks", None), getattr(cache, "block_size", None)
    if isinstance(blocks, int) and isinstance(block_size, int) and blocks > 0:
        return blocks * block_size
    return None


def derive_limits(engine: Engine, overrides: LimitOverrides | None = None) -> AdmissionLimits:
    """max_in_flight = max_num_seqs (what vLLM batches at once); prompt tokens = KV capacity x kv_fraction (else
    max_num_seqs full windows, i.e. no token bound); roots keep 1 slot in 16 (at least 1 when there are 2+ slots)."""
    o = overrides or LimitOverrides()
    seqs = o.max_in_flight or engine.max_num_seqs or DEFAULT_MAX_NUM_SEQS
    kv = kv_cache_tokens(engine)
    if o.max_prompt_tokens:
        tokens = o.max_prompt_tokens
    elif kv:
        tokens = max(1, int(kv * o.kv_fraction))
    else:
        tokens = seqs * max(engine.max_model_len or 32768, 1)
    reserved = o.reserved_for_roots if o.reserved_for_roots is not None else (max(1, seqs // 16) if seqs > 1 else 0)
    return AdmissionLimits(max_in_flight=seqs, max_prompt_tokens=tokens, reserved_for_roots=min(reserved, seqs - 1))


def estimate_prompt_tokens(messages: list[dict[str, str]]) -> int:
    """Cheap admission estimate (chars/4 plus template overhead): admission needs no exact count, and tokenizing
    every prompt twice would cost the event loop time on long root prompts."""
    return sum(len(m.get("content") or "") for m in messages) // 4 + 8 * len(messages)
