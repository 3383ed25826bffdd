"""Cell output as the root model sees it: bounded, keeping head and tail, stating the true length."""

from __future__ import annotations

WORKER_CUT_MARKER = "\n\x00<cut>\x00\n"  # what the worker puts where it dropped the middle of a huge output


def truncate_output(text: str, limit: int, true_chars: int | None = None) -> str:
    """At most ~`limit` characters: 60% head, 40% tail, and a note with the real size."""
    total = max(true_chars or 0, len(text))
    head_part, cut, tail_part = text.partition(WORKER_CUT_MARKER)
    if not cut:
        if len(text) <= limit and total <= len(text):
            return text
        tail_part = head_part
    head_len = int(limit * 0.6)
    tail_len = limit - head_len
    head, tail = head_part[:head_len], tail_part[-tail_len:]
    omitted = total - len(head) - len(tail)
    return f"{head}\n... [{omitted:,} characters omitted; the output had {total:,} characters] ...\n{tail}"
