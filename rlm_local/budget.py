"""Budgets of a run, kept on the host and shared by every sub-RLM of the run: model code cannot reach them."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

from rlm_local.config import Budgets

StopReason = Literal["final", "max_iterations", "max_subcalls", "max_tokens", "deadline", "error", "cancelled"]


class BudgetExceeded(Exception):
    """A budget ran out; `reason` is the run's stop reason."""

    def __init__(self, reason: StopReason, detail: str) -> None:
        super().__init__(detail)
        self.reason: StopReason = reason
        self.detail = detail


@dataclass
class RunBudget:
    limits: Budgets
    started: float = field(default_factory=time.monotonic)
    subcalls: int = 0
    tokens: int = 0
    exceeded: BudgetExceeded | None = None  # the first budget that ran out, if any

    def remaining_s(self) -> float:
        return self.limits.deadline_s - (time.monotonic() - self.started)

    def check(self, *, allow: StopReason | None = None) -> None:
        """Raise if the run must stop before its next model call. `allow="max_subcalls"` lets a sub-call that
        was already granted, or the final answer after the sub-call budget ran out, still go to the model."""
        if self.exceeded is not None and self.exceeded.reason != allow:
            raise self.exceeded
        if self.remaining_s() <= 0:
            self._stop("deadline", f"the {self.limits.deadline_s:g}s deadline passed")
        if self.tokens >= self.limits.max_total_tokens:
            self._stop("max_tokens", f"{self.tokens:,} tokens used of a budget of {self.limits.max_total_tokens:,}")

    def take_subcalls(self, wanted: int) -> int:
        """Reserve up to `wanted` sub-calls; returns how many are granted (the rest must not run)."""
        granted = max(0, min(wanted, self.limits.max_subcalls - self.subcalls))
        self.subcalls += granted
        if granted < wanted:
            self._stop("max_subcalls", f"the sub-call budget of {self.limits.max_subcalls:,} was used up", raise_=False)
        return granted

    def charge(self, tokens: int) -> None:
        self.tokens += tokens

    def fail(self, detail: str) -> None:
        """The run cannot go on (its engine failed): every later check stops it, with `detail` as the reason."""
        self._stop("error", detail, raise_=False)

    @property
    def failed(self) -> bool:
        return self.exceeded is not None and self.exceeded.reason == "error"

    def _stop(self, reason: StopReason, detail: str, *, raise_: bool = True) -> None:
        if self.exceeded is None:
            self.exceeded = BudgetExceeded(reason, detail)
        if raise_:
            raise self.exceeded
