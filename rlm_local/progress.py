"""A live one-line view of a run for the terminal: turn, sub-calls, tokens, cache hit rate, elapsed."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.text import Text


class ProgressView:
    """Listens to trajectory events and redraws a status line (stderr, so stdout stays the answer)."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.started = time.monotonic()
        self.turn = 0
        self.subcalls = 0
        self.tokens = 0
        self.prompt_tokens = 0
        self.cached_tokens = 0
        self.faults = 0
        self.last = "starting"
        self._live = Live(self._render(), console=self.console, refresh_per_second=4, transient=True)

    def __enter__(self) -> ProgressView:
        self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._live.__exit__(None, None, None)

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event["event"]
        if kind in ("turn", "subcall"):
            self.tokens += event.get("prompt_tokens", 0) + event.get("completion_tokens", 0)
            self.prompt_tokens += event.get("prompt_tokens", 0)
            self.cached_tokens += event.get("cached_tokens", 0)
        if kind == "turn" and event.get("depth", 0) == 0:
            self.turn = event["turn"]
            self.last = f"turn {self.turn}: {len(event.get('code') or [])} code block(s)"
            self.console.print(Text(f"turn {self.turn}", style="bold cyan"), Text(_first_line(event["response"])))
        elif kind == "subcall":
            self.subcalls += 1
        elif kind == "fault":
            self.faults += 1
            self.console.print(Text(f"fault: {event['fault']}", style="yellow"))
        self._live.update(self._render())

    def _render(self) -> Text:
        rate = self.cached_tokens / self.prompt_tokens if self.prompt_tokens else 0.0
        return Text(
            f"turn {self.turn} | sub-calls {self.subcalls} | tokens {self.tokens:,} | "
            f"cache hit {rate:.0%} | {time.monotonic() - self.started:.1f}s | {self.last}",
            style="dim",
        )


def _first_line(text: str, limit: int = 100) -> str:
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return line if len(line) <= limit else line[: limit - 1] + "…"
