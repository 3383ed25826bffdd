"""K-sample voting (after SRLM): K root trajectories of one query run at once on the shared engine, and the answer
most of them reach wins.

On a self-hosted engine the extra trajectories cost engine time, not money, and they batch: every sample shares the
same prompt prefix (system prompt, examples, query), so the prefix cache serves it once. Sample 0 decodes greedily,
the others at a higher temperature, so the vote sees different attempts rather than K copies of one.

The winner is then checked against the evidence its trajectories printed (SRLM's self-verification, the paper's
"double-check"): it must be written there, and one sub-call must agree the printed text supports it. A majority that
fails the check gives way to the next answer that passes; when none passes, the vote stands.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

SAMPLE_TEMPERATURE = 0.7
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_PUNCT = re.compile(r"[^\w\s-]")
CHECKED_CANDIDATES = 3  # the most voted answers that are checked, best first
EVIDENCE_CHARS = 3000

VERIFY_PROMPT = """What a program printed while searching some data:
{evidence}

Question: {query}
Proposed answer: {answer}
Does the printed text support this answer to the question? Reply yes or no."""


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


@dataclass(frozen=True)
class Check:
    answer: str
    votes: int
    verdict: str  # "supported", "not written in its evidence" or "not supported"


def written_in(answer: str, evidence: str) -> bool:
    """The answer (its number, or its words in order) appears in what the trajectory printed."""
    key = answer_key(answer)
    if not key:
        return False
    if _NUMBER.fullmatch(key):
        return key in _NUMBER.findall(evidence)
    return f" {key} " in f" {answer_key(evidence)} "


async def verified_vote(
    query: str,
    answers: Sequence[str | None],
    evidence: Sequence[str],
    ask: Callable[[str], Awaitable[str]],
) -> tuple[str | None, int, list[Check]]:
    """The most voted answer that its own trajectories' printed output supports; the plain majority if none is."""
    majority, agreed = vote(answers)
    keyed = [(answer_key(a), a, e) for a, e in zip(answers, evidence, strict=True) if a is not None and a.strip()]
    counts = Counter(key for key, _, _ in keyed)
    order = list(dict.fromkeys(key for key, _, _ in keyed))  # first appearance: ties go to the earliest sample
    ranked = sorted(order, key=lambda key: -counts[key])[:CHECKED_CANDIDATES]
    checks: list[Check] = []
    for key in ranked:
        answer = next(a for k, a, _ in keyed if k == key)
        printed = "\n".join(e for k, _, e in keyed if k == key)[-EVIDENCE_CHARS:]
        if not written_in(answer, printed):
            checks.append(Check(answer, counts[key], "not written in its evidence"))
            continue
        reply = await ask(VERIFY_PROMPT.format(evidence=printed, query=query, answer=answer))
        if reply.strip().lower().startswith("yes"):
            checks.append(Check(answer, counts[key], "supported"))
            return answer, counts[key], checks
        checks.append(Check(answer, counts[key], "not supported"))
    return majority, agreed, checks
