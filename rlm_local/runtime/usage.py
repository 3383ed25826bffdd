"""Token and call accounting of a run tree, and the result a run returns."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from rlm_local.budget import StopReason
from rlm_local.engines.base import Generation, RequestKind


@dataclass
class Usage:
    root_calls: int = 0
    root_prompt_tokens: int = 0
    root_cached_tokens: int = 0
    root_completion_tokens: int = 0
    sub_calls: int = 0
    sub_prompt_tokens: int = 0
    sub_cached_tokens: int = 0
    sub_completion_tokens: int = 0
    sub_rlm_runs: int = 0

    def add(self, kind: RequestKind, generation: Generation) -> None:
        if kind == "root":
            self.root_calls += 1
            self.root_prompt_tokens += generation.prompt_tokens
            self.root_cached_tokens += generation.cached_tokens
            self.root_completion_tokens += generation.completion_tokens
        else:
            self.sub_calls += 1
            self.sub_prompt_tokens += generation.prompt_tokens
            self.sub_cached_tokens += generation.cached_tokens
            self.sub_completion_tokens += generation.completion_tokens

    @property
    def prompt_tokens(self) -> int:
        return self.root_prompt_tokens + self.sub_prompt_tokens

    @property
    def cached_tokens(self) -> int:
        return self.root_cached_tokens + self.sub_cached_tokens

    @property
    def completion_tokens(self) -> int:
        return self.root_completion_tokens + self.sub_completion_tokens

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def cache_hit_rate(self) -> float:
        """Share of all prompt tokens served from the prefix cache."""
        return self.cached_tokens / self.prompt_tokens if self.prompt_tokens else 0.0

    def to_dict(self) -> dict[str, Any]:
        totals = {k: getattr(self, k) for k in ("prompt_tokens", "cached_tokens", "completion_tokens", "total_tokens")}
        return {**asdict(self), **totals, "cache_hit_rate": round(self.cache_hit_rate, 4)}


@dataclass
class RLMResult:
    """What a run returns: the answer (None when there is none), why it stopped, and its full record."""

    answer: str | None
    stop_reason: StopReason
    stop_detail: str
    run_id: str
    turns: int
    elapsed_s: float
    usage: Usage
    faults: list[str] = field(default_factory=list)
    trajectory: list[dict[str, Any]] = field(default_factory=list)
    unreadable: list[dict[str, str]] = field(default_factory=list)  # context files that could not be read, and why

    @property
    def ok(self) -> bool:
        return self.answer is not None and self.stop_reason in ("final", "max_iterations", "max_subcalls")

    def summary(self) -> dict[str, Any]:
        return {
            "answer": self.answer,
            "stop_reason": self.stop_reason,
            "stop_detail": self.stop_detail,
            "run_id": self.run_id,
            "turns": self.turns,
            "elapsed_s": round(self.elapsed_s, 3),
            "usage": self.usage.to_dict(),
            "faults": self.faults,
            "unreadable": self.unreadable,
        }
