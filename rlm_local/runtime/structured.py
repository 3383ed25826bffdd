"""Structured mode (after λ-RLM): one sub-call plans, then a fixed split/map/filter/reduce program runs.

Small models write the wrong code more often than they answer a narrow question wrongly. Here the model is only
asked narrow questions: one call classifies the task and phrases a question about one record, and the runtime
runs the matching program with the REPL's strategy helpers, so model calls happen only at the leaves and the cost
is known before anything runs (pieces or records, plus a few combining calls). The program runs in the run's own
REPL, so the trajectory shows it like any code turn.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rlm_local.repl.session import ReplSession
    from rlm_local.runtime.run import Outcome, RLMRun

PLAN_PROMPT = """You plan how to answer a question about a large collection of records or documents.
Choose the task type:
- LOOKUP: the answer is a fact written somewhere in the text (a name, a value, a code, a place, a function).
- COUNT: how many records have some property.
- MOST: which category or value is the most common among the records.
- LEAST: which category or value is the least common among the records.
- LIST: which items (people, users, ids, pairs) meet a condition over the records.
For COUNT, MOST, LEAST and LIST also write RECORD_QUESTION: a short question about ONE record that a reader can \
answer from that record alone (yes/no for COUNT and LIST; for MOST and LEAST, which category it belongs to), and \
LABELS: the categories named in the question, comma-separated (or NONE).

Examples:
Question: What is the door code of the storage room?
TYPE: LOOKUP
Question: How many of the reviews complain about the battery?
TYPE: COUNT
RECORD_QUESTION: Does this review complain about the battery? Answer yes or no.
LABELS: NONE
Question: Which topic do the emails discuss most often: pricing, delivery or returns?
TYPE: MOST
RECORD_QUESTION: Which topic does this email discuss: pricing, delivery or returns?
LABELS: pricing, delivery, returns
Question: Which students submitted a late assignment at least twice?
TYPE: LIST
RECORD_QUESTION: Does this record say an assignment was submitted late? Answer yes or no.
LABELS: NONE

Question: {query}
TYPE:"""

TASK_TYPES = ("LOOKUP", "COUNT", "MOST", "LEAST", "LIST")


@dataclass(frozen=True)
class Plan:
    task_type: str
    record_question: str
    labels: tuple[str, ...]


def parse_plan(text: str, query: str) -> Plan:
    """The plan from the planner's reply; anything unreadable falls back to reading everything for the query."""
    head = text.strip().split("\n", 1)[0].upper()
    task_type = next((t for t in TASK_TYPES if t in head), "LOOKUP")
    question = _field(text, "RECORD_QUESTION") or query
    labels_text = _field(text, "LABELS")
    labels: tuple[str, ...] = ()
    if labels_text and labels_text.strip().upper() != "NONE":
        labels = tuple(label.strip(" .'\"") for label in re.split(r",|\bor\b", labels_text) if label.strip(" .'\""))
    if task_type in ("MOST", "LEAST") and len(labels) < 2:
        task_type = "LOOKUP" if not labels else task_type
    return Plan(task_type, question, labels)


def _field(text: str, name: str) -> str | None:
    match = re.search(rf"^{name}\s*:\s*(.+)$", text, re.MULTILINE | re.IGNORECASE)
    return match.group(1).strip() if match else None


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

    reply = await run.ask_sub_model(PLAN_PROMPT.format(query=run.query), max_tokens=96)
    plan = parse_plan(reply, run.query)
    code = program(plan, run.query)
    run.turn += 1
    result = await session.execute(code)
    output = run.format_cell(result)
    answer = result.final if result.final not in (None, "", "None", "NONE") else None
    if answer is not None and answer.startswith("NONE"):
        answer = None
    run.tree.trajectory.emit(
        "turn",
        run_id=run.tree.run_id,
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
