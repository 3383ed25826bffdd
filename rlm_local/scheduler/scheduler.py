"""The scheduler between RLM runs and engines, behind the same `Engine` interface the run loop already uses.

Why an `Engine`: the run loop keeps calling `root_engine.generate(...)` and `sub_engine.generate(...)`; handing it
`scheduler.root_engine` and `scheduler.sub_engine` adds priority classes, fairness across runs, admission control,
routing among replicas, cancellation and metrics without changing a line of it. Batching stays vLLM's job: the
scheduler only decides *when* a request reaches an engine and with which priority.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, Literal

from rlm_local.engines.base import Engine, Generation, GenerationRequest
from rlm_local.errors import ConfigError
from rlm_local.scheduler.admission import LimitOverrides, derive_limits, estimate_prompt_tokens
from rlm_local.scheduler.metrics import Metrics, MetricsServer, MetricsSnapshot
from rlm_local.scheduler.priority import priority_of
from rlm_local.scheduler.router import Router
from rlm_local.scheduler.slot import EngineSlot

log = logging.getLogger(__name__)

Pool = Literal["root", "sub"]


class Scheduler(Engine):
    """Routes each request to a replica of its pool (root or sub model) and admits it in priority/fair order.

    `generate` picks the pool by `request.kind`; `root_engine` / `sub_engine` are handles bound to one pool (what
    the run loop gets). Engines listed in both pools (one model serving both roles) get one queue and one set of
    limits. `close()` closes the engines only when the scheduler owns them.
    """

    name = "scheduler"

    def __init__(
        self,
        root: Sequence[Engine],
        sub: Sequence[Engine] | None = None,
        *,
        limits: LimitOverrides | dict[str, LimitOverrides] | None = None,
        metrics: Metrics | None = None,
        owns_engines: bool = False,
    ) -> None:
        """`limits`: one override for every engine, or per engine name (names as in `slots`)."""
        if not root:
            raise ConfigError("the scheduler needs at least one engine for root turns")
        self.metrics = metrics or Metrics()
        self.router = Router()
        self.owns_engines = owns_engines
        self.metrics_server: MetricsServer | None = None  # closed with the scheduler (set by build_engines)
        self._slots: dict[int, EngineSlot] = {}
        names: set[str] = set()
        for engine in [*root, *(sub or ())]:
            if id(engine) in self._slots:
                continue
            name = _unique(getattr(engine, "name", "") or "engine", names)
            override = limits.get(name) if isinstance(limits, dict) else limits
            self._slots[id(engine)] = EngineSlot(engine, name, derive_limits(engine, override), self.metrics)
        self.metrics.slots = list(self._slots.values())
        self.pools: dict[Pool, list[EngineSlot]] = {
            "root": [self._slots[id(e)] for e in root],
            "sub": [self._slots[id(e)] for e in (sub or root)],
        }
        self.root_engine = PoolHandle(self, "root")
        self.sub_engine = PoolHandle(self, "sub")
        first = self.pools["root"][0].engine
        self.model, self.source = first.model, first.source
        self.max_model_len = first.max_model_len
        self.max_num_seqs = sum(s.limits.max_in_flight for s in self.slots)

    # ---- Engine --------------------------------------------------------------------------------------------------
    async def generate(self, request: GenerationRequest) -> Generation:
        return await self.submit("root" if request.kind == "root" else "sub", request)

    def count_tokens(self, messages: list[dict[str, str]]) -> int:
        return self.pools["root"][0].engine.count_tokens(messages)

    async def abort_run(self, run_id: str) -> int:
        """Drop the run's queued requests and abort its running ones on every engine; returns how many."""
        counts = await asyncio.gather(*(slot.abort_run(run_id) for slot in self.slots))
        self.router.forget(run_id)
        return sum(counts)

    def in_flight(self) -> int:
        return sum(slot.in_flight for slot in self.slots)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "pools": {pool: [s.name for s in slots] for pool, slots in self.pools.items()},
            "engines": [describe_slot(s) for s in self.slots],
            "in_flight": self.in_flight(),
            "queued": self.queued(),
        }

    async def close(self) -> None:
        if self.metrics_server is not None:
            self.metrics_server.close()
            self.metrics_server = None
        if not self.owns_engines:
            return
        for slot in reversed(self.slots):
            try:
                await slot.engine.close()
            except Exception as exc:  # the other engines still close
                log.warning("closing engine %s failed: %s", slot.name, exc)

    # ---- scheduling ----------------------------------------------------------------------------------------------
    async def submit(self, pool: Pool, request: GenerationRequest) -> Generation:
        """Route to a replica of `pool`, wait for admission there (backpressure), run, account."""
        priority = priority_of(request.kind, request.depth)
        slots = self.pools[pool]
        if request.kind == "root":
            slot = self.router.pick_root(request.run_id, request.messages, slots)
        else:
            slot = self.router.pick_sub(slots)
        return await slot.submit(request, priority, estimate_prompt_tokens(request.messages))

    @property
    def slots(self) -> list[EngineSlot]:
        return list(self._slots.values())

    def queued(self) -> int:
        return sum(slot.queued for slot in self.slots)

    def requests_of(self, run_id: str) -> int:
        """The run's requests queued here or running in an engine."""
        return sum(slot.requests_of(run_id) for slot in self.slots)

    def snapshot(self) -> MetricsSnapshot:
        return self.metrics.snapshot()


class PoolHandle(Engine):
    """The scheduler seen as one engine of a pool: the model, window and tokenizer of that pool's replicas."""

    def __init__(self, scheduler: Scheduler, pool: Pool) -> None:
        self.scheduler = scheduler
        self.pool: Pool = pool
        first = scheduler.pools[pool][0].engine
        self.name = f"{pool}-pool"
        self.model, self.source = first.model, first.source
        self.max_model_len = min(s.engine.max_model_len or 0 for s in scheduler.pools[pool]) or first.max_model_len
        self.max_num_seqs = sum(s.limits.max_in_flight for s in scheduler.pools[pool])

    async def generate(self, request: GenerationRequest) -> Generation:
        return await self.scheduler.submit(self.pool, request)

    def count_tokens(self, messages: list[dict[str, str]]) -> int:
        return self.scheduler.pools[self.pool][0].engine.count_tokens(messages)

    async def abort_run(self, run_id: str) -> int:
        return await self.scheduler.abort_run(run_id)

    def in_flight(self) -> int:
        return sum(slot.in_flight for slot in self.scheduler.pools[self.pool])

    def requests_of(self, run_id: str) -> int:
        return self.scheduler.requests_of(run_id)

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "pool": self.pool,
            "replicas": [describe_slot(s) for s in self.scheduler.pools[self.pool]],
        }

    async def close(self) -> None:
        """Nothing: the scheduler owns (and closes) the engines, shared by both pools."""


def describe_slot(slot: EngineSlot) -> dict[str, Any]:
    return {
        "name": slot.name,
        "model": slot.engine.model,
        "in_flight": slot.in_flight,
        "queued": slot.queued,
        "max_in_flight": slot.limits.max_in_flight,
        "reserved_for_roots": slot.limits.reserved_for_roots,
        "max_prompt_tokens": slot.limits.max_prompt_tokens,
        "peak_in_flight": slot.peak_in_flight,
    }


def _unique(name: str, taken: set[str]) -> str:
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = f"{name}#{n}"
    taken.add(candidate)
    return candidate
