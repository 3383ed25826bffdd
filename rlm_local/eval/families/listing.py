"""Listing (OOLONG-Pairs-like): which users, or pairs of users, meet a condition over the hidden labels of their
messages.

Most messages are noise; the few that matter cannot be found by keyword, and near misses (a user with one such
message where two are needed, a user with a single off-tone message) are the distractors. Gold sets stay small.
"""

from __future__ import annotations

import random
from collections import defaultdict
from itertools import combinations

from rlm_local.eval.families.records import SCHEMES, fill_messages, render
from rlm_local.eval.families.text import Draft, user_ids

VARIANTS = ("repeat_label", "only_label", "pairs")
TOPICS = ("billing", "shipping", "account", "product question")  # praise reads oddly as "wrote about praise"
ABOUT = {
    "billing": "about billing",
    "shipping": "about shipping",
    "account": "about their account",
    "product question": "with product questions",
}
REPEAT_QUERIES = (
    "Which users wrote to us {about} at least twice? Give their user ids.",
    "List the users who got in touch {about} on two or more occasions.",
    "Who contacted support {about} more than once? I need the user ids.",
)
ONLY_QUERIES = (
    "Which users only ever wrote {tone} messages? Give their user ids.",
    "List every user whose messages were all {tone}.",
    "Which customers never wrote anything that wasn't {tone}? Give the user ids.",
)
PAIR_QUERIES = (
    "Which pairs of users both wrote to us {about}? List each pair of user ids.",
    "Find every pair of users who both got in touch {about}; give each pair as two user ids.",
    "I want all pairs of customers who each contacted support {about} at least once. Which pairs are there?",
)


def draft(rng: random.Random, target: int, shape: str, variant: str) -> Draft:
    users = user_ids(rng, min(40, 8 + target // 7_000))
    rng.shuffle(users)
    if variant == "only_label":
        return _only(rng, target, shape, users)
    label = rng.choice(TOPICS)
    others = [t for t in SCHEMES["topic"] if t != label]
    if variant == "pairs":
        keen = users[: rng.choice((3, 4))]
        fixed = [(u, label) for u in keen for _ in range(rng.randint(1, 2))]
        near: list[str] = []
        query = rng.choice(PAIR_QUERIES)
    else:
        g = rng.randint(2, min(8, len(users) // 3))
        keen, near = users[:g], users[g : g + rng.randint(1, min(3, len(users) - g - 3))]
        fixed = [(u, label) for u in keen for _ in range(rng.randint(2, 4))] + [(u, label) for u in near]
        query = rng.choice(REPEAT_QUERIES)
    messages = fill_messages(rng, shape, target, lambda: (rng.choice(users), rng.choice(others)), fixed)
    per_user: dict[str, int] = defaultdict(int)
    for m in messages:
        per_user[m.user] += m.label == label
    query = query.format(about=ABOUT[label])
    if variant == "pairs":
        writers = sorted(u for u, n in per_user.items() if n >= 1)
        gold = [f"{a} & {b}" for a, b in combinations(writers, 2)]
        return Draft(query, render(rng, messages, shape), gold, "set_f1")
    gold = sorted(u for u, n in per_user.items() if n >= 2)
    return Draft(query, render(rng, messages, shape), gold, "set_f1", tuple(sorted(near)))


def _only(rng: random.Random, target: int, shape: str, users: list[str]) -> Draft:
    """Users whose every message has one tone; near misses have one message of another tone."""
    tone = rng.choice(("positive", "negative"))
    other_tones = [t for t in SCHEMES["sentiment"] if t != tone]
    g = rng.randint(2, min(6, len(users) // 3))
    n_near = rng.randint(1, 2)
    keen, near, bulk = users[:g], users[g : g + n_near], users[g + n_near :]
    fixed = [(u, tone) for u in keen + near for _ in range(rng.randint(2, 5))]
    fixed += [(u, rng.choice(other_tones)) for u in near + bulk]  # every other user has an off-tone message
    messages = fill_messages(rng, shape, target, lambda: (rng.choice(bulk), rng.choice(SCHEMES["sentiment"])), fixed)
    tones: dict[str, set[str]] = defaultdict(set)
    for m in messages:
        tones[m.user].add(m.label)
    gold = sorted(u for u, seen in tones.items() if seen == {tone})
    query = rng.choice(ONLY_QUERIES).format(tone=tone)
    return Draft(query, render(rng, messages, shape), gold, "set_f1", tuple(sorted(near)))
