"""Development seeds and report seeds are disjoint, so a report is never made on the tasks a change was tuned on."""

from __future__ import annotations

from rlm_local.errors import ConfigError

REPORT_SEED_START = 1000  # seeds 0..999 are for development, 1000 and above for reports


def parse_seeds(text: str) -> list[int]:
    """`dev:5` (the first 5 development seeds), `report:5`, or explicit seeds `3,4,1007`."""
    kind, sep, count = text.partition(":")
    if sep and kind in ("dev", "report"):
        if not count.isdigit() or int(count) < 1:
            raise ConfigError(f"seeds {text!r}: the count after '{kind}:' must be a positive number")
        start = 0 if kind == "dev" else REPORT_SEED_START
        return list(range(start, start + int(count)))
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        seeds = []
    if not seeds or any(s < 0 for s in seeds):
        raise ConfigError(f"seeds {text!r}: use dev:N, report:N or a comma-separated list of seeds >= 0")
    return seeds
