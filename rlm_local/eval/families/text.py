"""Shared pieces of the task generators: seeded RNGs, varied prose, dates and ids, and the three context shapes.

Everything is driven by a private `random.Random` seeded from a string (stable across runs and Python versions; never
the global RNG, never `hash()`), so a task is byte-identical every time it is made. The prose avoids the words the
families ask about (codes, numbers, towns, races ...), so that a question's words never find filler by accident.
"""

from __future__ import annotations

import datetime
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

Context = str | list[str] | dict[str, str]
Gold = str | int | list[str]
SHAPES = ("str", "list", "dict")
MIN_CHARS = 8_000  # below this no family can hide its facts among enough filler


@dataclass(frozen=True)
class Draft:
    """What a family generator makes; `tasks.make_task` adds the identity (family, variant, shape, seed, size)."""

    query: str
    context: Context
    gold: Gold
    metric: str
    distractors: tuple[str, ...] = ()


def rng_for(*parts: object) -> random.Random:
    """A private RNG seeded from the parts joined as a string (str seeds go through SHA-512: stable everywhere)."""
    return random.Random(":".join(str(p) for p in parts))


def context_chars(context: Context) -> int:
    """Characters of the context as a user would count them: the text, the items, or the keys and the texts."""
    if isinstance(context, str):
        return len(context)
    if isinstance(context, dict):
        return sum(len(k) + len(v) for k, v in context.items())
    return sum(len(item) for item in context)


# --- prose --------------------------------------------------------------------------------------------------------

SUBJECTS = (
    "the committee", "a traveller", "the old mill", "our neighbour", "the river", "a quiet student",
    "the orchestra", "a farmer", "the library", "a young painter", "the bakery on the corner", "my grandmother",
    "the night porter", "a retired teacher", "the choir", "the gardener", "a delivery driver", "the museum",
    "a group of hikers", "the parish council", "the ferry crew", "an old friend", "the weather station",
    "a local historian", "the caretaker", "a visiting poet", "the cooperative", "the clockmaker", "the beekeeper",
    "the stationmaster",
)  # fmt: skip
VERBS = (
    "described", "remembered", "ignored", "measured", "repaired", "visited", "praised", "questioned",
    "photographed", "mentioned", "studied", "celebrated", "sketched", "catalogued", "argued about", "restored",
    "wrote about", "walked past", "returned to", "worried about", "painted", "inspected", "recommended",
    "forgot about",
)  # fmt: skip
OBJECTS = (
    "the northern bridge", "a forgotten recipe", "the spring festival", "an unusual storm", "the price of wool",
    "a broken clock", "the evening train", "a letter from abroad", "the parish archive", "a field of barley",
    "the lighthouse", "the old orchard", "a box of photographs", "the chapel roof", "the new footpath",
    "a pair of herons", "the flooded meadow", "the stone wall by the lane", "an empty warehouse", "the tide tables",
    "a collection of maps", "the winter stores", "the abandoned quarry", "the hedgerows", "a faded mural",
    "the bus timetable", "the apple harvest", "the water mill", "a row of cottages", "the bell tower",
)  # fmt: skip
ENDINGS = (
    "before the rain began.", "with great patience.", "for the third time that season.",
    "while the bells were ringing.", "without telling anyone.", "as the sun went down.",
    "in the usual careful way.", "after a lengthy discussion.", "on a grey morning.", "to everyone's surprise.",
    "with a little help from friends.", "late into the evening.", "as if nothing had happened.",
    "in spite of the cold.", "before anyone else arrived.", "while the kettle boiled.",
)  # fmt: skip
ADJECTIVES = (
    "muddy", "quiet", "busy", "cold", "bright", "unremarkable", "peculiar", "damp", "cheerful", "slow",
    "crowded", "windy", "gentle", "tiring", "lovely",
)  # fmt: skip
MONTHS = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
    "November", "December",
)  # fmt: skip
SOURCES = ("the parish newsletter", "an old diary", "the almanac", "a neighbour's account", "the minutes")
OPENERS = ("Later,", "Meanwhile,", "By then,", "Oddly enough,", "That week,", "Soon after,", "In the end,")
SENTENCES: tuple[Callable[[random.Random], str], ...] = (
    lambda r: f"{cap(r.choice(SUBJECTS))} {r.choice(VERBS)} {r.choice(OBJECTS)} {r.choice(ENDINGS)}",
    lambda r: f"{r.choice(OPENERS)} {r.choice(SUBJECTS)} {r.choice(VERBS)} {r.choice(OBJECTS)}.",
    lambda r: (
        f"In {r.choice(MONTHS)}, {r.choice(SUBJECTS)} {r.choice(VERBS)} {r.choice(OBJECTS)}, "
        f"and {r.choice(SUBJECTS)} {r.choice(VERBS)} {r.choice(OBJECTS)}."
    ),
    lambda r: (
        f"Nobody expected {r.choice(OBJECTS)} to matter, yet {r.choice(SUBJECTS)} {r.choice(VERBS)} it "
        f"{r.choice(ENDINGS)}"
    ),
    lambda r: (
        f"According to {r.choice(SOURCES)}, {r.choice(OBJECTS)} had been {r.choice(ADJECTIVES)} "
        f"for {r.randint(2, 40)} years."
    ),
    lambda r: (
        f"It was {article(r.choice(ADJECTIVES))} day when {r.choice(SUBJECTS)} {r.choice(VERBS)} {r.choice(OBJECTS)}."
    ),
    lambda r: (
        f"{cap(r.choice(SUBJECTS))} thought {r.choice(OBJECTS)} looked {r.choice(ADJECTIVES)} {r.choice(ENDINGS)}"
    ),
    lambda r: (
        f"Back in {r.randint(1950, 2015)}, {r.choice(OBJECTS)} was {r.choice(ADJECTIVES)}, or so "
        f"{r.choice(SUBJECTS)} claimed."
    ),
    lambda r: (
        f"Ask {r.choice(SUBJECTS)} about {r.choice(OBJECTS)} and you will hear {article(r.choice(ADJECTIVES))} story."
    ),
)


def cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def article(word: str) -> str:
    return f"{'an' if word[:1] in 'aeiou' else 'a'} {word}"


def sentence(rng: random.Random) -> str:
    return rng.choice(SENTENCES)(rng)


def prose(rng: random.Random, chars: int, paragraph: tuple[int, int] = (3, 7)) -> str:
    """About `chars` characters (one sentence over at most) of sentences in paragraphs split by blank lines."""
    paragraphs: list[str] = []
    size = 0
    while size < chars:
        parts: list[str] = []
        for _ in range(rng.randint(*paragraph)):
            parts.append(sentence(rng))
            size += len(parts[-1]) + 1
            if size >= chars:
                break
        paragraphs.append(" ".join(parts))
        size += 1
    return "\n\n".join(paragraphs)


def insert_sentences(rng: random.Random, text: str, extra: Sequence[str], low: float = 0.05) -> str:
    """`extra` sentences placed at random sentence boundaries of `text` (each between `low` and 1-`low` of it)."""
    cuts = sorted(_boundary(text, rng.randint(int(len(text) * low), int(len(text) * (1 - low)))) for _ in extra)
    order = list(extra)
    rng.shuffle(order)
    out, last = [], 0
    for cut, piece in zip(cuts, order, strict=True):
        out += [text[last:cut], " ", piece]
        last = cut
    out.append(text[last:])
    return "".join(out)


def _boundary(text: str, at: int) -> int:
    found = text.rfind(". ", 0, at)
    if found < 0:
        found = text.find(". ", at)
    return found + 1 if found >= 0 else len(text)


# --- dates, people, ids -------------------------------------------------------------------------------------------


def dates(rng: random.Random, n: int, start_year: int = 2023, years: int = 2) -> list[str]:
    """`n` sorted ISO dates in `years` years from 1 January of `start_year` (a log is read in time order)."""
    base = datetime.date(start_year, 1, 1).toordinal()
    ordinals = sorted(rng.randrange(365 * years) for _ in range(n))
    return [datetime.date.fromordinal(base + day).isoformat() for day in ordinals]


def user_ids(rng: random.Random, n: int) -> list[str]:
    """`n` distinct ids like `user_0421`."""
    return [f"user_{i:04d}" for i in rng.sample(range(1, 10_000), n)]


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


# --- shapes -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """How named pieces (records, documents, files) become a context of each shape, and what each piece costs.

    str: the pieces (each under `str_header` when given) joined by `str_sep`; list: the pieces (each under
    `list_header` when given); dict: name -> piece.
    """

    str_header: str = ""  # e.g. "### {name}\n"
    str_sep: str = "\n"
    list_header: str = ""  # e.g. "# file: {name}\n"

    def cost(self, name: str, text: str, shape: str) -> int:
        if shape == "dict":
            return len(name) + len(text)
        if shape == "list":
            return len(self.list_header.format(name=name)) + len(text)
        return len(self.str_header.format(name=name)) + len(text) + len(self.str_sep)

    def build(self, pieces: Sequence[tuple[str, str]], shape: str) -> Context:
        if shape == "dict":
            return dict(pieces)
        if shape == "list":
            return [self.list_header.format(name=name) + text for name, text in pieces]
        if shape == "str":
            return self.str_sep.join(self.str_header.format(name=name) + text for name, text in pieces)
        raise ValueError(f"unknown shape {shape!r}: choose from {', '.join(SHAPES)}")


def fill(
    layout: Layout,
    shape: str,
    target: int,
    fixed: Sequence[tuple[str, str]],
    make: Callable[[int], tuple[str, str]],
) -> list[tuple[str, str]]:
    """`fixed` pieces plus pieces from `make(chars_still_wanted)` until the context reaches `target` characters; a
    maker keeps its last piece near what is still wanted, so the target is overshot by little."""
    size = sum(layout.cost(name, text, shape) for name, text in fixed)
    pieces: list[tuple[str, str]] = []
    while size < target:
        name, text = make(target - size)
        pieces.append((name, text))
        size += layout.cost(name, text, shape)
    return [*fixed, *pieces]


def scatter(rng: random.Random, filler: list[tuple[str, str]], special: Sequence[tuple[str, str]]) -> list:
    """`special` pieces put at random places among `filler` (order of the filler kept)."""
    out = list(filler)
    for piece in special:
        out.insert(rng.randint(0, len(out)), piece)
    return out


def piece_size(target: int, low: int, high: int) -> tuple[int, int]:
    """Bounds for one piece's size: about 1-4% of the target, within [low, high], so the target is never overshot
    by more than a few percent."""
    top = max(low, min(high, target // 25))
    return max(low // 2, min(low, top // 2)), top
