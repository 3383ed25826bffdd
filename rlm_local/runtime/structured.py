"""Structured mode (after λ-RLM): a plan, then a fixed split/map/filter/reduce program runs.

Small models write the wrong code more often than they answer a narrow question wrongly. Here the model is only
asked narrow questions: the task type comes from the question's form (or one classifying call), one call phrases a
question about one record, and the runtime
runs the matching program with the REPL's strategy helpers, so model calls happen only at the leaves and the cost
is known before anything runs (pieces or records, plus a few combining calls). The program runs in the run's own
REPL, so the trajectory shows it like any code turn.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from rlm_local.runtime.guards import answer_options

if TYPE_CHECKING:
    from rlm_local.repl.session import ReplSession
    from rlm_local.runtime.run import Outcome, RLMRun

# The task type from the question's form where English makes it plain ("how many", "most common", "which users"),
# and from the sub-model where it does not. Measured on a 0.5B planner: asked to classify and rephrase in one call,
# it called a "most common" question a lookup and copied the question as the per-record question; split into
# narrow steps (rules for the form, one call to rephrase, one to classify) each step is right far more often.
_COUNT = re.compile(r"\bhow many\b|\bcount (the|all|every)\b|\bnumber of\b", re.IGNORECASE)
_MOST = re.compile(r"\b(most|more)\s+(common|frequent|often|popular)\b|\bmost of (the|these)\b", re.IGNORECASE)
_LEAST = re.compile(r"\b(least|fewest|less)\s+(common|frequent|often|popular)?\b|\brarest\b", re.IGNORECASE)
_LIST = re.compile(
    r"^\s*(which|list|name|give|what are the|who are the)\b.*\b(users|customers|people|members|clients|ids|pairs|"
    r"accounts|authors|senders|writers|employees|students|players|teams|drivers|patients|buyers|sellers)\b"
    r"|\b(all|every|each) (the )?(users?|customers?|pairs?|people|person)\b"
    r"|^\s*who\b.*\b(more than (once|twice|\w+ times)|at least (twice|\w+ times)|or more (times|occasions)|ids)\b",
    re.IGNORECASE,
)

# Instructions with a one-word or one-line reply: a 0.5B chat model does not continue few-shot patterns (it echoed
# them), but it follows a direct instruction.
CLASSIFY_PROMPT = """Question: {query}

To answer this question, is it enough to find ONE fact written somewhere in a text (reply A), or must many \
separate records be checked and the matching ones collected (reply B)? Reply with the letter A or B only."""

REWRITE_PROMPT = """Question about a large collection of records: {query}

Write the yes/no question to ask about ONE record to decide whether that record counts for this question. For \
example, for "How many reviews complain about the battery?" write: Does this review complain about the battery? \
Reply with that one question only."""

LABEL_QUESTION = "Which of these best describes this record: {options}?"

# "Which users ... at least twice / only ever / never": the records are read one by one and grouped by person, so
# the question about one record must leave out how often or whether always (asked of one record, "at least twice"
# gets "no" everywhere: measured, a 1.5B root put it there in 1 of 3 listing runs).
PERSON_REWRITE_PROMPT = """Question about the people in a collection of records: {query}

Write the yes/no question to ask about ONE record on its own (not the person's other records) to decide whether \
that record counts. For example, for "Which customers complained about the battery more than once?" write: Does \
this record complain about the battery? Reply with that one question only."""

# "Which function calls `parse_row`?", "Where is `flush()` called from?": a code question with one right program
# (`callers`: the code is parsed, so a mention in a comment, a string or a look-alike name is not a call). Measured:
# a 1.5B root searched for the name instead and answered the look-alike `_write_task` (docs/eval/README.md, s17).
_CALLS = re.compile(
    r"\b(?:calls?|invokes?|invoking|calling)\b|\b(?:called|invoked|used)\b.*\b(?:from|by|in|where)\b"
    r"|\b(?:where|which|what)\b.*\b(?:called|invoked)\b",
    re.IGNORECASE,
)
_CODE_NAME = re.compile(r"`([A-Za-z_][\w.]*)(?:\(\))?`|\b([A-Za-z_][\w.]*)\(\)|\b([a-z]+(?:_[a-z]+)+|[a-z]+[A-Z]\w*)\b")


def called_name(query: str) -> str | None:
    """The function a question asks the callers of ("Which function calls `write_task`?"), or None."""
    if not _CALLS.search(query):
        return None
    found = _CODE_NAME.search(query)
    return next(g for g in found.groups() if g) if found else None


# "Which function converts kilometres to miles?", "I'm looking for the function that ... What is it called?": a
# function asked for by what it does (`find_function`: every function scored by the sub-model, the likeliest taken).
# Measured: a 1.5B root searched for the question's words, found nothing and answered them (docs/eval/README.md,
# session 18).
_FIND_FUNCTION = re.compile(
    r"\b(?:which|what)\s+(?:\w+\s+)?(?:function|method)\b|\bthe\s+(?:function|method)\s+(?:that|which)\b"
    r"|\b(?:function|method)\b[^?]*\b(?:which one|what is it called|what's it called)\b",
    re.IGNORECASE,
)
_ASKS_WHAT_IT_DOES = re.compile(r"\bwhat (?:does|do|did)\b", re.IGNORECASE)


def asks_for_function(query: str) -> bool:
    """The question asks which function in code does something (not who calls one, nor what one does)."""
    return bool(_FIND_FUNCTION.search(query)) and not _ASKS_WHAT_IT_DOES.search(query) and called_name(query) is None


_NUMBER = {"once": 1, "twice": 2, "thrice": 3, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6}
_N = r"(once|twice|thrice|\d+|one|two|three|four|five|six)(?: times)?"
_EXACTLY = re.compile(rf"\b(?:exactly|only|just) {_N}\b", re.IGNORECASE)
_MORE_THAN = re.compile(rf"\bmore than {_N}\b", re.IGNORECASE)
_AT_LEAST = re.compile(rf"\bat least {_N}\b|(?:\b(?:on|in) )?\b{_N} or more\b(?: (?:times|occasions))?", re.IGNORECASE)
_REPEATEDLY = re.compile(r"\b(?:repeatedly|(?:multiple|several|many) times)\b", re.IGNORECASE)
_NEVER_OTHER = re.compile(
    r"\bnever (\w+) (?:anything|something|a \w+) (?:that|which) (?:wasn't|was not|isn't|is not|weren't)\b",
    re.IGNORECASE,
)
_ALL = re.compile(
    r"\bonly(?: ever)?\b|\bexclusively\b|\balways\b|\bnothing but\b|\b(?:were|was|are) all\b"
    r"|\ball of (?:their|his|her|its)\b",
    re.IGNORECASE,
)
_NEVER = re.compile(r"\bnever(?: once)?\b|\bnot once\b", re.IGNORECASE)
_PAIRS = re.compile(r"\bpairs?\b", re.IGNORECASE)
_PEOPLE = re.compile(
    r"\b(users?|customers?|people|persons?|members?|clients?|accounts?|authors?|senders?|writers?|employees?|"
    r"students?|players?|patients?|buyers?|sellers?|drivers?|who)\b",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class PersonRule:
    """Which people a per-person question keeps, from how many of their records count ("yes") and how many not."""

    rule: str  # "any", "at_least", "exactly", "all" or "none"
    times: int = 1
    pairs: bool = False  # the answer is every pair of the people kept

    def keeps(self, yes: int, no: int) -> bool:
        if self.rule == "all":
            return yes >= 1 and no == 0
        if self.rule == "none":
            return yes == 0
        if self.rule == "exactly":
            return yes == self.times
        return yes >= self.times


def person_rule(query: str) -> tuple[PersonRule, str]:
    """The rule a question about people states in its words ("at least twice", "only ever", "never"), and the
    question without those words (for phrasing the question about one record)."""
    pairs = bool(_PAIRS.search(query))
    for pattern, rule, extra in ((_EXACTLY, "exactly", 0), (_MORE_THAN, "at_least", 1), (_AT_LEAST, "at_least", 0)):
        found = pattern.search(query)
        if found:
            word = next(g for g in found.groups() if g).lower()
            times = int(word) if word.isdigit() else _NUMBER[word]
            return PersonRule(rule, times + extra, pairs), _without(query, found)
    found = _REPEATEDLY.search(query)
    if found:
        return PersonRule("at_least", 2, pairs), _without(query, found)
    found = _NEVER_OTHER.search(query)
    if found:
        return PersonRule("all", 1, pairs), query[: found.start()] + found.group(1) + query[found.end() :]
    found = _ALL.search(query)
    if found:
        return PersonRule("all", 1, pairs), _without(query, found)
    found = _NEVER.search(query)
    if found:
        return PersonRule("none", 1, pairs), _without(query, found)
    return PersonRule("any", 1, pairs), query


def _without(query: str, found: re.Match[str]) -> str:
    """The query without the matched words ("were all" keeps its verb), spaces tidied."""
    verb = re.match(r"(were|was|are) all\b", found.group(0), re.IGNORECASE)
    kept = query[: found.start()] + (verb.group(1) if verb else "") + query[found.end() :]
    return re.sub(r"\s+([?.,;])", r"\1", re.sub(r"\s{2,}", " ", kept)).strip()


@dataclass(frozen=True)
class Plan:
    task_type: str  # LOOKUP, COUNT, MOST, LEAST, LIST, CALLERS or FUNCTION
    record_question: str  # CALLERS: the function's name; FUNCTION: the question
    labels: tuple[str, ...] = ()
    people: PersonRule | None = None  # LIST about people: records grouped by `writers()`, kept by this rule
    about_one: str = ""  # LIST about people: the question without the rule's words, for `categories()`


def question_form(query: str) -> str | None:
    """The task type when the question's form says it; None when a model must decide."""
    if _COUNT.search(query):
        return "COUNT"
    options = answer_options(query)
    if options and _MOST.search(query):
        return "MOST"
    if options and _LEAST.search(query):
        return "LEAST"
    if _LIST.search(query):
        return "LIST"
    return None


def record_question(reply: str, query: str) -> str:
    """The rewritten yes/no question; the query itself, made a yes/no question, if the reply is unusable."""
    line = reply.strip().split("\n", 1)[0].strip()
    echoed = re.search(r"\bONE record\b|\byes/no question\b", line, re.IGNORECASE)  # the instructions copied
    if echoed or not line.endswith(("?", "no.", "no")) or line.rstrip("?. ").lower() == query.rstrip("?. ").lower():
        return f"Does this record help answer: {query} Answer yes or no."
    return line if "yes or no" in line.lower() else f"{line} Answer yes or no."


async def make_plan(run: RLMRun) -> Plan:
    """Rules for the question's form, then at most two narrow sub-calls (classify, rephrase)."""
    query = run.query
    name = called_name(query)
    if name is not None:
        return Plan("CALLERS", name)  # no sub-call: the code is parsed
    if asks_for_function(query):
        return Plan("FUNCTION", query)
    task_type = question_form(query)
    if task_type is None:
        reply = await run.ask_sub_model(CLASSIFY_PROMPT.format(query=query), max_tokens=4)
        task_type = "LIST" if reply.strip().upper().startswith("B") else "LOOKUP"
    if task_type in ("MOST", "LEAST"):
        options = answer_options(query)
        return Plan(task_type, LABEL_QUESTION.format(options=", ".join(options)), options)
    if task_type == "LOOKUP":
        return Plan(task_type, query)
    if task_type == "LIST" and _PEOPLE.search(query):
        people, about_one = person_rule(query)
        reply = await run.ask_sub_model(PERSON_REWRITE_PROMPT.format(query=about_one), max_tokens=48)
        return Plan(task_type, record_question(reply, about_one), people=people, about_one=about_one)
    reply = await run.ask_sub_model(REWRITE_PROMPT.format(query=query), max_tokens=48)
    return Plan(task_type, record_question(reply, query))


def program(plan: Plan, query: str) -> str:
    """The REPL code for a plan: helper calls only, ending in FINAL."""
    q, rq, labels = json.dumps(query), json.dumps(plan.record_question), json.dumps(list(plan.labels))
    if plan.task_type == "CALLERS":
        answer = "len(found)" if _COUNT.search(query) else '", ".join(found)'
        return f"found = callers({rq})\nprint(found)\nif found:\n    FINAL({answer})"
    if plan.task_type == "FUNCTION":
        return f"found = find_function({rq})\nprint(found)\nif found != 'NONE':\n    FINAL(found)"
    if plan.task_type == "COUNT":
        return f"answer = count_where({rq})\nprint(answer)\nFINAL(answer)"
    if plan.task_type in ("MOST", "LEAST"):
        pick = "counts[0][0]" if plan.task_type == "MOST" else "counts[-1][0]"
        return (
            f"labels = {labels}\n"
            f"found = Counter(label_each({rq}, labels))\n"
            "counts = sorted(((k, found.get(k, 0)) for k in labels), key=lambda kv: -kv[1])\n"
            f"print(counts)\nFINAL({pick})"
        )
    if plan.task_type == "LIST" and plan.people is not None:
        return _per_person_program(plan.people, json.dumps(plan.about_one), rq, fallback=_list_program(q, rq))
    if plan.task_type == "LIST":
        return _list_program(q, rq)
    return f"answer = ask_all({q})\nprint(answer)\nFINAL(answer)"


def _list_program(q: str, rq: str) -> str:
    return (
        f"hits = where({rq})\n"
        "print(len(hits), 'matching records')\n"
        f"answer = ask_all({q}, data=hits) if hits else 'NONE'\n"
        "print(answer)\nFINAL(answer)"
    )


CATEGORY_QUESTION = "Which of these categories fits this record best?"
# A record counts for a person when the sub-model's P(asked-for category) is at least this share of the highest
# P(asked-for category) of any record: the record most clearly about it sets the scale. Why: the asked-for category
# is often rare (4 of 330 records) and ranked well (AUC 0.985 and 0.934), but the most likely label misses it where
# a broad category ("support") takes the records, and batch calibration hands it to dozens of others. Measured on
# the stored tables of two development tasks (1.5B): F1 0.50 / 0.36 by most likely label, 0.50 / 0.80 by this share
# (0.4: 0.50 / 0.44; 0.6: 0.50 / 0.80).
CLEAREST_SHARE = 0.5

_KEEP = {
    "all": 'c["yes"] >= 1 and c["no"] == 0',
    "none": 'c["yes"] == 0',
    "exactly": 'c["yes"] == {n}',
    "at_least": 'c["yes"] >= {n}',
    "any": 'c["yes"] >= 1',
}


def _per_person_program(rule: PersonRule, about_one: str, rq: str, fallback: str) -> str:
    """Label every record with the categories the question sorts records by (`categories()`, the asked-for one
    first; the yes/no question `rq` if none are named), group by the person each record belongs to, keep people by
    the rule; `fallback` where the records name no person. Labels, not a yes/no question a record: measured on the
    1.5B sub-model, a yes/no judgement of a topic was near chance, a choice among the categories far better
    (docs/eval/README.md, sessions 16 and 17)."""
    keep = _KEEP[rule.rule].format(n=rule.times)
    answer = '"\\n".join(f"{a} & {b}" for a, b in itertools.combinations(kept, 2))' if rule.pairs else '", ".join(kept)'
    category = json.dumps(CATEGORY_QUESTION)
    shares = _shares(rule)
    if shares:
        judged = f"    scores = [s[labels[0]] for s in label_scores({category}, labels)]\n"
    else:
        judged = (
            f"    found = label_each({category}, labels, calibrate=False)\n"
            "    flags = ['yes' if label == labels[0] else 'no' for label in found]\n"
        )
    kept = (
        "tally = defaultdict(Counter)\n"
        "for person, flag in zip(who, flags):\n"
        "    tally[person][flag] += 1\n"
        f"kept = sorted(person for person, c in tally.items() if {keep})\n"
        f"answer = {answer}\n"
    )
    by_share = (
        f"for share in {shares!r}:\n"
        "    flags = ['yes' if s >= share * max(scores) else 'no' for s in scores]\n"
        f"{_indent(kept)}"
        "    if answer:\n"
        "        break\n"
    )
    grouped = (
        f"labels = categories({about_one})\n"
        "print('categories:', labels)\n"
        "if labels:\n"
        f"{judged}{_indent(by_share if shares else kept)}"
        "else:\n"
        f"    flags = label_each({rq}, ['yes', 'no'])\n"
        f"{_indent(kept)}"
        "print(len(kept), 'of', len(tally), 'people kept:', kept)\n"
        "if answer:\n"
        "    FINAL(answer)\n"
    )
    lines = ["who = writers()", "if who:", *("    " + line for line in grouped.splitlines())]
    lines += ["else:", *("    " + line for line in fallback.splitlines())]
    return "\n".join(lines)


def _shares(rule: PersonRule) -> tuple[float, ...]:
    """The shares of the clearest record's P(category) a record must reach to count, tried in turn until someone
    is kept; () where the likeliest label decides. "all" judges every record of a person, and its label is a
    common one. The rare-record rules try half the share where the clearest record stands alone and the first
    bar keeps nobody; "none" keeps one bar, since a lower one only removes people."""
    if rule.rule == "all":
        return ()
    return (CLEAREST_SHARE,) if rule.rule == "none" else (CLEAREST_SHARE, CLEAREST_SHARE / 2)


def _indent(code: str) -> str:
    return "".join("    " + line + "\n" for line in code.splitlines())


def plan_first(query: str) -> bool:
    """Questions whose program is the right code, so `auto` runs it before the model's: who calls a function in
    code (`callers`), which function does something (`find_function`), most/least of named options (label every
    record with them, count), and which people meet a condition over their records (label every record with the
    categories found in the data, group by person, keep by the rule). Measured for the last on development seeds
    (1.5B, listing, 36,000 chars): 1.00 / 0.07 / 0.38 run first, against 0.00 / 0.27 / 0.47 from the model's code
    (docs/eval/README.md, session 17)."""
    if called_name(query) is not None or asks_for_function(query):
        return True
    form = question_form(query)
    return form in ("MOST", "LEAST") or (form == "LIST" and bool(_PEOPLE.search(query)))


async def run_structured(run: RLMRun, session: ReplSession) -> Outcome:
    """Plan with one sub-call, run the plan's program in the REPL, answer with what it returns."""
    from rlm_local.runtime.run import Outcome

    plan = await make_plan(run)
    code = program(plan, run.query)
    run.turn += 1
    result = await session.execute(code)
    if run.tree.budget.failed:  # the program's answer would come from sub-calls that failed
        raise run.tree.budget.exceeded
    output = run.format_cell(result)
    run.printed.append(output)
    answer = result.final if result.final not in (None, "", "None", "NONE") else None
    if answer is not None and answer.startswith("NONE"):
        answer = None
    run.tree.trajectory.emit(
        "turn",
        run_id=run.tree.run_id,
        run=run.label,
        depth=run.depth,
        turn=run.turn,
        response=f"[structured plan] {plan.task_type}: {plan.record_question}",
        code=[code],
        outputs=[output],
        final=answer,
        note="structured mode",
        plan={
            "type": plan.task_type,
            "record_question": plan.record_question,
            "labels": list(plan.labels),
            "people": None if plan.people is None else asdict(plan.people),
        },
    )
    if answer is None:
        return Outcome(None, "error", f"the structured {plan.task_type} program found no answer: {output[-300:]}", 1)
    return Outcome(answer, "final", f"structured mode: {plan.task_type}", run.turn)
