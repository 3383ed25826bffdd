"""`llm_choose`: choice probabilities from one token's log-probabilities, and the sub-call through the REPL."""

from __future__ import annotations

import asyncio
import math

from fakes import ScriptedEngine, repl

from rlm_local.config import RLMConfig
from rlm_local.repl.process_sandbox import ProcessSandbox
from rlm_local.rlm import RLM
from rlm_local.runtime.choose import choice_probabilities


def test_every_spelling_of_a_choice_adds_to_its_probability():
    logprobs = {"Yes": math.log(0.5), " yes": math.log(0.2), "No": math.log(0.2), "Maybe": math.log(0.1)}
    yes, no = choice_probabilities(logprobs, ["yes", "no"])
    assert math.isclose(yes + no, 1.0)
    assert math.isclose(yes, 0.7 / 0.9) and math.isclose(no, 0.2 / 0.9)


def test_a_token_that_starts_several_choices_is_shared_and_a_missing_choice_gets_little():
    logprobs = {"pr": math.log(0.6), "billing": math.log(0.35), "x": math.log(0.05)}
    product, praise, billing, account = choice_probabilities(
        logprobs, ["product question", "praise", "billing", "account"]
    )
    assert math.isclose(product, praise) and billing > product
    assert 0 < account < min(product, billing)


def test_without_log_probabilities_the_reply_decides():
    assert choice_probabilities({}, ["yes", "no"], reply="No, it does not.") == [0.0, 1.0]
    assert choice_probabilities({}, ["yes", "no"], reply="perhaps") == [0.5, 0.5]
    assert choice_probabilities({"a": -1.0}, []) == []


def test_llm_choose_goes_through_the_host_as_one_batch_of_one_token_requests():
    code = 'p = llm_choose(["Is 7 prime?", "Is 8 prime?"], ["yes", "no"])\nprint(p)'
    engine = ScriptedEngine([repl(code), "FINAL(done)"], sub=lambda prompt: "yes" if "7" in prompt else "no")

    async def go():
        async with RLM(RLMConfig(sandbox="process", guards=False), root_engine=engine, sandbox=ProcessSandbox()) as rlm:
            return await rlm.acompletion("Which numbers are prime?", "7 8")

    result = asyncio.run(go())
    printed = engine.root_prompts[1][-1]["content"]
    assert "[{'yes': 1.0, 'no': 0.0}, {'yes': 0.0, 'no': 1.0}]" in printed
    assert result.usage.sub_calls == 2
    events = [e for e in result.trajectory if e.get("event") == "subcall"]
    assert [e["kind"] for e in events] == ["llm_choose", "llm_choose"] and all(
        e["completion_tokens"] <= 1 for e in events
    )
    assert result.answer == "done"
