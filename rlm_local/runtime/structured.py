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
from dataclasses import dataclass
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
    r"accounts|authors|senders|writers|employees|students|players|teams)\b"
    r"|\b(all|every|each) (the )?(users?|customers?|pairs?|people|person)\b"
    r"|^\s*who\b.*\b(more than once|at least (twice|\w+ times)|or more (times|occasions)|ids)\b",
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


@dataclass(frozen=True)
class Plan:
    task_type: str  # LOOKUP, COUNT, MOST, LEAST or LIST
    record_question: str
    labels: tuple[str, ...] = ()


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
    if not line.endswith(("?", "no.", "no")) or line.rstrip("?. ").lower() == query.rstrip("?. ").lower():
        return f"Does this record help answer: {query} Answer yes or no."
    return line if "yes or no" in line.lower() else f"{line} Answer yes or no."


async def make_plan(run: RLMRun) -> Plan:
    """Rules for the question's form, then at most two narrow sub-calls (classify, rephrase)."""
    query = run.query
    task_type = question_form(query)
    if task_type is None:
        reply = await run.ask_sub_model(CLASSIFY_PROMPT.format(query=query), max_tokens=4)
        task_type = "LIST" if reply.strip().upper().startswith("B") else "LOOKUP"
    if task_type in ("MOST", "LEAST"):
        options = answer_options(query)
        return Plan(task_type, LABEL_QUESTION.format(options=", ".join(options)), options)
    if task_type == "LOOKUP":
        return Plan(task_type, query)
    reply = await run.ask_sub_model(REWRITE_PROMPT.format(query=query), max_tokens=48)
    return Plan(task_type, record_question(reply, query))


def program(plan: Plan, query: str) -> str:
    """The REPL code for a plan: helper calls only, ending in FINAL."""
    q, rq, labels = json.dumps(query), json.dumps(plan.record_question), json.dumps(list(plan.labels))
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
    if plan.task_type == "LIST":
        return (
            f"hits = where({rq})\n"
            "print(len(hits), 'matching records')\n"
            f"answer = ask_all({q}, data=hits) if hits else 'NONE'\n"
            "print(answer)\nFINAL(answer)"
        )
    return f"answer = ask_all({q})\nprint(answer)\nFINAL(answer)"


async def run_structured(run: RLMRun, session: ReplSession) -> Outcome:
    """Plan with one sub-call, run the plan's program in the REPL, answer with what it returns."""
    from rlm_local.runtime.run import Outcome

    plan = await make_plan(run)
    code = program(plan, run.query)
    run.turn += 1
    result = await session.execute(code)
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
        plan={"type": plan.task_type, "record_question": plan.record_question, "labels": list(plan.labels)},
    )
    if answer is None:
        return Outcome(None, "error", f"the structured {plan.task_type} program found no answer: {output[-300:]}", 1)
    return Outcome(answer, "final", f"structured mode: {plan.task_type}", run.turn)
