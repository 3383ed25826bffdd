"""Scoring an answer against a task's gold, by the task's metric.

- contains: the gold value appears (as whole words, after normalising) and no distractor does, so an answer that
  lists every candidate scores 0;
- numeric: the first integer of the answer, 0.75 ** |error| as in OOLONG;
- label: exactly one of the task's labels (gold and distractors) appears, and it is the gold;
- set_f1: items parsed from the answer (commas, lines, "and", a Python list), F1 against the gold set; pairs
  ("a & b") are compared unordered;
- exact (data sets): the normalised answer is, or ends with, the gold; choice: the letter chosen (A-D).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rlm_local.eval.tasks import EvalTask

NUMERIC_BASE = 0.75
_NON_WORD = re.compile(r"[^0-9a-z]+")
_INTEGER = re.compile(r"(?<![\d.])-?\d{1,3}(?:,\d{3})+(?!\d)|-?\d+")
_SPLIT = re.compile(r"\s*(?:[,;\n]|\band\b)\s*", re.IGNORECASE)
_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+")


@dataclass(frozen=True)
class Score:
    score: float  # 0..1
    exact: bool


ZERO = Score(0.0, False)


def normalise(text: str) -> str:
    """Casefolded words separated by single spaces: punctuation, underscores and whitespace runs become one space."""
    return _NON_WORD.sub(" ", text.casefold()).strip()


def has_phrase(text: str, phrase: str) -> bool:
    """`phrase` occurs in `text` as whole words (both already normalised)."""
    return bool(phrase) and f" {phrase} " in f" {text} "


def score_answer(task: EvalTask, answer: str | None) -> Score:
    if answer is None or not str(answer).strip():
        return ZERO
    answer = str(answer)
    metric, gold = task.metric, task.gold
    if metric == "set_f1" or isinstance(gold, list):
        return score_set(answer, [str(g) for g in gold] if isinstance(gold, list) else [str(gold)])
    if metric == "numeric":
        return score_numeric(answer, int(gold))
    if metric == "label":
        return score_label(answer, str(gold), task.distractors)
    if metric == "exact":
        return score_exact(answer, str(gold))
    if metric == "choice":
        return score_choice(answer, str(gold))
    return score_contains(answer, str(gold), task.distractors)


def _full(ok: bool) -> Score:
    return Score(1.0, True) if ok else ZERO


def _forms(phrase: str) -> tuple[str, ...]:
    """A code may be written without its separators ("QXT4821" for "QXT-4821")."""
    compact = phrase.replace(" ", "")
    return (phrase, compact) if compact != phrase and any(c.isdigit() for c in phrase) else (phrase,)


def mentions(text: str, phrase: str) -> bool:
    return any(has_phrase(text, form) for form in _forms(phrase))


def score_contains(answer: str, gold: str, distractors: tuple[str, ...] = ()) -> Score:
    text, want = normalise(answer), normalise(gold)
    if not mentions(text, want):
        return ZERO
    rest = f" {text} "
    for form in _forms(want):
        rest = rest.replace(f" {form} ", " | ")  # a distractor inside the gold value is not a second answer
    for wrong in map(normalise, distractors):
        if mentions(rest if mentions(want, wrong) else text, wrong):
            return ZERO
    return Score(1.0, True)


def first_integer(answer: str) -> int | None:
    match = _INTEGER.search(answer)
    return int(match.group().replace(",", "")) if match else None


def score_numeric(answer: str, gold: int) -> Score:
    value = first_integer(answer)
    if value is None:
        return ZERO
    return Score(NUMERIC_BASE ** abs(value - gold), value == gold)


def score_label(answer: str, gold: str, others: tuple[str, ...]) -> Score:
    if not others:
        return score_exact(answer, gold)
    text = normalise(answer)
    found = {label for label in (gold, *others) if has_phrase(text, normalise(label))}
    return _full(found == {gold})


def score_exact(answer: str, gold: str) -> Score:
    text, want = normalise(answer), normalise(gold)
    return _full(bool(want) and (text == want or text.endswith(f" {want}")))


def score_choice(answer: str, gold: str) -> Score:
    """The letter chosen: "(C)", "answer is C", "C." or a lone C; the last one named counts."""
    letters = re.findall(r"\(([A-D])\)", answer) or re.findall(r"(?i:answer)\s*(?:is|:)?\s*\(?([A-D])\b", answer)
    letters = letters or re.findall(r"(?<![A-Za-z'])([A-D])(?![A-Za-z'])", answer.strip())
    return _full(bool(letters) and letters[-1] == gold.strip().upper())


def score_set(answer: str, gold: list[str]) -> Score:
    pairs = any("&" in g for g in gold)
    want = {_pair(g) for g in gold} if pairs else {normalise(g) for g in gold}
    got = _answer_pairs(answer, gold) if pairs else _answer_items(answer, want)
    if not want or not got:
        return ZERO
    hits = len(want & got)
    if not hits:
        return ZERO
    precision, recall = hits / len(got), hits / len(want)
    f1 = 2 * precision * recall / (precision + recall)
    return Score(f1, want == got)


def _pair(item: str) -> str:
    return " & ".join(sorted(normalise(part) for part in item.split("&")))


def _literal_lines(answer: str) -> str:
    """A Python list or tuple literal becomes one item a line (tuples as "a & b"); anything else is left as it is."""
    text = answer.strip().strip("`").removeprefix("python").strip()
    if text[:1] in "[(" and text[-1:] in "])":
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return answer
        if isinstance(value, list | tuple | set):
            return "\n".join(" & ".join(map(str, v)) if isinstance(v, list | tuple) else str(v) for v in value)
    return answer


def _answer_items(answer: str, want: set[str]) -> set[str]:
    """Items split on commas, semicolons, lines and "and", stripped of bullets, quotes and brackets, normalised. An
    item holding exactly one gold value among other words ("The users are user_0003") counts as that value."""
    items = set()
    for raw in _SPLIT.split(_literal_lines(answer)):
        item = normalise(_BULLET.sub("", raw))
        if not item:
            continue
        inside = [w for w in want if has_phrase(item, w)]
        items.add(inside[0] if len(inside) == 1 else item)
    return items


def _answer_pairs(answer: str, gold: list[str]) -> set[str]:
    """Pairs of ids in answer order, per line: the tokens shaped like the gold's members ("user_0421": letters, then
    digits), taken two by two; "a & b", "(a, b)", "a and b" all read the same, in either order."""
    members = {m.strip() for g in gold for m in g.split("&")}
    shapes = {re.sub(r"\d+", r"\\d+", re.escape(m.casefold())) for m in members}
    token = re.compile(r"(?<![\w])(?:" + "|".join(sorted(shapes)) + r")(?![\w])")
    pairs = set()
    for line in re.split(r"[\n;]", _literal_lines(answer).casefold()):
        found = token.findall(line)
        pairs |= {_pair(f"{a} & {b}") for a, b in zip(found[::2], found[1::2], strict=False)}
    return pairs
