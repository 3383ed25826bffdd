"""Strategy helpers in the REPL: one line of model code per task shape (find, read everything, label, count, rank).

Small models write short code well and long code badly (measured: regexes for phrases never seen in the data,
`str` functions on dict contexts, counts of keyword hits instead of reading). These helpers take any context
shape (str, list, dict), do the splitting, batching and aggregation, and return plain Python values the model
can print. Sub-call prompts put the fixed instructions first, so the engine's prefix cache serves them once.

Standard library only: this file runs inside the sandbox container next to repl_worker.py.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable
from typing import Any

SPLIT_CHARS = 20_000  # split_text's default, for code that calls llm_query itself
PIECE_CHARS = 4_000  # what a small sub-model reads reliably in one call (a 0.5B model missed facts in 8,000)
SNIPPET_CHARS = 300
CLOSE_PIECES, CLOSE_CHARS = 5, 1_200  # ask_all's first, close look
MAX_SNIPPETS = 40
NONE_WORDS = re.compile(r"^\W*(none|n/a|no answer|not (found|mentioned|stated|given|present))\b", re.IGNORECASE)
_WORD = re.compile(r"[A-Za-z0-9_]+")

# The question comes after the text: small models follow what they read last.
READ_PROMPT = """Text:
{piece}

Question: {question}
Answer from the text above only. If the text does not say, reply with exactly: NONE
Otherwise reply with the answer and quote the words of the text that give it."""

COMBINE_PROMPT = """Several parts of a long document were read separately. These notes were found:

{notes}

Question: {question}
Using only these notes, give the final answer. Be brief: the answer itself, no explanation."""

LABEL_PROMPT = """Answer a question about one record. Reply with only the answer{choices}, nothing else.

Question: {question}

Record:
{item}"""


def items(data: Any) -> list[str]:
    """The records of a context: list items, dict entries ('key: value'), or the non-empty lines of a str."""
    if isinstance(data, dict):
        return [f"{key}: {value}" for key, value in data.items()]
    if isinstance(data, list | tuple):
        return [str(item) for item in data]
    return [line for line in str(data).splitlines() if line.strip()]


def split_text(data: Any, max_chars: int = SPLIT_CHARS) -> list[str]:
    """Pieces of at most `max_chars` characters, cut at line or sentence ends, from a str, a list or a dict (each
    dict entry under a `# key` line), so code written for a str also works on a list of documents."""
    max_chars = max(100, int(max_chars))
    if isinstance(data, dict):
        texts = [f"# {key}\n{value}" for key, value in data.items()]
    elif isinstance(data, list | tuple):
        texts = [str(item) for item in data]
    else:
        texts = [str(data)]
    return [part for text in texts for part in _cut(text, max_chars)]


def pieces(data: Any, max_chars: int = PIECE_CHARS) -> list[str]:
    """The context cut into pieces of at most `max_chars` characters, at line or sentence ends (dict keys kept);
    short records are packed together so one sub-call reads a full piece."""
    max_chars = max(200, int(max_chars))
    texts = items(data) if isinstance(data, dict | list | tuple) else [str(data)]
    return _pack([part for text in texts for part in _cut(text, max_chars)], max_chars)


def _cut(text: str, max_chars: int) -> list[str]:
    parts = []
    while len(text) > max_chars:
        cut = text.rfind("\n", max_chars // 2, max_chars)
        if cut < 0:
            cut = text.rfind(". ", max_chars // 2, max_chars) + 1
        cut = cut if cut > 0 else max_chars
        parts.append(text[:cut])
        text = text[cut:]
    if text.strip():
        parts.append(text)
    return parts


def _pack(parts: list[str], max_chars: int) -> list[str]:
    """Join small consecutive parts (short records, short files) so one sub-call reads a full piece."""
    packed: list[str] = []
    for part in parts:
        if packed and len(packed[-1]) + len(part) + 1 <= max_chars:
            packed[-1] += "\n" + part
        else:
            packed.append(part)
    return packed


def search(words: str | list[str], data: Any, window: int = SNIPPET_CHARS) -> list[str]:
    """The sentence or line around every case-insensitive match of any of `words` (at most `window` characters
    each side); dict snippets start with their key. Whole sentences, so the fact is not lost in the middle."""
    words = [words] if isinstance(words, str) else [str(w) for w in words]
    words = [w for w in words if w.strip()]
    if not words:
        return []
    pattern = re.compile("|".join(re.escape(w) for w in words), re.IGNORECASE)
    sources = data.items() if isinstance(data, dict) else enumerate(data if isinstance(data, list | tuple) else [data])
    found: list[str] = []
    for key, value in sources:
        text, last_end = str(value), -1
        for match in pattern.finditer(text):
            if match.start() < last_end:  # inside the last snippet: already shown
                continue
            start, end = _sentence_bounds(text, match.start(), match.end(), window)
            last_end = end
            prefix = f"[{key}] " if isinstance(data, dict) else ""
            found.append(prefix + text[start:end].strip().replace("\n", " "))
            if len(found) >= MAX_SNIPPETS:
                return found
    return found


_SENTENCE_END = re.compile(r"[.!?](?=\s)|\n")


def _sentence_bounds(text: str, start: int, end: int, window: int) -> tuple[int, int]:
    """From the end of the sentence (or line) before the match to the end of the one that holds it."""
    left = max(0, start - window)
    ends = [m.end() for m in _SENTENCE_END.finditer(text, left, start)]
    begin = ends[-1] if ends else left
    after = _SENTENCE_END.search(text, end, min(len(text), end + window))
    return begin, after.end() if after else min(len(text), end + window)


def is_none(answer: str) -> bool:
    return not answer.strip() or bool(NONE_WORDS.match(answer)) or answer.startswith("Error:")


def rank(query: str, data: Any, k: int = 5, max_chars: int = PIECE_CHARS) -> list[str]:
    """The `k` pieces most relevant to `query` by BM25 (no model calls): where to read first."""
    docs = pieces(data, max_chars)
    tokenised = [[w.lower() for w in _WORD.findall(d)] for d in docs]
    terms = {w.lower() for w in _WORD.findall(query) if len(w) > 2}
    avg = sum(len(t) for t in tokenised) / max(1, len(tokenised))
    df = Counter(w for t in tokenised for w in set(t) & terms)
    n = len(docs)

    def bm25(tokens: list[str]) -> float:
        counts = Counter(tokens)
        score = 0.0
        for w in terms:
            if counts[w]:
                idf = math.log(1 + (n - df[w] + 0.5) / (df[w] + 0.5))
                tf = counts[w] * 2.2 / (counts[w] + 1.2 * (0.25 + 0.75 * len(tokens) / max(avg, 1)))
                score += idf * tf
        return score

    order = sorted(range(n), key=lambda i: -bm25(tokenised[i]))
    return [docs[i] for i in order[:k]]


class Strategies:
    """The helpers bound to one worker's sub-call channel and namespace."""

    def __init__(self, batched: Callable[..., list[str]], namespace: dict[str, Any]) -> None:
        self._batched = batched
        self._namespace = namespace

    def _data(self, data: Any) -> Any:
        return self._namespace.get("context") if data is None else data

    def ask_each(self, question: str, data: Any = None, max_chars: int = PIECE_CHARS) -> list[str]:
        """Ask `question` of every piece of the data at once; answers in piece order ('NONE' where absent)."""
        return self._batched(_read_prompts(question, pieces(self._data(data), max_chars)))

    def ask_all(self, question: str, data: Any = None, max_chars: int = PIECE_CHARS) -> str:
        """One answer to `question` from the whole data: first a close look at the small pieces that share the most
        words with the question (BM25), then, if they say nothing, every piece; what was found is combined.

        Close look first: a small model reads a short, relevant piece far better than a long one, and the sub-calls
        over every piece also collect more wrong "findings" from pieces that do not hold the answer."""
        data = self._data(data)
        notes = self._read(question, rank(question, data, k=CLOSE_PIECES, max_chars=CLOSE_CHARS))
        if not notes:
            notes = self._read(question, pieces(data, max_chars))
        if not notes:
            return "NONE"  # nothing found: the loop guards refuse it as an answer
        while len(notes) > 1:
            groups = _pack([f"- {n}" for n in notes], PIECE_CHARS)
            prompts = [COMBINE_PROMPT.format(notes=g, question=question) for g in groups]
            notes = [a.strip() for a in self._batched(prompts) if not is_none(a)] or notes[:1]
            if len(groups) == 1:
                break
        return notes[0]

    def _read(self, question: str, parts: list[str]) -> list[str]:
        """What the sub-model found in each part (parts that hold nothing are left out)."""
        return [a.strip() for a in self._batched(_read_prompts(question, parts)) if not is_none(a)]

    def label_each(self, question: str, labels: list[str] | None = None, data: Any = None) -> list[str]:
        """Ask `question` of every record (line, list item or dict entry) at once; one short answer per record.

        With `labels`, each answer is mapped to one of them (or 'other'), ready for `Counter`.
        """
        records = items(self._data(data))
        choices = f" (one of: {', '.join(labels)})" if labels else ""
        answers = self._batched([LABEL_PROMPT.format(question=question, choices=choices, item=r) for r in records])
        return [_to_label(a, labels) for a in answers]

    def count_where(self, question: str, data: Any = None) -> int:
        """How many records the sub-model answers 'yes' for (`question` is a yes/no question about one record)."""
        return sum(1 for a in self.label_each(question, ["yes", "no"], data) if a == "yes")

    def where(self, question: str, data: Any = None) -> list[str]:
        """The records the sub-model answers 'yes' for."""
        records = items(self._data(data))
        flags = self.label_each(question, ["yes", "no"], data)
        return [r for r, f in zip(records, flags, strict=False) if f == "yes"]

    def helpers(self) -> dict[str, Callable[..., Any]]:
        def bind(fn: Callable[..., Any]) -> Callable[..., Any]:
            def bound(*args: Any, **kwargs: Any) -> Any:
                if "data" not in kwargs and len(args) <= _data_position(fn):
                    kwargs["data"] = self._namespace.get("context")
                return fn(*args, **kwargs)

            bound.__name__, bound.__doc__ = fn.__name__, fn.__doc__
            return bound

        return {
            "ask_each": self.ask_each,
            "ask_all": self.ask_all,
            "label_each": self.label_each,
            "count_where": self.count_where,
            "where": self.where,
            "search": bind(search),
            "rank": bind(rank),
            "items": lambda data=None: items(self._data(data)),
            "pieces": lambda data=None, max_chars=PIECE_CHARS: pieces(self._data(data), max_chars),
        }


def _read_prompts(question: str, parts: list[str]) -> list[str]:
    return [READ_PROMPT.format(question=question, piece=p) for p in parts]


def _data_position(fn: Callable[..., Any]) -> int:
    """Index of the `data` parameter, so `search("word")` reads the context and `search("word", text)` the text."""
    return fn.__code__.co_varnames.index("data")


def _to_label(answer: str, labels: list[str] | None) -> str:
    text = answer.strip().strip(".'\"*` ").lower()
    if not labels:
        return text
    lowered = [label.lower() for label in labels]
    if text in lowered:
        return labels[lowered.index(text)]
    hits = [label for label, low in zip(labels, lowered, strict=True) if re.search(rf"\b{re.escape(low)}\b", text)]
    if hits:  # the first label the answer names
        return min(hits, key=lambda label: text.find(label.lower()))
    return "other"


HELPER_NAMES = ("ask_each", "ask_all", "label_each", "count_where", "where", "search", "rank", "items", "pieces")
