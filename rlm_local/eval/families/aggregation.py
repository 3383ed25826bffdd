"""Aggregation (OOLONG-style): count or rank the hidden labels of many one-line customer messages.

Every message must be read (a label is never a keyword), so the work grows with the context: the task a model cannot
do in one window but an RLM can split among sub-calls. Gold answers are counted from the messages actually written.
"""

from __future__ import annotations

import random
from collections import Counter

from rlm_local.eval.families.records import SCHEMES, Message, fill_messages, record_text, render
from rlm_local.eval.families.text import Draft, user_ids

VARIANTS = ("count_label", "most_common", "least_common")
MARGIN = 2  # the most (least) common label leads (trails) every other by at least this many messages

PHRASES = {
    "positive": "positive",
    "negative": "negative",
    "neutral": "neutral in tone",
    "billing": "about billing",
    "shipping": "about shipping",
    "account": "about account problems",
    "product question": "product questions",
    "praise": "praise for the company or its staff",
}
COUNT_QUERIES = (
    "How many of these messages are {phrase}?",
    "Count the customer messages that are {phrase}: how many are there?",
    "In this log, how many messages are {phrase}?",
)
RANK_QUERIES = (
    "Which {dim} is the {most} common among these messages: {options}?",
    "Looking at all the messages, which {dim} comes up {most} often ({options})?",
    "What is the {most} frequent {dim} in this log of customer messages: {options}?",
)


def draft(rng: random.Random, target: int, shape: str, variant: str) -> Draft:
    scheme = rng.choice(sorted(SCHEMES))
    labels = SCHEMES[scheme]
    users = user_ids(rng, min(500, max(20, target // 440)))
    chosen = rng.choice(labels)
    if variant == "count_label":
        weights = [rng.uniform(0.5, 2.0) for _ in labels]
    elif variant == "most_common":
        weights = [rng.uniform(0.6, 1.0) for _ in labels]
        weights[labels.index(chosen)] = 1.5 * max(weights)
    else:
        weights = [rng.uniform(1.0, 1.6) for _ in labels]
        weights[labels.index(chosen)] = 0.5 * min(weights)

    def draw() -> tuple[str, str]:
        return rng.choice(users), rng.choices(labels, weights)[0]

    messages = fill_messages(rng, shape, target, draw)
    counts = Counter(m.label for m in messages)
    distractors = tuple(label for label in labels if label != chosen)
    if variant == "count_label":
        query = rng.choice(COUNT_QUERIES).format(phrase=PHRASES[chosen])
        return Draft(query, render(rng, messages, shape), counts[chosen], "numeric")
    most = variant == "most_common"
    _separate(rng, messages, chosen, labels, most)
    counts = Counter(m.label for m in messages)
    ranked = sorted(labels, key=lambda label: counts[label], reverse=most)
    gold = ranked[0]
    assert abs(counts[gold] - counts[ranked[1]]) >= MARGIN and counts[gold] > 0
    options = ", ".join(labels[:-1]) + f" or {labels[-1]}"
    dim = "sentiment" if scheme == "sentiment" else "topic"
    query = rng.choice(RANK_QUERIES).format(dim=dim, most="most" if most else "least", options=options)
    return Draft(query, render(rng, messages, shape), gold, "label", distractors)


def _separate(rng: random.Random, messages: list[Message], chosen: str, labels: tuple[str, ...], most: bool) -> None:
    """Rewrites a few messages under other labels until `chosen` leads (or trails) every other label by MARGIN, and
    the least common label still occurs at least MARGIN times."""
    counts = Counter(m.label for m in messages)

    def move(src: str, dst: str) -> None:
        i = rng.choice([i for i, m in enumerate(messages) if m.label == src])
        messages[i] = Message(messages[i].user, dst, record_text(rng, dst))
        counts[src] -= 1
        counts[dst] += 1

    while not most and counts[chosen] < MARGIN:
        move(max(labels, key=lambda label: counts[label]), chosen)
    for other in labels:
        if other == chosen:
            continue
        while most and counts[chosen] - counts[other] < MARGIN:
            move(other, chosen)
        while not most and counts[other] - counts[chosen] < MARGIN:
            donors = [label for label in labels if label not in (chosen, other)]
            move(max(donors, key=lambda label: counts[label]), other)
