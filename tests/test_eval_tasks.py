"""The seeded evaluation tasks and their scorers: determinism, sizes, gold answers recomputed from the data, and
distractors, near misses and keyword searches that must not score."""

from __future__ import annotations

import json
import re
import time
from collections import Counter, defaultdict
from itertools import combinations

import pytest

from rlm_local.eval.families import codeqa, listing, records
from rlm_local.eval.families.text import context_chars
from rlm_local.eval.scoring import Score, normalise, score_answer
from rlm_local.eval.tasks import FAMILIES, EvalTask, family_shapes, family_variants, make_task, make_tasks

SIZE = 12_000
CASES = [(f, v, s) for f in FAMILIES for v in family_variants(f) for s in family_shapes(f)]
TYPES = {"str": str, "list": list, "dict": dict}


def user_answer(task: EvalTask) -> str:
    """The gold as a person would write it."""
    if isinstance(task.gold, list):
        return "These ones: " + ", ".join(task.gold) + "."
    if isinstance(task.gold, int):
        return f"There are {task.gold} such messages."
    return f"The answer is {task.gold}."


def as_text(task: EvalTask) -> str:
    c = task.context
    return c if isinstance(c, str) else "\n".join(c.values() if isinstance(c, dict) else c)


def documents(task: EvalTask) -> list[str]:
    c = task.context
    if isinstance(c, dict):
        return list(c.values())
    if isinstance(c, list):
        return c
    return re.split(r"^### ", c, flags=re.MULTILINE)


def messages(task: EvalTask) -> list[tuple[str, str]]:
    """(user, text) of every record, whatever the shape."""
    out = []
    for line in as_text(task).split("\n"):
        day, user, text = line.split(" | ", 2)
        assert re.fullmatch(r"\d{4}-\d\d-\d\d", day) and re.fullmatch(r"user_\d{4}", user)
        out.append((user, text))
    return out


def _pattern(template: str) -> re.Pattern[str]:
    parts = re.split(r"(\{\w+\})", template)
    return re.compile("".join("(.+?)" if p.startswith("{") else re.escape(p) for p in parts), re.IGNORECASE)


PATTERNS = {label: [_pattern(t) for t in ts] for label, ts in records.TEMPLATES.items()}


def label_of(text: str, scheme: str) -> str:
    """The label of a message, recovered from the templates (independently of the generator's bookkeeping)."""
    found = {label for label in records.SCHEMES[scheme] for p in PATTERNS[label] if p.fullmatch(text)}
    assert len(found) == 1, (text, found)
    return found.pop()


def scheme_of(task: EvalTask) -> str:
    return "sentiment" if re.search(r"positive|negative|neutral|sentiment", task.query) else "topic"


# --- every family x variant x shape ------------------------------------------------------------------------------


@pytest.mark.parametrize(("family", "variant", "shape"), CASES)
def test_task_is_deterministic_sized_and_scored(family, variant, shape):
    task = make_task(family, 7, SIZE, shape, variant)
    assert task == make_task(family, 7, SIZE, shape, variant)  # context and gold byte-identical
    other = make_task(family, 8, SIZE, shape, variant)
    assert other.context != task.context and (other.query, other.gold) != (task.query, task.gold)
    assert task.task_id == f"{family}/{variant}/{shape}/{SIZE}/7"
    assert isinstance(task.context, TYPES[shape])
    assert abs(context_chars(task.context) - SIZE) <= 0.1 * SIZE
    assert "\n" not in task.query and "llm_query" not in task.query and task.query.endswith((".", "?"))

    full = score_answer(task, user_answer(task))
    assert full == Score(1.0, True)
    for empty in (None, "", "  \n"):
        assert score_answer(task, empty) == Score(0.0, False)
    for wrong in task.distractors:
        assert normalise(wrong) not in {normalise(g) for g in (task.gold if isinstance(task.gold, list) else [])}
        assert score_answer(task, f"The answer is {wrong}.").score == 0
    if task.metric in ("contains", "label") and task.distractors:
        assert score_answer(task, f"{task.gold} or {task.distractors[0]}").score == 0  # hedging does not pay
        assert score_answer(task, ", ".join([*task.distractors, str(task.gold)])).score == 0
    if task.metric == "numeric":
        off = score_answer(task, f"I count {task.gold + 3} of them.")
        assert off.score == pytest.approx(0.75**3) and not off.exact

    record = task.to_json()
    assert "context" not in record and record["context_chars"] == context_chars(task.context)
    assert json.loads(json.dumps(record))["gold"] == task.gold


@pytest.mark.parametrize("family", list(FAMILIES))
def test_gold_values_are_in_the_context(family):
    for variant in family_variants(family):
        task = make_task(family, 3, SIZE, "dict", variant)
        text = as_text(task)
        if task.metric in ("contains", "set_f1"):
            golds = task.gold if isinstance(task.gold, list) else [task.gold]
            for gold in golds:
                for part in gold.split(" & "):
                    assert re.search(rf"(?<![\w-]){re.escape(part)}(?![\w-])", text), (task.task_id, part)
        for wrong in task.distractors if family != "aggregation" else ():
            assert wrong in text  # a distractor is a plausible answer found in the data


@pytest.mark.parametrize("family", list(FAMILIES))
def test_sizes_from_the_minimum_to_two_million(family):
    assert abs(context_chars(make_task(family, 1, 1_000).context) - 8_000) <= 800  # raised to the family minimum
    for chars in (8_000, 60_000, 400_000):
        task = make_task(family, 2, chars)
        assert abs(context_chars(task.context) - chars) <= 0.1 * chars, task.task_id
    start = time.perf_counter()
    big = make_task(family, 4, 2_000_000, "list")
    assert abs(context_chars(big.context) - 2_000_000) <= 200_000
    assert time.perf_counter() - start < 5  # 400K characters take well under a second


def test_variant_and_shape_follow_the_seed_and_ids_are_unique():
    tasks = make_tasks(FAMILIES, range(15), [8_000, 9_000])
    assert len({t.task_id for t in tasks}) == len(tasks) == 5 * 15 * 2
    for family in FAMILIES:
        mine = [t for t in tasks if t.family == family]
        variants, shapes = family_variants(family), family_shapes(family)
        assert {(t.variant, t.shape) for t in mine} == {(v, s) for v in variants for s in shapes}
        first = [t for t in mine if t.seed <= max(len(variants), len(shapes))]  # a few seeds already vary both
        assert {t.shape for t in first} == set(shapes) and {t.variant for t in first} == set(variants)
        for seed in range(15):  # a seed keeps its variant and shape at every length
            assert len({(t.variant, t.shape) for t in mine if t.seed == seed}) == 1
    assert FAMILIES["needle"](3, 9_000, "list") == make_task("needle", 3, 9_000, "list")
    with pytest.raises(ValueError, match="unknown task family"):
        make_task("trivia", 0, 9_000)
    with pytest.raises(ValueError, match="no shape"):
        make_task("needle", 0, 9_000, "tuple")


# --- reading families: the answer is read, not grepped ----------------------------------------------------------


def test_record_texts_never_name_a_label_and_no_keyword_marks_one():
    for label, templates in records.TEMPLATES.items():
        assert len(templates) >= 15
        words = [set(re.findall(r"[a-z']{4,}", re.sub(r"\{\w+\}", " ", t).lower())) for t in templates]
        assert not set.intersection(*words), label  # no word is in every message of a label
    for seed in range(3):
        for variant in ("count_label", "most_common"):
            text = as_text(make_task("aggregation", seed, 30_000, "str", variant))
            for stem in records.FORBIDDEN_STEMS:
                assert not re.search(rf"\b{stem}", text, re.IGNORECASE), stem


@pytest.mark.parametrize("variant", family_variants("aggregation"))
def test_aggregation_gold_is_counted_from_the_messages(variant):
    for seed in range(4):
        task = make_task("aggregation", seed, 20_000, ("str", "list", "dict")[seed % 3], variant)
        scheme = scheme_of(task)
        counts = Counter(label_of(text, scheme) for _, text in messages(task))
        assert sum(counts.values()) >= 8 and all(60 <= len(t) <= 160 for _, t in messages(task))
        labels = records.SCHEMES[scheme]
        assert set(task.distractors) | {task.gold} == set(labels) or variant == "count_label"
        for label in labels:  # the question names a label, and no label word is in the data
            assert not re.search(rf"\b{label.split()[0]}", as_text(task), re.IGNORECASE)
        if variant == "count_label":
            asked = [label for label in labels if label.split()[0] in task.query]
            assert len(asked) == 1 and task.gold == counts[asked[0]]
        else:
            ranked = sorted(labels, key=lambda label: counts[label], reverse=variant == "most_common")
            assert task.gold == ranked[0] and abs(counts[ranked[0]] - counts[ranked[1]]) >= 2
            assert counts[ranked[0]] >= 2


@pytest.mark.parametrize("variant", family_variants("listing"))
def test_listing_gold_is_recomputed_from_the_messages(variant):
    for seed in range(4):
        task = make_task("listing", seed, 25_000, ("str", "list", "dict")[seed % 3], variant)
        rows = [(user, label_of(text, scheme_of(task))) for user, text in messages(task)]
        per_user: dict[str, list[str]] = defaultdict(list)
        for user, label in rows:
            per_user[user].append(label)
        assert 8 <= len(per_user) <= 40
        if variant == "only_label":
            tone = "positive" if "positive" in task.query else "negative"
            gold = sorted(u for u, labels in per_user.items() if set(labels) == {tone})
            near = sorted(u for u, labels in per_user.items() if labels.count(tone) == len(labels) - 1 > 0)
            assert set(task.distractors) <= set(near)
        else:
            (label,) = [k for k, phrase in listing.ABOUT.items() if phrase in task.query]
            writers = sorted(u for u, labels in per_user.items() if label in labels)
            if variant == "pairs":
                gold = [f"{a} & {b}" for a, b in combinations(writers, 2)]
            else:
                gold = sorted(u for u in writers if per_user[u].count(label) >= 2)
                assert all(per_user[u].count(label) == 1 for u in task.distractors)  # near misses
        assert task.gold == gold and 2 <= len(gold) <= 8
        assert task.distractors or variant == "pairs"
        for stem in records.FORBIDDEN_STEMS:
            assert not re.search(rf"\b{stem}", as_text(task), re.IGNORECASE)


QUESTION_WORDS = {
    "who", "won", "the", "held", "in", "came", "out", "on", "top", "at", "which", "competitor", "finished", "second",
    "was", "runner", "up", "whom", "did", "to", "it", "when", "would",
}  # fmt: skip


@pytest.mark.parametrize("variant", family_variants("multihop"))
def test_multihop_answering_report_shares_no_key_word_with_the_question(variant):
    asked_words = set()
    for seed in range(12):
        task = make_task("multihop", seed, 15_000, ("str", "list", "dict")[seed % 3], variant)
        (report,) = [d for d in documents(task) if task.gold in d]  # every person is named in one report only
        words = set(re.findall(r"[a-z]+", task.query.lower())) - QUESTION_WORDS
        asked_words |= words
        for word in words:
            assert not re.search(rf"\b{word}\b", report, re.IGNORECASE), (task.query, word)
        year = re.search(r"\b(19|20)\d\d\b", task.query).group()
        assert year in report
        others = [d for d in documents(task) if d is not report]
        assert sum(year in d for d in others) >= 2  # other events of the same year
        assert task.distractors[0] in report  # the one who came second (or first) in the asked event
        assert all(any(w in d for d in others) for w in task.distractors[1:])
    assert len(asked_words) > 15  # the questions vary


def test_needle_wording_varies_and_distractor_keys_sit_beside_it():
    wordings = set()
    for seed in range(12):
        task = make_task("needle", seed, 9_000, "str", "single")
        (sentence,) = [s for s in re.split(r"(?<=\.)\s", task.context) if task.gold in s]
        wordings.add(sentence.replace(task.gold, "X"))
    assert len(wordings) >= 5
    task = make_task("needle", 3, 9_000, "str", "distractor_keys")
    assert len(task.distractors) >= 2 and all(w in task.context for w in task.distractors)
    assert score_answer(task, f"It is {task.gold}, not {task.distractors[0]}.").score == 0


def _functions(task: EvalTask) -> dict[str, str]:
    found = re.findall(r"^def (\w+)\(.*?(?=^def |^# file: |\Z)", as_text(task), re.MULTILINE | re.DOTALL)
    bodies = re.split(r"^(?=def )", as_text(task), flags=re.MULTILINE)
    return {name: next(b for b in bodies if b.startswith(f"def {name}(")) for name in found}


def test_codeqa_who_calls_has_exactly_one_caller():
    for seed in range(6):
        task = make_task("codeqa", seed, 20_000, ("str", "list", "dict")[seed % 3], "who_calls")
        callee = re.search(r"`(\w+)`", task.query).group(1)
        functions = _functions(task)
        callers = [n for n, body in functions.items() if re.search(rf"^\s+{callee}\(", body, re.MULTILINE)]
        assert callers == [task.gold]
        assert callee in functions
        for wrong in task.distractors:  # mentions in comments, strings and docstrings, or look-alike calls
            assert callee in functions[wrong] or any(f"{a}(" in functions[wrong] for a in (f"_{callee}", callee + "s"))


def test_codeqa_which_function_names_do_not_give_the_answer_away():
    for seed in range(6):
        task = make_task("codeqa", seed, 20_000, ("str", "list", "dict")[seed % 3], "which_function")
        (key,) = [k for k, b in codeqa.BEHAVIOURS.items() if b.question in task.query]
        functions = _functions(task)
        assert all(line in functions[task.gold] for line in codeqa.BEHAVIOURS[key].body)
        assert [n for n, f in functions.items() if codeqa.BEHAVIOURS[key].body[-1] in f] == [task.gold]
        asked = re.findall(r"[a-z]+", task.query.lower())
        assert all(codeqa.unrelated(part, asked) for part in task.gold.split("_"))
        assert all(set(task.gold.split("_")) & set(w.split("_")) for w in task.distractors)  # similar names


# --- scorers ------------------------------------------------------------------------------------------------------


def _task(gold, metric, distractors=()) -> EvalTask:
    return EvalTask("t", "x", "v", "str", 0, 10, "q?", "ctx", gold, metric, tuple(distractors))


def test_contains_scorer():
    task = _task("QXT-4821", "contains", ["QXT-4822", "Mira"])
    assert score_answer(task, "the code is **qxt-4821**").exact
    assert score_answer(task, "QXT-48210").score == 0  # whole words only
    assert score_answer(task, "QXT4821").exact and score_answer(task, "QXT4821, QXT4822").score == 0
    assert score_answer(task, "QXT-4821 or QXT-4822").score == 0
    name = _task("Mira Kessel", "contains", ["Mira", "Mira Kesselring"])
    assert score_answer(name, "Mira Kessel won.").exact  # a distractor inside the gold is not a second answer
    assert score_answer(name, "Mira Kesselring").score == 0 and score_answer(name, "Mira Kessel, or Mira").score == 0
    func = _task("normalize_reading", "contains", ["normalize_readings"])
    assert score_answer(func, "`normalize_reading()`").exact and score_answer(func, "normalize_readings").score == 0


def test_numeric_scorer():
    task = _task(12, "numeric")
    assert score_answer(task, "12").exact and score_answer(task, "There are 12 records.").exact
    assert score_answer(task, "about 10").score == pytest.approx(0.75**2)
    assert score_answer(task, "twelve").score == 0
    assert score_answer(_task(1234, "numeric"), "1,234 in total").exact


def test_label_scorer():
    task = _task("product question", "label", ["billing", "shipping", "praise"])
    assert score_answer(task, "Product_Question").exact
    assert score_answer(task, "The most common topic is product question.").exact
    assert score_answer(task, "product question, then billing").score == 0
    assert score_answer(task, "billing").score == 0
    assert score_answer(_task("positive", "exact"), "Label: positive").exact


def test_set_f1_scorer():
    task = _task(["QXT-4821", "ABD-1111", "ZZZ-0000"], "set_f1")
    assert score_answer(task, "- QXT-4821\n- ABD-1111\n- ZZZ-0000").exact
    assert score_answer(task, "['ZZZ-0000', 'QXT-4821', 'ABD-1111']").exact
    assert score_answer(task, "The codes are QXT-4821; ABD-1111 and ZZZ-0000.").exact
    partial = score_answer(task, "QXT-4821, ABD-1111, WRONG-9")
    assert partial.score == pytest.approx(2 / 3) and not partial.exact
    assert score_answer(task, "none").score == 0


def test_pair_scorer_ignores_order_within_a_pair():
    task = _task(["user_0001 & user_0002", "user_0001 & user_0003"], "set_f1")
    assert score_answer(task, "user_0002 & user_0001, user_0003 and user_0001").exact
    assert score_answer(task, "[('user_0003', 'user_0001'), ('user_0001', 'user_0002')]").exact
    assert score_answer(task, "(user_0001, user_0002)\n(user_0001, user_0009)").score == pytest.approx(0.5)


def test_choice_scorer():
    task = _task("C", "choice")
    assert score_answer(task, "The answer is (C).").exact and score_answer(task, "C").exact
    assert score_answer(task, "B").score == 0
