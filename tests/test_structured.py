"""Structured mode: one planning sub-call, then a fixed program of helper calls (scripted LM, real process worker)."""

from __future__ import annotations

import asyncio
import re

from fakes import ScriptedEngine, repl

from rlm_local.config import RLMConfig
from rlm_local.repl.process_sandbox import ProcessSandbox
from rlm_local.rlm import RLM
from rlm_local.runtime.structured import (
    PersonRule,
    Plan,
    answer_options,
    asks_for_function,
    called_name,
    person_rule,
    plan_first,
    program,
    question_form,
    record_question,
)

RECORDS = [
    "2024-01-02 | ana | The parcel came two weeks late.",
    "2024-01-03 | bo | Thanks, the blender works perfectly!",
    "2024-01-04 | ana | Still waiting for my delivery.",
    "2024-01-05 | cy | Why was I charged twice?",
]


def sub_model(prompt: str) -> str:
    if "Reply with that one question only" in prompt:  # the planner's rephrasing call
        return "Is this message about a late delivery? Answer yes or no."
    if "Reply with the letter A or B" in prompt:  # the planner's classifying call
        return "A"
    if "Name the category the question looks for first" in prompt:  # `categories()`
        return "Late delivery, Praise, Billing"
    record = prompt.rsplit("Record:\n", 1)[-1]
    if "(one of: yes, no)" in prompt:
        return "yes" if ("late" in record or "delivery" in record) else "no"
    if "(one of: late delivery, praise, billing)" in prompt:
        return "late delivery" if ("late" in record or "delivery" in record) else "praise"
    return "NONE"


def run(config: RLMConfig, engine: ScriptedEngine, query: str = "How many messages complain about late parcels?"):
    async def go():
        async with RLM(config, root_engine=engine, sandbox=ProcessSandbox()) as rlm:
            return await rlm.acompletion(query, RECORDS)

    return asyncio.run(go())


def test_the_question_form_decides_the_task_type_where_english_makes_it_plain():
    assert question_form("How many of the reviews mention the battery?") == "COUNT"
    assert question_form("Which topic comes up most often: pricing, delivery or returns?") == "MOST"
    assert question_form("What is the least common sentiment (positive, negative or neutral)?") == "LEAST"
    assert question_form("Which customers wrote twice?") == "LIST"
    assert question_form("Who wrote to us more than once about a refund? I need their ids.") == "LIST"
    assert question_form("Who won the race more than a decade ago?") is None
    assert question_form("Who designed the bridge?") is None  # a model decides
    assert question_form("Which colour is most common?") is None  # no options to count: not a labelling task
    assert answer_options("Which is most common: a, b or c?") == ("a", "b", "c")
    assert answer_options("Who won?") == ()


def test_an_unusable_rephrasing_falls_back_to_the_query():
    assert record_question("Is it late? Answer yes or no.\nmore", "q?") == "Is it late? Answer yes or no."
    assert record_question("Does it mention snow?", "q?") == "Does it mention snow? Answer yes or no."
    assert "How many are late?" in record_question("How many are late?", "How many are late?")
    assert record_question("", "How many?").endswith("Answer yes or no.")


def test_programs_are_valid_python_for_every_plan():
    import ast

    query = 'Who said "hi"?'
    people = PersonRule("all", pairs=True)
    plans = (Plan("LOOKUP", query), Plan("COUNT", "a?"), Plan("LEAST", "b?", ("x", "y")), Plan("LIST", "c?"))
    for plan in (*plans, Plan("LIST", "d?", people=people)):
        ast.parse(program(plan, query))


def test_structured_mode_counts_with_one_plan_and_one_batch():
    engine = ScriptedEngine([], sub=sub_model)
    result = run(RLMConfig(sandbox="process", mode="structured"), engine)
    assert result.answer == "2" and result.stop_reason == "final"
    assert engine.root_prompts == []  # the root model wrote no code
    assert result.usage.sub_calls == 1 + len(RECORDS)  # the rephrasing, then one call per record: known in advance
    turn = next(e for e in result.trajectory if e["event"] == "turn")
    assert turn["plan"]["type"] == "COUNT" and "count_where" in turn["code"][0]


def test_auto_mode_falls_back_to_the_plan_when_the_code_found_nothing():
    engine = ScriptedEngine([repl("print(context[0])"), repl("print(context[1])"), "FINAL(None)"], sub=sub_model)
    config = RLMConfig(sandbox="process", mode="auto", budgets={"max_iterations": 2})
    result = run(config, engine)
    assert result.answer == "2" and len(engine.root_prompts) >= 2


def test_auto_mode_gives_up_on_a_stuck_model_and_runs_the_plan():
    stuck = repl("print(context[0])")  # every re-sampled candidate repeats it too (the fake's default)
    engine = ScriptedEngine([stuck] * 12, sub=sub_model)
    result = run(RLMConfig(sandbox="process", mode="auto"), engine)
    assert result.answer == "2" and result.stop_reason == "final"
    turns = [e for e in result.trajectory if e["event"] == "turn"]
    assert [t["note"] for t in turns[-2:]] == ["stuck: gave up", "structured mode"]
    assert len(engine.root_prompts) == 3  # the first cell, then two turns stuck on it: not all 12 turns


def test_auto_mode_makes_the_forced_guess_only_when_the_plan_finds_nothing():
    def planner_finds_nothing(prompt: str) -> str:
        return "A" if "Reply with the letter A or B" in prompt else "NONE"

    replies = [repl(f"print(context[{i % 4}], {i})") for i in range(2)] + ["FINAL(cy)"]
    engine = ScriptedEngine(replies, sub=planner_finds_nothing)
    config = RLMConfig(sandbox="process", mode="auto", budgets={"max_iterations": 2})
    result = run(config, engine, query="Who was charged twice?")
    notes = [e["note"] for e in result.trajectory if e["event"] == "turn"]
    assert notes[-2:] == ["structured mode", "forced final answer"]
    assert result.answer == "cy" and result.stop_reason == "max_iterations"


def test_auto_mode_runs_the_plan_first_for_a_question_naming_the_options_to_compare():
    """'Which of A, B or C is most common' has one right program (label every record with the options, count); a
    1.5B root wrote it for one such question and not for the next, so in auto mode the plan runs first."""

    def labeller(prompt: str) -> str:
        record = prompt.rsplit("Record:\n", 1)[-1]
        return "delivery" if ("late" in record or "delivery" in record) else "other"

    engine = ScriptedEngine([repl("print(context[0])"), "FINAL(other)"], sub=labeller)
    query = "Which kind of message is the most common: delivery or other?"
    result = run(RLMConfig(sandbox="process", mode="auto"), engine, query=query)
    assert result.answer == "delivery" and engine.root_prompts == []  # the plan answered: no code from the root
    turn = next(e for e in result.trajectory if e["event"] == "turn")
    assert turn["plan"]["type"] == "MOST" and turn["plan"]["labels"] == ["delivery", "other"]

    engine = ScriptedEngine([repl("print(context[0])"), "FINAL(other)"], sub=labeller)
    result = run(RLMConfig(sandbox="process", mode="code"), engine, query=query)  # code mode: the model's own code
    assert result.answer == "other" and len(engine.root_prompts) == 2


def test_a_question_about_people_states_its_rule_and_the_question_for_one_record_leaves_it_out():
    def rule(query: str) -> tuple[str, int, bool, str]:
        found, about_one = person_rule(query)
        return found.rule, found.times, found.pairs, about_one

    assert rule("Which tenants reported a leak more than once?") == (
        "at_least",
        2,
        False,
        "Which tenants reported a leak?",
    )
    assert rule("Who paid late three or more times?")[:2] == ("at_least", 3)
    assert rule("Which members logged in exactly twice?")[:2] == ("exactly", 2)
    assert rule("Which drivers were always on time?") == ("all", 1, False, "Which drivers were on time?")
    assert rule("Which clients never sent anything that wasn't a complaint?")[::3] == (
        "all",
        "Which clients sent a complaint?",
    )
    assert rule("Which reviewers' posts were all in French?")[3] == "Which reviewers' posts were in French?"
    assert rule("Who never asked for a refund?")[:2] == ("none", 1)
    assert rule("List every pair of authors who both cited the 2019 survey.") == (
        "any",
        1,
        True,
        "List every pair of authors who both cited the 2019 survey.",
    )
    keeps = PersonRule("all").keeps
    assert keeps(3, 0) and not keeps(3, 1) and not keeps(0, 0)
    assert PersonRule("at_least", 2).keeps(2, 5) and not PersonRule("at_least", 2).keeps(1, 0)
    assert plan_first("Which is the most common complaint: delivery, price or size?")
    assert plan_first("Which customers wrote about late deliveries more than once?")  # grouped by person first
    assert not plan_first("How many messages complain about late parcels?")
    assert "help answer" in record_question("Yes/no question to ask about ONE record: Is it late?", "Who was late?")


def test_structured_mode_answers_a_question_about_people_by_grouping_every_record_by_person():
    """'Which customers ... more than once': every record asked about on its own, grouped by the person field,
    kept by the rule the question states."""
    engine = ScriptedEngine([], sub=sub_model)
    query = "Which customers wrote about late deliveries more than once?"
    result = run(RLMConfig(sandbox="process", mode="structured"), engine, query=query)
    assert result.answer == "ana" and engine.root_prompts == []
    turn = next(e for e in result.trajectory if e["event"] == "turn")
    assert turn["plan"]["people"] == {"rule": "at_least", "times": 2, "pairs": False}
    assert "writers()" in turn["code"][0]

    def trouble(prompt: str) -> str:  # late parcels and double charges count
        if "Reply with that one question only" in prompt:
            return "Does this message report a problem? Answer yes or no."
        if "Name the category the question looks for first" in prompt:
            return "1. Problem\n2. Thanks"
        record = prompt.rsplit("Record:\n", 1)[-1]
        return "problem" if ("late" in record or "charged" in record) else "thanks"

    engine = ScriptedEngine([], sub=trouble)
    query = "Which pairs of customers both reported a problem?"
    result = run(RLMConfig(sandbox="process", mode="structured"), engine, query=query)
    assert result.answer == "ana & cy"


def test_the_per_person_program_asks_yes_or_no_when_no_categories_are_named():
    def unnamed(prompt: str) -> str:
        return "NONE" if "Name the category the question looks for first" in prompt else sub_model(prompt)

    engine = ScriptedEngine([], sub=unnamed)
    query = "Which customers wrote about late deliveries?"
    result = run(RLMConfig(sandbox="process", mode="structured"), engine, query)
    assert result.answer == "ana"
    assert "categories: []" in next(e for e in result.trajectory if e["event"] == "turn")["outputs"][0]


CODE = {
    "store.py": "def write_task(path):\n    return path\n\n\ndef _write_task(items):\n    return items\n",
    "jobs.py": "def store_header(path, rows):\n    write_task(path)\n\n\ndef tidy(rows):\n"
    "    # write_task is called by the writer, not here\n    _write_task(rows)\n",
}


def test_a_question_about_who_calls_a_function_is_answered_from_the_parsed_code_first():
    """A 1.5B root searched for the name and answered a look-alike; `callers` parses the code, so a comment, a
    string or `_write_task` is not a call."""
    assert called_name("`write_task` is invoked in exactly one place. Which function invokes it?") == "write_task"
    assert called_name("Where is flush_rows() called from?") == "flush_rows"
    assert called_name("Which users called about billing?") is None  # no code name: a question about records
    assert called_name("Who called user_0413 twice?") is None
    assert plan_first("What is the function that converts kilometres to miles called?")  # find_function's

    async def go(query: str, engine: ScriptedEngine):
        async with RLM(RLMConfig(sandbox="process", mode="auto"), root_engine=engine, sandbox=ProcessSandbox()) as rlm:
            return await rlm.acompletion(query, CODE)

    engine = ScriptedEngine(["FINAL(_write_task)"], sub=sub_model)
    result = asyncio.run(go("Which function calls `write_task`?", engine))
    assert result.answer == "store_header" and engine.root_prompts == [] and result.usage.sub_calls == 0
    assert next(e for e in result.trajectory if e["event"] == "turn")["plan"]["type"] == "CALLERS"
    result = asyncio.run(go("How many functions call `_write_task`?", ScriptedEngine([], sub=sub_model)))
    assert result.answer == "1"

    engine = ScriptedEngine([repl("print(list(context))"), "FINAL(nobody)"], sub=sub_model)
    result = asyncio.run(go("Which function calls `never_defined`?", engine))
    assert result.answer == "nobody" and len(engine.root_prompts) == 2  # no caller found: the model's own turns


CONVERSIONS = {
    "units.py": "def normalize_metric(value):\n    return value * 1.609344\n\n\n"
    "def normalize_entry(value):\n    return value * 0.621371\n",
    "text.py": "def tidy(text):\n    return text.strip()\n",
}


def conversion_model(prompt: str) -> str:
    """Likelier for the function whose code converts kilometres to miles; no version of its own."""
    if "Reply yes or no" in prompt:
        return "yes" if "0.621371" in prompt else "no"
    return "NONE"


def writing_model(prompt: str) -> str:
    """Writes its own version of the function asked for, with example calls."""
    if "Write a Python function `f`" in prompt:
        return "```python\ndef f(km):\n    return km * 0.6214\n\nprint(f(10))\n```"
    return conversion_model(prompt)


def test_a_function_asked_for_by_what_it_does_is_found_by_running_or_else_scoring_every_function():
    assert asks_for_function("I'm looking for the function that converts a distance in kilometres to miles.")
    assert asks_for_function("Somewhere in this code a function parses dates. Which one is it?")
    assert not asks_for_function("What does the function `tidy` do?")
    assert not asks_for_function("Which function calls `tidy`?")  # callers()
    assert not asks_for_function("Which users wrote about billing?")

    async def go(query: str, engine: ScriptedEngine, context: dict[str, str] = CONVERSIONS):
        async with RLM(RLMConfig(sandbox="process", mode="auto"), root_engine=engine, sandbox=ProcessSandbox()) as rlm:
            return await rlm.acompletion(query, context)

    engine = ScriptedEngine(["FINAL(convert)"], sub=writing_model)
    result = asyncio.run(go("Which function converts a distance in kilometres to miles?", engine))
    assert result.answer == "normalize_entry" and engine.root_prompts == []
    assert next(e for e in result.trajectory if e["event"] == "turn")["plan"]["type"] == "FUNCTION"
    assert len(engine.sub_prompts) == 1  # the version written; the functions ran, none was scored

    engine = ScriptedEngine(["FINAL(convert)"], sub=conversion_model)  # no version: every function scored
    result = asyncio.run(go("Which function converts a distance in kilometres to miles?", engine))
    assert result.answer == "normalize_entry" and engine.root_prompts == []
    assert len(engine.sub_prompts) == 4 and sum("def " in p for p in engine.sub_prompts) == 3  # one a function

    engine = ScriptedEngine([repl("print(sorted(context))"), "FINAL(nothing here)"], sub=conversion_model)
    prose = {"notes.txt": "Kilometres and miles are both units of distance."}
    result = asyncio.run(go("Which function converts kilometres to miles?", engine, prose))
    assert result.answer == "nothing here" and len(engine.root_prompts) == 2  # no function: the model's own turns


def test_auto_mode_replaces_an_answer_kept_of_the_wrong_kind_by_the_plans():
    notes = ["Day 1: the voucher code ZX-101 came by post.", "Day 2: rain.", "Day 3: a second voucher, QR-202."]

    def reader(prompt: str) -> str:
        if "Reply with the letter A or B" in prompt:
            return "A"  # a lookup: the plan reads the pieces
        piece = prompt.split("Text:\n", 1)[-1].split("\n\nQuestion:", 1)[0]
        codes = re.findall(r"[A-Z]{2}-\d{3}", piece)
        return codes[0] if codes else "NONE"

    counted = [repl("print(len(context))"), "FINAL(2)", "FINAL(2)"]  # counts them, and insists after the note
    engine = ScriptedEngine(counted, sub=reader)

    async def go():
        async with RLM(RLMConfig(sandbox="process", mode="auto"), root_engine=engine, sandbox=ProcessSandbox()) as rlm:
            return await rlm.acompletion("Which voucher codes appear in these notes?", notes)

    result = asyncio.run(go())
    turns = [e for e in result.trajectory if e["event"] == "turn"]
    assert result.answer == "ZX-101"  # a code read off the notes, not the count
    assert turns[-1]["note"] == "structured mode" and turns[-2]["final"] == "2"


def test_a_model_that_keeps_its_answer_of_the_right_kind_is_not_second_guessed():
    engine = ScriptedEngine([repl("print(context[0])"), "FINAL(ana)"], sub=sub_model)
    result = run(RLMConfig(sandbox="process", mode="auto"), engine, query="Who complained about a late parcel?")
    assert result.answer == "ana" and all(e.get("note") != "structured mode" for e in result.trajectory)


def test_voting_samples_share_one_run_of_the_structured_program():
    """The program samples nothing, so K samples of a plan-first question run it once, not K times."""

    def labeller(prompt: str) -> str:
        record = prompt.rsplit("Record:\n", 1)[-1]
        return "delivery" if ("late" in record or "delivery" in record) else "other"

    query = "Which kind of message is the most common: delivery or other?"
    one = ScriptedEngine([], sub=labeller)
    single = run(RLMConfig(sandbox="process", mode="auto"), one, query=query)
    three = ScriptedEngine([], sub=labeller)
    voted = run(RLMConfig(sandbox="process", mode="auto", samples=3), three, query=query)
    assert single.answer == voted.answer == "delivery"
    assert single.usage.sub_calls == len(RECORDS)  # one label per record
    assert voted.usage.sub_calls == len(RECORDS) + 1  # the same labels once, and one sub-call checking the vote
    assert voted.stop_detail == "3 of 3 samples agreed"
    assert sum(e["event"] == "turn" and e.get("note") == "structured mode" for e in voted.trajectory) == 1
