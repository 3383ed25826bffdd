"""K-sample voting (after SRLM): K root trajectories of one query run at once on the shared engine, and the answer
most of them reach wins.

On a self-hosted engine the extra trajectories cost engine time, not money, and they batch: every sample shares the
same prompt prefix (system prompt, examples, query), so the prefix cache serves it once. Sample 0 decodes greedily,
the others at a higher temperature, so the vote sees different attempts rather than K copies of one.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

SAMPLE_TEMPERATURE = 0.7
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_PUNCT = re.compile(r"[^\w\s-]")


def answer_key(answer: str) -> str:
    """What two answers must share to count as the same vote: short answers with one number vote for the number
    ('12', 'There are 12 messages.'), everything else by its words, ignoring case and punctuation."""
    numbers = _NUMBER.findall(answer)
    if len(numbers) == 1 and len(answer) <= 60:
        return numbers[0]
    return " ".join(_PUNCT.sub(" ", answer.casefold()).split())


def vote(answers: Sequence[str | None]) -> tuple[str | None, int]:
    """The majority answer (ties go to the earliest sample, the greedy one) and how many samples agreed."""
    keyed = [(answer_key(a), a) for a in answers if a is not None and a.strip()]
    if not keyed:
        return None, 0
    counts = Counter(key for key, _ in keyed)
    best = max(counts.values())
    winner = next(key for key, _ in keyed if counts[key] == best)
    return next(a for key, a in keyed if key == winner), best
