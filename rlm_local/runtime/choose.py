"""`llm_choose`: how likely a sub-model's reply is each of a few choices, from one token's log-probabilities.

Small sub-models answer yes/no and label questions with a strong bias (a 0.5B model said "no" to 30 of 30 records),
so the text of one greedy reply says little; the probabilities of the first token still rank pieces and records
(measured in docs/eval/README.md). One token costs one prefill and no decoding, and nothing has to be parsed.
"""

from __future__ import annotations

import math

TOP_LOGPROBS = 20  # vLLM's default ceiling (max_logprobs)


def choice_probabilities(logprobs: dict[str, float], choices: list[str], reply: str = "") -> list[float]:
    """One probability per choice, summing to 1: the probability of every listed token that starts a choice ("Y",
    "yes" and " Yes" for "yes"; "bill" for "billing") added up, a token that starts several choices shared among
    them. A choice no listed token starts gets a share below the least likely token. Without log-probabilities (a
    server that sends none) the reply's text decides."""
    if not choices:
        return []
    wanted = [c.strip().lower() for c in choices]
    if not logprobs:
        picked = [i for i, w in enumerate(wanted) if w and reply.strip().lower().startswith(w)]
        return [1.0 / len(picked) if i in picked else 0.0 for i in range(len(choices))] if picked else _uniform(choices)
    mass = [0.0] * len(choices)
    for token, logprob in logprobs.items():
        text = token.strip().lower()
        starts = [i for i, w in enumerate(wanted) if text and w.startswith(text)]
        for i in starts:
            mass[i] += math.exp(logprob) / len(starts)
    floor = math.exp(min(logprobs.values())) / 2
    mass = [m if m > 0 else floor for m in mass]
    total = sum(mass)
    return [m / total for m in mass]


def _uniform(choices: list[str]) -> list[float]:
    return [1.0 / len(choices)] * len(choices)
