"""Seeded synthetic long-context tasks for the quickstart, the end-to-end tests and the benchmarks.

Filler is varied prose made from templates, so neither a regex on a fixed phrase of the filler nor the position of
the needle gives the answer away; every task knows its expected answer.
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass

SUBJECTS = [
    "The committee",
    "A traveller",
    "The old mill",
    "Our neighbour",
    "The river",
    "A quiet student",
    "The market",
    "The orchestra",
    "A farmer",
    "The library",
    "The harbour master",
    "A young painter",
]
VERBS = [
    "described",
    "remembered",
    "ignored",
    "measured",
    "repaired",
    "visited",
    "praised",
    "questioned",
    "photographed",
    "mentioned",
    "studied",
    "celebrated",
]
OBJECTS = [
    "the northern bridge",
    "a forgotten recipe",
    "the spring festival",
    "an unusual storm",
    "the price of wool",
    "a broken clock",
    "the evening train",
    "a letter from abroad",
    "the town archive",
    "a field of barley",
    "the lighthouse",
    "a chess tournament",
]
ENDINGS = [
    "before the rain began.",
    "with great patience.",
    "for the third time that year.",
    "while the bells were ringing.",
    "without telling anyone.",
    "as the sun went down.",
    "in the usual careful way.",
    "after a long discussion.",
]
ITEMS = ["access code", "vault number", "project codename", "meeting room", "launch date"]


def filler_sentence(rng: random.Random) -> str:
    return f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)} {rng.choice(ENDINGS)}"


def filler(rng: random.Random, chars: int) -> str:
    parts, size = [], 0
    while size < chars:
        sentence = filler_sentence(rng)
        parts.append(sentence)
        size += len(sentence) + 1
    return " ".join(parts)


@dataclass
class Task:
    query: str
    context: str | list[str]
    answer: str
    kind: str


def needle_task(seed: int, chars: int = 400_000, item: str | None = None) -> Task:
    """One fact hidden at a random depth in `chars` characters of filler."""
    rng = random.Random(seed)
    item = item or rng.choice(ITEMS)
    code = "".join(rng.choices(string.ascii_uppercase, k=3)) + "-" + "".join(rng.choices(string.digits, k=4))
    needle = f" Remember this: the {item} is {code}. "
    text = filler(rng, chars)
    at = rng.randint(int(len(text) * 0.1), int(len(text) * 0.9))
    at = text.rfind(". ", 0, at) + 1 or at
    return Task(f"What is the {item}?", text[:at] + needle + text[at:], code, "needle")


def counting_task(seed: int, documents: int = 32, chars_per_document: int = 3_000) -> Task:
    """Documents of which some report a given colour; the answer is how many documents do."""
    rng = random.Random(seed)
    colour = rng.choice(["red", "green", "blue", "yellow"])
    docs, count = [], 0
    for i in range(documents):
        body = filler(rng, chars_per_document)
        if rng.random() < 0.4:
            count += 1
            cut = body.find(". ", len(body) // 2) + 1
            body = body[:cut] + f" Inspector note {i}: the door of this house is painted {colour}." + body[cut:]
        docs.append(body)
    return Task(f"How many documents say the door is painted {colour}?", docs, str(count), "counting")
