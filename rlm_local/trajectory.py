"""The record of a run: events kept in memory for the API and appended to a JSONL file as they happen."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

EventListener = Callable[[dict[str, Any]], None]


class Trajectory:
    """Every event of a run tree (sub-RLMs write into their parent's trajectory, tagged with their depth)."""

    def __init__(self, path: Path | None = None, listeners: list[EventListener] | None = None) -> None:
        self.events: list[dict[str, Any]] = []
        self.listeners = list(listeners or [])
        self._file: IO[str] | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - kept open for the run's life

    def emit(self, event: str, **fields: Any) -> dict[str, Any]:
        record = {"event": event, "time": time.time(), **fields}
        self.events.append(record)
        if self._file is not None:
            self._file.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
            self._file.flush()
        for listener in self.listeners:
            listener(record)
        return record

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
