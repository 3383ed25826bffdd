"""Loop guards: host-side checks for the mistakes small root models make (measured on Qwen2.5-Coder 0.5B/1.5B).

They answer from a search that matched nothing, answer before looking at the data, give `None` or an error string
as the answer, call str functions on a list or dict `context`, forget imports, and repeat one cell until the turns
run out. Every guard is off with `RLMConfig.guards=False`, so an ablation can measure them.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field

from rlm_local import prompts
from rlm_local._sandbox import rlm_helpers  # the REPL helpers (standard library only)
from rlm_local.parsing import extract_code_blocks, find_final
from rlm_local.repl.session import CellResult

# Run in the REPL before the first cell (and after a worker restart): the modules small models forget to import.
PREIMPORT_CODE = "import collections, itertools, json, math, re\nfrom collections import Counter, defaultdict"
# REPL helpers that read `context` when given no data, so calling them counts as looking at the data.
DATA_HELPERS = frozenset(rlm_helpers.HELPER_NAMES)
PREMATURE_REFUSALS = 2  # an answer given before any data was seen is refused this often, then taken
RESAMPLE_CANDIDATES = 4
MAX_PRINTED = 1_000_000  # how much of the run's printed output an answer is looked up in
RESAMPLE_TEMPERATURE = 0.7

_EMPTY = frozenset({"", "[]", "{}", "()", "set()", "''", '""'})
# Answers copied from the prompt's own wording ("FINAL(your answer)") rather than found in the data.
_PLACEHOLDERS = frozenset({"your answer", "answer", "the answer", "final answer", "...", "…", "<answer>"})
_IMPORTS = {
    **{m: f"import {m}" for m in ("re", "json", "math", "collections", "itertools", "os", "string", "statistics")},
    **{m: f"import {m}" for m in ("functools", "heapq", "datetime", "random", "textwrap", "difflib", "operator")},
    **{n: f"from collections import {n}" for n in ("Counter", "defaultdict", "OrderedDict", "namedtuple", "deque")},
    **{n: f"from itertools import {n}" for n in ("chain", "groupby", "islice", "combinations", "product")},
}
_COMMON_LITERALS = frozenset({"none", "null", "true", "false", "yes", "no", "answer"})
_NAME_ERROR = re.compile(r"NameError: name '(\w+)' is not defined")
_HELPER_TYPE_ERROR = re.compile(r"TypeError: .*?\b_?(llm_query_batched|llm_query|llm_choose|rlm_query|split_text)\(\)")


def non_answer(answer: str) -> str | None:
    """Why `answer` is no answer (None, empty, an error string, a traceback), as a note for the model; else None."""
    text = answer.strip()
    if text in _EMPTY:
        return prompts.NON_ANSWER_NOTES["empty"]
    if text.casefold() in ("none", "null"):
        return prompts.NON_ANSWER_NOTES["none"]
    if text.casefold().strip("()[]<>") in _PLACEHOLDERS:
        return prompts.NON_ANSWER_NOTES["placeholder"]
    if text.startswith("Error:"):
        return prompts.NON_ANSWER_NOTES["error"]
    if "Traceback (most recent call last)" in text:
        return prompts.NON_ANSWER_NOTES["traceback"]
    if text.casefold().strip(" ()'\"") in _RUNTIME_TEXT:
        return prompts.NON_ANSWER_NOTES["runtime"]
    return None


_ID_LIKE = re.compile(r"\b(?=\w*[A-Za-z])(?=\w*\d)\w{3,}\b")  # letters and digits in one word: cust_17, A113
_RUNTIME_TEXT = frozenset(t.casefold().strip(" ()") for t in (prompts.NO_OUTPUT, prompts.NO_CODE_RUN))
# "Which access codes appear ...?" asks for "access codes": the words between the question word and the verb.
_ASKED_THING = re.compile(
    r"^\W*(?:which|what)\s+((?:[a-z][\w-]*\s+){0,3}?[a-z][\w-]*)\s+"
    r"(?:appear|appears|are|is|were|was|do|does|did|can|have|has|occur|occurs|show up|turn up|come up)\b",
    re.IGNORECASE,
)


def asked_thing(query: str) -> str:
    """What a "which X appear" question asks for, in its own words ("access codes"), for a note the model can act
    on: told "the values", a 0.5B searched the data for the word "values" (session 19 and 20)."""
    found = _ASKED_THING.search(query)
    return found.group(1).lower() if found else "things it names"


def echoes_query(answer: str, query: str) -> bool:
    """The answer is only words of the question ("2019" for "...held in 2019?", "convert distance kilometres miles"
    for "...the function that converts a distance in kilometres to miles?"): the question restated, not answered.
    Not for questions that offer options ("billing or shipping?"): there the answer is one of them."""
    text = " ".join(answer.casefold().split()).strip(" .'\"")
    asked = " ".join(query.casefold().split())
    words = _content_stems(text)
    restated = text in asked or (bool(words) and words <= _content_stems(asked))
    return bool(text) and restated and not re.search(r"\bor\b|\byes\b|\bno\b", asked)


_NUMBER_WORDS = r"\b(zero|none|no|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|dozen|hundred)\b"


# "Which codes appear ...?", "What are the names ...?": a question for several things by name.
_ASKS_FOR_NAMES = re.compile(
    r"^(which|what)\b.*\b\w+s (appear|are|were|occur)\b|^(which|what) (are|were) the( \w+)? \w+s\b"
)


def asks_for_several(query: str) -> bool:
    return bool(_ASKS_FOR_NAMES.search(query.strip().casefold()))


# A file name or path as the answer ("reports/handler_tasks.py"), and questions that may ask for one.
_PATH = re.compile(r"[\w.\-]+(/[\w.\-]+)+|[\w\-]+\.[a-z]{1,5}")
_ASKS_FOR_FILES = re.compile(r"\b(files?|documents?|docs?|paths?|folders?|directory|modules?|pages?|keys?|sources?)\b")


_WH_WORD = re.compile(r"\b(who|whom|whose|what|which|how|when|where|why)\b")
# The options a question lists at its end: "...: billing, shipping or returns?", "... (red, green or blue)?"
_OPTIONS = re.compile(r"[:(]\s*([^:()?]+?\bor\b[^:()?]+?)\s*[)?.]*\s*$")


def answer_options(query: str) -> tuple[str, ...]:
    """The options a question lists at its end ("...: billing, shipping or returns?"), if any."""
    match = _OPTIONS.search(query)
    if not match:
        return ()
    parts = re.split(r",\s*|\s+or\s+", match.group(1))
    options = tuple(p.strip(" .'\"") for p in parts if p.strip(" .'\""))
    return options if 2 <= len(options) <= 12 and all(len(o) <= 40 for o in options) else ()


def wrong_kind(answer: str, query: str) -> str | None:
    """The kind of answer the question asks for (a key of `prompts.WRONG_KIND_NOTES`) when `answer` is not of it;
    None when it is: no number for "how many", only a number for "who" or for "which codes appear" (measured: a
    0.5B counted the records that mention codes and answered '2'), a file's name where the question asks for no file
    (a 1.5B answered the file that `rank` printed first for "which function"), none of the options the question
    lists (a 1.5B iterated over a string and answered its letters)."""
    asked, text = query.strip().casefold(), answer.strip().casefold()
    options = answer_options(query)
    if options and not any(option.casefold() in text for option in options):
        return "options"  # the question lists its options and the answer names none of them
    parts = [part.strip() for part in text.split(",")]
    if all(_PATH.fullmatch(p) and not re.search(r"\d", p) for p in parts) and not _ASKS_FOR_FILES.search(asked):
        return "file"  # one file name, or a list of them
    if re.match(r"(how many|how much)\b", asked):
        return None if re.search(r"\d", text) or re.search(_NUMBER_WORDS, text) else "number"
    if not re.fullmatch(r"[\d\W_]+", text):
        return None
    first_wh = _WH_WORD.search(asked)  # "In 2004, who won ...?" asks "who" too; "How many people who ...?" does not
    if first_wh and first_wh.group(1) in ("who", "whom", "whose"):
        return "name"
    return "values" if asks_for_several(query) else None


def error_hint(error: str, context_type: str) -> str | None:
    """A one-line hint for a traceback small models often cause, chosen from its last line and the context type."""
    lines = error.strip().splitlines()
    last = lines[-1] if lines else ""
    if helper := _HELPER_TYPE_ERROR.search(last):
        return prompts.SIGNATURE_HINT.format(signature=prompts.HELPER_SIGNATURES[helper.group(1)])
    if context_type in prompts.NOT_STR_HINTS and _treated_as_str(last, context_type):
        return prompts.NOT_STR_HINTS[context_type]
    if (name := _NAME_ERROR.search(last)) and name.group(1) in _IMPORTS:
        return prompts.IMPORT_HINT.format(statement=_IMPORTS[name.group(1)])
    return None


def _treated_as_str(last: str, type_name: str) -> bool:
    """The error of a str method, an `re` function, or str concatenation used on a list or dict."""
    if f"'{type_name}' object has no attribute" in last or f'(not "{type_name}")' in last:
        return True
    if "expected string or bytes-like object" in last:
        return "got '" not in last or f"got '{type_name}'" in last
    return type_name == "dict" and ("unhashable type: 'slice'" in last or bool(re.match(r"KeyError: -?\d+$", last)))


def string_literals(code: str) -> set[str]:
    """The str constants of a cell of at least 4 characters: the search words and questions it was written for."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return set()
    return {
        n.value
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and len(n.value) >= 4
    }


def _content_stems(text: str) -> set[str]:
    """Words of more than 3 letters cut to 5, so "tickets" meets "ticket" and "signing" meets "sign-in"."""
    return {w.casefold()[:5] for w in re.findall(r"[A-Za-z]{4,}", text)} - _FUNCTION_WORDS


_FUNCTION_WORDS = frozenset({"what", "which", "where", "when", "there", "these", "those", "their", "about", "answe"})


def _names(code: str) -> tuple[set[str], set[str], set[str]]:
    """Names a cell reads, names it binds, and the plain names it calls."""
    read: set[str] = set()
    bound: set[str] = set()
    called: set[str] = set()
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return read, bound, called
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (read if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            bound.add(node.name)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            called.add(node.func.id)
    return read, bound, called


# What a cell prints when it found nothing: it has not seen the data yet (measured: a 1.5B root printed `[]` from a
# search, then answered with the question's words). Not `0`: a count over every record can be zero.
_NOTHING_PRINTED = frozenset({"", "[]", "{}", "()", "set()", "''", '""', "None", "NONE"})


@dataclass
class LoopGuards:
    """What one run has tried and seen, and the checks made from it. With `enabled` False only the repeated-code
    note (older than the guards) is kept."""

    enabled: bool
    context_type: str
    seen_code: set[str] = field(default_factory=set)
    refused: set[str] = field(default_factory=set)  # FINAL values refused as non-answers, as written and as read
    data_names: set[str] = field(default_factory=lambda: {"context"})  # `context` and names bound from it
    saw_data: bool = False  # a cell that read the data ran without error and printed something
    premature: int = 0
    example_refusals: int = 0
    printed: str = ""  # what the run's cells printed (casefolded, the last MAX_PRINTED characters)
    query: str = ""
    echo_refused: bool = False
    kind_refused: bool = False
    example_text: str = ""  # the worked examples' turns (questions, code, outputs), casefolded

    def learn_examples(self, turns: list[str]) -> None:
        """Remember the worked examples, to spot a cell that copies one instead of working on this question."""
        self.example_text += "\n".join(turns).casefold()

    def copies_example(self, blocks: list[str]) -> bool:
        """A cell searches for or asks about a worked example's words instead of the question's: a string in it
        is written in an example and shares no word with this question (measured: a 1.5B root re-ran the
        ticket-counting example, 34 sub-calls, for "What is the garage code?", and asked `ask_all` the hotel
        example's question about a code base)."""
        return any(self.from_example(s) for block in blocks for s in string_literals(block))

    def from_example(self, text: str) -> bool:
        """`text` is written in the worked examples, not in what this run printed, is not one plain word, and shares
        no word with the question; a list counts with each item once (a 0.5B answered the example's "cust_17,
        cust_88" twice over for "which access codes appear?")."""
        items = ", ".join(dict.fromkeys(item.strip() for item in text.split(",")))
        return self._written_in_examples(text.strip()) or self._written_in_examples(items)

    def _written_in_examples(self, text: str) -> bool:
        stems = _content_stems(text)
        return (
            self.enabled
            and bool(self.example_text)
            and len(text) >= 4
            and text.casefold() not in _COMMON_LITERALS
            and bool(re.search(r"[A-Za-z]", text))
            and text.casefold() in self.example_text
            and text.casefold() not in self.printed
            and not stems & _content_stems(self.query)
            and (len(stems) >= 2 or bool(re.search(r"\b[A-Z][a-z]{3,}", text)) or bool(_ID_LIKE.search(text)))
        )

    def ran_before(self, blocks: list[str]) -> bool:
        return any(block in self.seen_code for block in blocks)

    def is_retry(self, reply: str) -> bool:
        """The reply only re-runs cells already run, copies a worked example, or repeats a FINAL already refused
        as a non-answer."""
        blocks = extract_code_blocks(reply)
        if blocks:
            return self.copies_example(blocks) or all(block in self.seen_code for block in blocks)
        final = find_final(reply)
        return final is not None and (final.value in self.refused or self.from_example(final.value))

    def is_fresh(self, reply: str) -> bool:
        """A re-sampled reply worth taking: it has code or a FINAL, and repeats nothing already tried."""
        return bool(extract_code_blocks(reply) or find_final(reply)) and not self.is_retry(reply)

    def observe(self, code: str, result: CellResult) -> None:
        """Note whether this cell looked at the data: it read `context` (or a name bound from it, or called a
        helper that reads it), ran without error and printed something."""
        self.printed = (self.printed + result.stdout.casefold())[-MAX_PRINTED:]
        read, bound, called = _names(code)
        if read & self.data_names or called & DATA_HELPERS:
            self.data_names |= bound
            if not result.error and result.stdout.strip() not in _NOTHING_PRINTED:
                self.saw_data = True

    def refuse(self, answer: str, written: str | None) -> str | None:
        """A note refusing `answer` (`written`: the FINAL's text, None for a FINAL in code), or None to take it."""
        if not self.enabled:
            return None
        if why := non_answer(answer):
            self.refused.update(v for v in (answer.strip(), written) if v is not None)
            return why
        if self.from_example(answer) and self.example_refusals < PREMATURE_REFUSALS:
            self.example_refusals += 1  # a model that insists is believed in the end, as below
            return prompts.EXAMPLE_ANSWER_NOTE
        if not self.saw_data and self.premature < PREMATURE_REFUSALS:
            self.premature += 1  # a model that insists is believed in the end: no deadlock
            return prompts.NO_DATA_NOTE
        if not self.echo_refused and echoes_query(answer, self.query):
            self.echo_refused = True  # once: the question's own words can be the answer ("Which year, 2019?")
            return prompts.ECHO_NOTE
        if not self.kind_refused and (kind := wrong_kind(answer, self.query)):
            self.kind_refused = True  # once, like the echo
            return prompts.WRONG_KIND_NOTES[kind].format(asked=asked_thing(self.query))
        return None

    def kind_ignored(self, answer: str) -> bool:
        """`answer` is of the wrong kind after the note about it was shown once (so `refuse` takes it now)."""
        return self.enabled and self.kind_refused and wrong_kind(answer, self.query) is not None

    def hint(self, error: str) -> str | None:
        return error_hint(error, self.context_type) if self.enabled else None
