"""Per-class queues with round-robin across runs inside a class.

Why: strict order between classes lets a root turn overtake any number of queued sub-calls, and rotating between runs
inside a class keeps one run's 1,000 sub-calls from starving another run's sub-calls.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class FairQueue(Generic[T]):
    """Lowest class first; within a class, one item per run in turn (a run moves to the back after each pop)."""

    def __init__(self) -> None:
        self._classes: dict[int, OrderedDict[str, deque[T]]] = {}
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def push(self, priority: int, run_id: str, item: T) -> None:
        runs = self._classes.setdefault(priority, OrderedDict())
        runs.setdefault(run_id, deque()).append(item)
        self._size += 1

    def peek(self) -> tuple[int, T] | None:
        """The next item and its class without taking it (admission decides whether it fits first)."""
        if not self._size:
            return None
        priority = min(self._classes)
        runs = self._classes[priority]
        return priority, next(iter(runs.values()))[0]

    def pop(self) -> T:
        if not self._size:
            raise IndexError("pop from an empty FairQueue")
        priority = min(self._classes)
        runs = self._classes[priority]
        run_id, items = next(iter(runs.items()))
        item = items.popleft()
        if items:
            runs.move_to_end(run_id)  # its next item waits until every other run in the class had a turn
        else:
            del runs[run_id]
        if not runs:
            del self._classes[priority]
        self._size -= 1
        return item

    def remove(self, priority: int, run_id: str, item: T) -> bool:
        """Drop one item (its caller went away); False when it was not queued."""
        runs = self._classes.get(priority)
        items = runs.get(run_id) if runs else None
        if items is None:
            return False
        try:
            items.remove(item)
        except ValueError:
            return False
        self._size -= 1
        if not items:
            del runs[run_id]  # type: ignore[index]
            if not runs:
                del self._classes[priority]
        return True

    def drop_run(self, run_id: str) -> list[T]:
        """Take every queued item of a run, all classes."""
        dropped: list[T] = []
        for priority in list(self._classes):
            runs = self._classes[priority]
            items = runs.pop(run_id, None)
            if items:
                dropped.extend(items)
            if not runs:
                del self._classes[priority]
        self._size -= len(dropped)
        return dropped

    def count(self, run_id: str | None = None, priority: int | None = None) -> int:
        total = 0
        for p, runs in self._classes.items():
            if priority is not None and p != priority:
                continue
            total += sum(len(items) for r, items in runs.items() if run_id is None or r == run_id)
        return total

    def __iter__(self) -> Iterator[T]:
        for priority in sorted(self._classes):
            for items in self._classes[priority].values():
                yield from items
