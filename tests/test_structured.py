"""Structured mode: one planning sub-call, then a fixed program of helper calls (scripted LM, real process worker)."""

from __future__ import annotations

import asyncio

from fakes import ScriptedEngine, repl

from rlm_local.config import RLMConfig
from rlm_local.repl.process_sandbox import ProcessSandbox
from rlm_local.rlm import RLM
from rlm_local.runtime.structured import parse_plan, program

RECORDS = [
    "2024-01-02 | ana | The parcel came two weeks late.",
    "2024-01-03 | bo | Thanks, the blender works perfectly!",
    "2024-01-04 | ana | Still waiting for my delivery.",
    "2024-01-05 | cy | Why was I charged twice?",
]


def sub_model(prompt: str) -> str:
    if prompt.rstrip().endswith("TYPE:"):  # the planner
        return "COUNT\nRECORD_QUESTION: Is this message about a late delivery? Answer yes or no.\nLABELS: NONE"
    record = prompt.rsplit("Record:\n", 1)[-1]
    if "(one of: yes, no)" in prompt:
        return "yes" if ("late" in record or "delivery" in record) else "no"
    return "NONE"


def run(config: RLMConfig, engine: ScriptedEngine, query: str = "How many messages complain about late parcels?"):
    async def go():
        async with RLM(config, root_engine=engine, sandbox=ProcessSandbox()) as rlm:
            return await rlm.acompletion(query, RECORDS)

    return asyncio.run(go())


def test_plans_are_parsed_with_fallbacks():
    plan = parse_plan(" MOST\nRECORD_QUESTION: Which topic?\nLABELS: billing, shipping or account", "q")
    assert plan.task_type == "MOST" and plan.labels == ("billing", "shipping", "account")
    assert parse_plan("something unreadable", "Who won?").task_type == "LOOKUP"
    assert parse_plan("MOST\nRECORD_QUESTION: Which?\nLABELS: NONE", "q").task_type == "LOOKUP"  # no labels to count


def test_programs_are_valid_python_for_every_plan():
    import ast

    for text in ("LOOKUP", "COUNT\nRECORD_QUESTION: a?", "LEAST\nRECORD_QUESTION: b?\nLABELS: x, y", "LIST"):
        ast.parse(program(parse_plan(text, 'Who said "hi"?'), 'Who said "hi"?'))


def test_structured_mode_counts_with_one_plan_and_one_batch():
    engine = ScriptedEngine([], sub=sub_model)
    result = run(RLMConfig(sandbox="process", mode="structured"), engine)
    assert result.answer == "2" and result.stop_reason == "final"
    assert engine.root_prompts == []  # the root model wrote no code
    assert result.usage.sub_calls == 1 + len(RECORDS)  # the plan, then one call per record: known in advance
    turn = next(e for e in result.trajectory if e["event"] == "turn")
    assert turn["plan"]["type"] == "COUNT" and "count_where" in turn["code"][0]


def test_auto_mode_falls_back_to_the_plan_when_the_code_found_nothing():
    engine = ScriptedEngine([repl("print(context[0])"), repl("print(context[1])"), "FINAL(None)"], sub=sub_model)
    config = RLMConfig(sandbox="process", mode="auto", budgets={"max_iterations": 2})
    result = run(config, engine)
    assert result.answer == "2" and len(engine.root_prompts) >= 2


def test_auto_mode_runs_the_plan_first_for_small_models_and_code_if_it_finds_nothing():
    def planner_finds_nothing(prompt: str) -> str:
        return "LOOKUP" if prompt.rstrip().endswith("TYPE:") else "NONE"

    engine = ScriptedEngine([repl("print(context[3])"), "FINAL(cy)"], sub=planner_finds_nothing)
    engine.model = "tiny-coder-0.5B"  # a small model: the small-coder profile, structured first
    result = run(RLMConfig(sandbox="process", mode="auto"), engine, query="Who was charged twice?")
    turns = [e for e in result.trajectory if e["event"] == "turn"]
    assert turns[0]["note"] == "structured mode" and turns[0]["final"] is None
    assert result.answer == "cy" and len(engine.root_prompts) == 2  # then the model's own code answered
