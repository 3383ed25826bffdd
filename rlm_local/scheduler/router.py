"""Choosing a replica: root turns stick to the replica that served the run, sub-calls go to the least loaded.

Why sticky roots: each root turn extends the previous turn's prompt, and only the replica that computed that prefix
has it in its prefix cache. A run's first root turn goes to the replica that already served the same opening
messages (the same query over the same context, e.g. a rerun), else to the least loaded. Sub-calls share little
prefix with each other, so load decides.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Sequence

from rlm_local.scheduler.slot import EngineSlot

MAX_REMEMBERED = 10_000  # runs and prefixes remembered (least recently used forgotten first)


def prefix_key(messages: list[dict[str, str]], count: int = 2) -> str:
    """A hash of the first `count` messages (system prompt and first user message: the run's opening)."""
    head = json.dumps(messages[:count], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(head.encode()).hexdigest()[:32]


def least_loaded(slots: Sequence[EngineSlot]) -> EngineSlot:
    """Lowest (running + queued) per admission slot; ties go to the fewest running, then the first listed."""
    return min(slots, key=lambda s: (s.load(), s.in_flight))


class Router:
    """Remembers where each run's root turns and each opening prefix went."""

    def __init__(self, max_remembered: int = MAX_REMEMBERED) -> None:
        self._runs: OrderedDict[str, str] = OrderedDict()  # run_id -> slot name
        self._prefixes: OrderedDict[str, str] = OrderedDict()  # prefix key -> slot name
        self._max = max_remembered

    def pick_root(self, run_id: str, messages: list[dict[str, str]], slots: Sequence[EngineSlot]) -> EngineSlot:
        if len(slots) == 1:
            return slots[0]
        by_name = {s.name: s for s in slots}
        chosen = by_name.get(self._runs.get(run_id, "")) if run_id else None
        key = prefix_key(messages)
        if chosen is None:
            chosen = by_name.get(self._prefixes.get(key, ""))
            if chosen is not None and chosen.load() >= 2 * least_loaded(slots).load() + 1:
                chosen = None  # a warm prefix is not worth a replica twice as busy
        if chosen is None:
            chosen = least_loaded(slots)
        if run_id:
            self._remember(self._runs, run_id, chosen.name)
        self._remember(self._prefixes, key, chosen.name)
        return chosen

    def pick_sub(self, slots: Sequence[EngineSlot]) -> EngineSlot:
        return slots[0] if len(slots) == 1 else least_loaded(slots)

    def root_replica(self, run_id: str) -> str | None:
        return self._runs.get(run_id)

    def forget(self, run_id: str) -> None:
        self._runs.pop(run_id, None)

    def _remember(self, table: OrderedDict[str, str], key: str, name: str) -> None:
        table[key] = name
        table.move_to_end(key)
        while len(table) > self._max:
            table.popitem(last=False)
