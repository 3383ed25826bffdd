"""Needle in a haystack: one fact (or several values of one key) hidden in varied prose.

The fact's wording varies ("the access code is X", "X is the access code we agreed on", "note to self, access
code: X"), so no fixed phrase finds it; in `distractor_keys` facts of the same form for other keys sit beside it.
"""

from __future__ import annotations

import random
import string

from rlm_local.eval.families.text import Draft, Layout, fill, insert_sentences, piece_size, prose

VARIANTS = ("single", "multi_value", "uuid", "number", "distractor_keys")
CODE_ITEMS = (
    "access code", "gate code", "locker code", "alarm code", "reference code", "garage code", "storeroom code",
    "voucher code",
)  # fmt: skip
UUID_ITEMS = ("backup key", "licence key", "device id", "recovery key", "session token")
NUMBER_ITEMS = ("vault number", "badge number", "safe combination", "ticket number", "pallet number")
FACTS = (
    "Remember this: the {item} is {value}.",
    "{value} is the {item} we agreed on.",
    "For the record, the {item} was set to {value}.",
    "Write it down somewhere safe: {item} {value}.",
    "Note to self, {item}: {value}.",
    "If anyone asks for the {item}, tell them it is {value}.",
    "The {item}, in case it gets lost again, is {value}.",
    "We changed the {item} last week; it is now {value}.",
    "Use {value} whenever you need the {item}.",
)
MULTI_FACTS = (
    "One of the {item}s is {value}.",
    "Another {item} for the list: {value}.",
    "{value} is also a valid {item}.",
    "Add {value} to the {item}s we hand out.",
    "The newest {item} is {value}.",
    "Keep {value} handy, it is one of the {item}s.",
)
QUERIES = (
    "What is the {item}?",
    "I need the {item}. What is it?",
    "Somewhere in these notes is the {item}; what is it?",
    "Can you find the {item} for me?",
    "What {item} did we end up with?",
)
MULTI_QUERIES = (
    "List every {item} mentioned in these notes.",
    "What are all the {item}s? Give every one of them.",
    "Which {item}s appear in these notes?",
)
NOTES = Layout(str_sep="\n\n")  # str: one long text; list: one note an item; dict: file name -> note


def code(rng: random.Random) -> str:
    return "".join(rng.choices(string.ascii_uppercase, k=3)) + "-" + "".join(rng.choices(string.digits, k=4))


def uuid_value(rng: random.Random) -> str:
    h = f"{rng.getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[rng.randrange(4)]}{h[17:20]}-{h[20:]}"


def number(rng: random.Random) -> str:
    return str(rng.randint(100_000, 99_999_999))


def draft(rng: random.Random, target: int, shape: str, variant: str) -> Draft:
    items, make_value = {
        "uuid": (UUID_ITEMS, uuid_value),
        "number": (NUMBER_ITEMS, number),
    }.get(variant, (CODE_ITEMS, code))
    keys = rng.sample(items, min(len(items), 1 + rng.randint(2, 4)))
    item, others = keys[0], keys[1:] if variant in ("distractor_keys", "multi_value") else []
    values: set[str] = set()

    def fresh() -> str:
        while (value := make_value(rng)) in values:
            pass
        values.add(value)
        return value

    if variant == "multi_value":
        gold: str | list[str] = [fresh() for _ in range(rng.randint(3, 6))]
        facts = [rng.choice(MULTI_FACTS).format(item=item, value=v) for v in gold]
        query = rng.choice(MULTI_QUERIES).format(item=item)
        metric = "set_f1"
    else:
        gold = fresh()
        facts = [rng.choice(FACTS).format(item=item, value=gold)]
        query = rng.choice(QUERIES).format(item=item)
        metric = "contains"
    wrong = [fresh() for _ in others]
    facts += [rng.choice(FACTS).format(item=other, value=v) for other, v in zip(others, wrong, strict=True)]

    low, high = piece_size(target, 1_500, 6_000)
    counter = iter(range(1_000_000))

    def make(wanted: int) -> tuple[str, str]:
        return f"notes/day-{next(counter):04d}.txt", prose(rng, min(wanted, rng.randint(low, high)))

    notes = fill(NOTES, shape, target - sum(len(f) + 1 for f in facts), [], make)
    for fact in facts:
        i = rng.randrange(len(notes))
        notes[i] = (notes[i][0], insert_sentences(rng, notes[i][1], [fact]))
    return Draft(query, NOTES.build(notes, shape), gold, metric, tuple(wrong))
