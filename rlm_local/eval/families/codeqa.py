"""Code QA over a generated Python project: find a function by what it does, or the one function that calls another.

Names never give the answer away (`normalize_reading` does `(value - 32) * 5 / 9`), the distractors are functions
with similar names doing nearby things (the inverse conversion), and, for callers, functions that only mention the
callee in a comment, a log string or a docstring, or call a look-alike (`flush_buffers`, `_flush_buffer`).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from rlm_local.eval.families.text import Draft, Layout, cap, fill, piece_size

VARIANTS = ("which_function", "who_calls")
SOURCES = Layout(str_header="# file: {name}\n", str_sep="\n\n", list_header="# file: {name}\n")


@dataclass(frozen=True)
class Behaviour:
    question: str  # "converts a temperature reading from Fahrenheit to Celsius"
    params: str
    body: tuple[str, ...]
    partner: str = ""  # the behaviour most easily mistaken for this one


BEHAVIOURS = {
    "f_to_c": Behaviour(
        "converts a temperature reading from Fahrenheit to Celsius", "value", ("return (value - 32) * 5 / 9",), "c_to_f"
    ),
    "c_to_f": Behaviour(
        "converts a temperature reading from Celsius to Fahrenheit", "value", ("return value * 9 / 5 + 32",), "f_to_c"
    ),
    "km_to_mi": Behaviour(
        "converts a distance in kilometres to miles", "value", ("return value * 0.621371",), "mi_to_km"
    ),
    "mi_to_km": Behaviour(
        "converts a distance in miles to kilometres", "value", ("return value * 1.609344",), "km_to_mi"
    ),
    "median": Behaviour(
        "returns the median of a list of numbers",
        "values",
        (
            "ordered = sorted(values)",
            "mid = len(ordered) // 2",
            "if len(ordered) % 2:",
            "    return ordered[mid]",
            "return (ordered[mid - 1] + ordered[mid]) / 2",
        ),
        "mean",
    ),
    "mean": Behaviour(
        "returns the average of a list of numbers",
        "values",
        ("if not values:", "    return 0.0", "return sum(values) / len(values)"),
        "median",
    ),
    "dedupe": Behaviour(
        "removes duplicates from a list while keeping the original order",
        "items",
        (
            "seen = set()",
            "out = []",
            "for item in items:",
            "    if item not in seen:",
            "        seen.add(item)",
            "        out.append(item)",
            "return out",
        ),
        "distinct_sorted",
    ),
    "distinct_sorted": Behaviour(
        "returns the distinct items of a list in sorted order", "items", ("return sorted(set(items))",), "dedupe"
    ),
    "palindrome": Behaviour(
        "checks whether a piece of text reads the same forwards and backwards",
        "text",
        ("cleaned = [c.lower() for c in text if c.isalnum()]", "return cleaned == cleaned[::-1]"),
        "reverse_words",
    ),
    "reverse_words": Behaviour(
        "reverses the order of the words in a sentence",
        "text",
        ('return " ".join(reversed(text.split()))',),
        "palindrome",
    ),
    "gcd": Behaviour(
        "finds the greatest common divisor of two integers",
        "a, b",
        ("while b:", "    a, b = b, a % b", "return abs(a)"),
        "lcm",
    ),
    "lcm": Behaviour(
        "computes the least common multiple of two integers",
        "a, b",
        ("x, y = a, b", "while y:", "    x, y = y, x % y", "return abs(a * b) // x if x else 0"),
        "gcd",
    ),
    "chunks": Behaviour(
        "splits a list into chunks of a fixed size",
        "items, size",
        ("return [items[i : i + size] for i in range(0, len(items), size)]",),
        "flatten",
    ),
    "flatten": Behaviour(
        "flattens a list of lists into a single list",
        "groups",
        ("return [x for group in groups for x in group]",),
        "chunks",
    ),
    "hex_rgb": Behaviour(
        "turns a hex colour string such as #ff8800 into red, green and blue values",
        "text",
        ('text = text.lstrip("#")', "return tuple(int(text[i : i + 2], 16) for i in (0, 2, 4))"),
        "rgb_hex",
    ),
    "rgb_hex": Behaviour(
        "turns red, green and blue values into a hex colour string",
        "r, g, b",
        ('return f"#{r:02x}{g:02x}{b:02x}"',),
        "hex_rgb",
    ),
    "vowels": Behaviour(
        "counts the vowels in a string",
        "text",
        ('return sum(1 for c in text.lower() if c in "aeiou")',),
        "word_freq",
    ),
    "word_freq": Behaviour(
        "counts how often each word occurs in a text",
        "text",
        (
            "counts = {}",
            "for word in text.lower().split():",
            "    counts[word] = counts.get(word, 0) + 1",
            "return counts",
        ),
        "vowels",
    ),
    "leap": Behaviour(
        "tells whether a year is a leap year",
        "year",
        ("return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)",),
    ),
    "hms": Behaviour(
        "formats a number of seconds as hours, minutes and seconds",
        "seconds",
        (
            "minutes, secs = divmod(int(seconds), 60)",
            "hours, minutes = divmod(minutes, 60)",
            'return f"{hours}:{minutes:02d}:{secs:02d}"',
        ),
    ),
    "clamp": Behaviour(
        "keeps a number between a lower and an upper bound", "value, low, high", ("return max(low, min(high, value))",)
    ),
    "compound": Behaviour(
        "computes a balance after compound interest over a number of years",
        "balance, rate, years",
        ("for _ in range(years):", "    balance *= 1 + rate", "return round(balance, 2)"),
    ),
}
WHICH_QUERIES = (
    "Which function {question}?",
    "I'm looking for the function that {question}. What is it called?",
    "Somewhere in this code base a function {question}. Which one is it?",
)
CALLER_QUERIES = (
    "Which function calls `{callee}`?",
    "Where is `{callee}` called from? Give the name of the calling function.",
    "`{callee}` is invoked in exactly one place. Which function invokes it?",
)
# Names for the behaviours: generic on purpose, so a name never says what its function does.
PLAIN_VERBS = ("normalize", "adjust", "convert", "prepare", "transform", "process", "derive", "refine", "handle")
PLAIN_NOUNS = ("reading", "value", "sample", "entry", "input", "series", "data", "payload", "metric", "figure")
VERBS = (
    "load", "parse", "build", "merge", "apply", "collect", "render", "resolve", "fetch", "update", "validate",
    "encode", "decode", "register", "refresh", "compute", "format", "filter", "group", "sync", "export", "archive",
    "schedule", "dispatch", "check", "read", "write", "split", "expand", "attach", "release", "flush", "drain",
    "reset", "store", "emit", "index", "score", "trim", "lookup",
)  # fmt: skip
QUALIFIERS = ("raw", "cached", "pending", "active", "remote", "local", "default", "nested", "partial", "stale", "daily")
NOUNS = (
    "config", "record", "buffer", "session", "header", "token", "invoice", "order", "customer", "report", "event",
    "queue", "cache", "profile", "setting", "row", "column", "batch", "snapshot", "manifest", "schema", "template",
    "route", "handler", "request", "response", "message", "channel", "job", "task", "ledger", "inventory",
    "address", "label", "segment", "window", "stock", "tariff", "voucher", "slot",
)  # fmt: skip
FIELDS = ("id", "name", "status", "created_at", "amount", "owner", "region", "priority", "tags", "kind", "source")
PACKAGES = ("shopfloor", "ledgerkit", "dataflow", "tidewater", "orchard", "beacon", "copperline", "fieldnotes")
AREAS = ("io", "core", "sync", "reports", "util", "api", "jobs", "models", "services", "storage")
SUFFIXES = ("utils", "helpers", "ops", "service", "store", "pipeline", "tasks", "views", "handlers", "common")
DOCS = (
    "{Verb} the {noun} and return it.",
    "Helper for {noun} handling.",
    "{Verb} {noun} data from the given input.",
    "Return a cleaned copy of the {noun}.",
    "Used by the {noun} pipeline; keep it cheap.",
    "{Verb} every {noun} in the batch.",
)
FILLER_BODIES = (
    ("{p}", "return {{k: v for k, v in {p}.items() if v is not None}}"),
    ('{p}, status="{status}"', 'return [row for row in {p} if row.get("status") == status]'),
    ("{p}", 'total = 0\nfor row in {p}:\n    total += row.get("{f}", 0)\nreturn total'),
    ("{p}", 'return sorted({p}, key=lambda row: row["{f}"])'),
    ("{p}", 'groups = defaultdict(list)\nfor row in {p}:\n    groups[row["{f}"]].append(row)\nreturn dict(groups)'),
    (
        "config, key, default=None",
        'value = config.get(key, default)\nlog.debug("{name}: %s=%r", key, value)\nreturn value',
    ),
    (
        "path",
        "try:\n    return json.loads(Path(path).read_text())\nexcept (OSError, ValueError):\n"
        '    log.warning("{name}: cannot read %s", path)\n    return {{}}',
    ),
    (
        "attempts=3",
        "for attempt in range(attempts):\n    try:\n        return {c1}()\n    except RuntimeError:\n"
        '        time.sleep(0.1 * (attempt + 1))\nraise RuntimeError("{name} gave up")',
    ),
    ("{p}", "{p} = {c1}({p})\n{p} = {c2}({p})\nreturn {p}"),
    (
        "{p}",
        'if not {p}:\n    raise ValueError("{name}: nothing to do")\nif "{f}" not in {p}:\n    raise KeyError("{f}")\n'
        "return {p}",
    ),
    ("{p}", 'return "{tail}-" + str({p}["{f}"])'),
    ("{p}, **extra", 'record = {{"{f}": {p}, "created_at": time.time()}}\nrecord.update(extra)\nreturn record'),
    ("{p}", 'seen = defaultdict(int)\nfor row in {p}:\n    seen[row.get("{f}")] += 1\nreturn dict(seen)'),
    (
        "path, {p}",
        'with open(path, "w") as fh:\n    for row in {p}:\n        fh.write(json.dumps(row) + "\\n")\nreturn len({p})',
    ),
    (
        "base, override",
        "merged = dict(base)\nfor key, value in override.items():\n    if value is not None:\n"
        "        merged[key] = value\nreturn merged",
    ),
    (
        "{p}",
        'log.info("{name}: %d items", len({p}))\nresult = {c1}({p})\n'
        "if result is None:\n    return {c2}({p})\nreturn result",
    ),
)
IMPORTS = (
    "import json\nimport logging\nimport time\nfrom collections import defaultdict\nfrom pathlib import Path\n\n"
    "log = logging.getLogger(__name__)"
)


@dataclass
class Names:
    """Unique function names; `protected` names are never a part of another name (or the other way round), so a
    scorer looking for `flush_buffer` is not fooled by `flush_buffer_batch`."""

    rng: random.Random
    used: set[str] = field(default_factory=set)
    protected: list[str] = field(default_factory=list)

    def take(self, name: str) -> bool:
        if name in self.used or any(f"_{p}_" in f"_{name}_" or f"_{name}_" in f"_{p}_" for p in self.protected):
            return False
        self.used.add(name)
        return True

    def new(self, make: Callable[[], str] | None = None) -> str:
        while not self.take(name := (make or self.plain)()):
            pass
        return name

    def plain(self) -> str:
        r = self.rng
        parts = [r.choice(VERBS), r.choice(QUALIFIERS) if r.random() < 0.4 else "", r.choice(NOUNS)]
        name = "_".join(p for p in parts if p)
        return plural(name) if r.random() < 0.2 else name


def function(name: str, params: str, body: list[str], doc: str | None = None) -> str:
    lines = [f"def {name}({params}):"]
    if doc:
        lines.append(f'    """{doc}"""')
    lines += [f"    {line}" for line in body]
    return "\n".join(lines)


def filler_body(rng: random.Random, name: str, callable_names: list[str]) -> tuple[str, list[str]]:
    """Parameters and body of an ordinary function: real-looking work, never one of the behaviours asked about."""
    c1, c2 = (rng.choice(callable_names), rng.choice(callable_names)) if callable_names else ("dict", "list")
    fields = {
        "p": rng.choice(("rows", "items", "payload", "entries", "records")),
        "f": rng.choice(FIELDS),
        "status": rng.choice(("open", "closed", "pending", "failed", "active")),
        "name": name,
        "tail": name.split("_")[-1],
        "c1": c1,
        "c2": c2,
    }
    params, body = rng.choice(FILLER_BODIES)
    return params.format(**fields), body.format(**fields).split("\n")


def unrelated(part: str, words: list[str]) -> bool:
    """`part` shares no stem with the question's words: the name must not give the answer away."""
    return not any(w.startswith(part) or part.startswith(w) for w in words if len(w) >= 4)


def plural(noun: str) -> str:
    return noun + ("es" if noun.endswith(("s", "x", "ch")) else "s")


def doc_for(rng: random.Random, name: str) -> str | None:
    if rng.random() < 0.45:
        return None
    verb, noun = name.strip("_").split("_")[0], name.split("_")[-1]
    return rng.choice(DOCS).format(Verb=cap(verb), noun=noun)


def draft(rng: random.Random, target: int, shape: str, variant: str) -> Draft:
    names = Names(rng)
    if variant == "which_function":
        specials, gold, wrong, query = _which(rng, names)
    else:
        specials, gold, wrong, query = _who_calls(rng, names)
    package = rng.choice(PACKAGES)
    low, high = piece_size(target, 1_200, 6_000)
    defined: list[str] = []
    paths: set[str] = set()

    def source_file(wanted: int) -> tuple[str, str]:
        path = ""
        while not path or path in paths:
            module = f"{rng.choice(NOUNS)}_{rng.choice(SUFFIXES)}"
            path = f"{package}/{rng.choice(AREAS)}/{module}.py"
        paths.add(path)
        text = f'"""{cap(module.replace("_", " "))} of the {package} project."""\n\n{IMPORTS}'
        size = min(wanted, rng.randint(low, high))
        while len(text) < size:
            name = names.new()
            params, body = filler_body(rng, name, defined[-200:])
            text += "\n\n\n" + function(name, params, body, doc_for(rng, name))
            defined.append(name)
        return path, text

    files = fill(SOURCES, shape, target - sum(len(s) + 2 for s in specials), [], source_file)
    for source in specials:
        i = rng.randrange(len(files))
        head, *functions = files[i][1].split("\n\n\n")
        functions.insert(rng.randint(0, len(functions)), source)
        files[i] = (files[i][0], "\n\n\n".join([head, *functions]))
    files = [(path, text + "\n") for path, text in files]
    return Draft(query, SOURCES.build(files, shape), gold, "contains", tuple(wrong))


def _which(rng: random.Random, names: Names) -> tuple[list[str], str, list[str], str]:
    """The function with the asked behaviour, and functions with similar names that do something else."""
    key = rng.choice([k for k, b in BEHAVIOURS.items() if b.partner])
    asked = re.findall(r"[a-z]+", BEHAVIOURS[key].question.lower())
    verb = rng.choice([v for v in PLAIN_VERBS if unrelated(v, asked)])
    noun = rng.choice([n for n in PLAIN_NOUNS if unrelated(n, asked)])
    gold = names.new(lambda: f"{verb}_{noun}")
    names.protected.append(gold)
    others = [
        BEHAVIOURS[key].partner,
        *rng.sample([k for k in BEHAVIOURS if k not in (key, BEHAVIOURS[key].partner)], 3),
    ]
    wrong = []
    for _ in others:
        wrong.append(
            names.new(
                lambda: (
                    f"{verb}_{rng.choice(PLAIN_NOUNS)}" if rng.random() < 0.5 else f"{rng.choice(PLAIN_VERBS)}_{noun}"
                )
            )
        )
    specials = []
    for name, k in zip([gold, *wrong], [key, *others], strict=True):
        b = BEHAVIOURS[k]
        doc = None if rng.random() < 0.5 else f"{cap(name.split('_')[0])} a {name.split('_')[1]}."
        specials.append(function(name, b.params, list(b.body), doc))
    query = rng.choice(WHICH_QUERIES).format(question=BEHAVIOURS[key].question)
    return specials, gold, wrong, query


def _who_calls(rng: random.Random, names: Names) -> tuple[list[str], str, list[str], str]:
    """The callee, its one caller, look-alike callees, and functions that only mention the callee or call a
    look-alike."""
    callee = names.new()
    lookalikes = [plural(callee) if not callee.endswith("s") else f"{callee}_all", f"_{callee}", f"{callee}_async"]
    for alike in lookalikes:
        names.used.add(alike)
    names.protected.append(callee)
    gold = names.new()
    names.protected.append(gold)
    specials = [function(callee, *filler_body(rng, callee, []), doc_for(rng, callee))]
    specials += [function(alike, *filler_body(rng, alike, []), doc_for(rng, alike)) for alike in lookalikes[:2]]
    params, body = filler_body(rng, gold, [])
    arg = params.split(",")[0].split("=")[0].strip() or "None"
    at = 0 if rng.random() < 0.5 or body[-1].startswith(" ") else len(body) - 1
    body.insert(at, f"{callee}({arg})")
    specials.append(function(gold, params, body, doc_for(rng, gold)))
    mentions: tuple[Callable[[str], tuple[list[str], str | None]], ...] = (
        lambda a: ([f"# {callee} is called by the writer, not here"], None),
        lambda a: ([f"# TODO: call {callee}() once the lock is sorted"], None),
        lambda a: ([f'log.debug("skipping {callee} for %s", {a})'], None),
        lambda a: ([f"{rng.choice(lookalikes[:2])}({a})"], None),
        lambda a: ([], f"Unlike {callee}, this keeps everything in memory."),
    )
    wrong = []
    for mention in rng.sample(mentions, rng.randint(3, 5)):
        name = names.new()
        params, body = filler_body(rng, name, [])
        extra, doc = mention(params.split(",")[0].split("=")[0].strip() or "None")
        body[0:0] = extra
        specials.append(function(name, params, body, doc or doc_for(rng, name)))
        wrong.append(name)
    query = rng.choice(CALLER_QUERIES).format(callee=callee)
    return specials, gold, wrong, query
