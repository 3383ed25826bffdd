"""The run loop with a scripted LM and the real process worker: finals, budgets, faults.

Tests of how a FINAL is read, of faults and of the trajectory that answer without printing from `context` first
run with the loop guards off (`guards=False`); tests/test_guards.py covers the guards."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from fakes import ScriptedEngine, repl

from rlm_local.config import Budgets, RLMConfig
from rlm_local.errors import ContextError, EngineError, ModelError
from rlm_local.repl.process_sandbox import ProcessSandbox
from rlm_local.rlm import RLM

CONTEXT = "filler text. " * 2000 + "The secret number is 4217. " + "more filler. " * 2000


def run(engine: ScriptedEngine, context=CONTEXT, query="What is the secret number?", **config) -> object:
    budgets = config.pop("budgets", {})
    config.setdefault("mode", "code")  # the loop's own mechanics; `auto`'s fallback is tested in test_structured
    cfg = RLMConfig(budgets=Budgets(**budgets), sandbox="process", **config)

    async def go():
        async with RLM(cfg, root_engine=engine, sandbox=ProcessSandbox()) as rlm:
            return await rlm.acompletion(query, context)

    return asyncio.run(go())


def test_final_after_code_output():
    engine = ScriptedEngine(
        [repl("import re\nprint(re.search(r'secret number is (\\d+)', context).group(1))"), "FINAL(4217)"]
    )
    result = run(engine)
    assert result.answer == "4217" and result.stop_reason == "final" and result.turns == 2
    assert "4217" in engine.root_prompts[1][-1]["content"]  # the model saw the output


def test_context_never_enters_the_prompt():
    engine = ScriptedEngine(["FINAL(x)"])
    run(engine)
    assert all("4217" not in m["content"] for m in engine.root_prompts[0])
    assert f"{len(CONTEXT):,} characters" in engine.root_prompts[0][1]["content"]


def test_root_conversation_is_append_only():
    engine = ScriptedEngine([repl("print(context[:20])"), repl("print(2)"), "FINAL(done)"])
    run(engine)
    first, second, third = engine.root_prompts
    assert second[: len(first)] == first and third[: len(second)] == second


def test_final_var_reads_the_variable():
    engine = ScriptedEngine([repl("answer = 'forty ' + 'two'"), "FINAL_VAR(answer)"])
    assert run(engine, guards=False).answer == "forty two"


def test_final_var_in_same_reply_as_code():
    engine = ScriptedEngine(["```repl\nanswer = 6 * 7\n```\nFINAL_VAR(answer)"])
    result = run(engine, guards=False)
    assert result.answer == "42" and result.turns == 1


def test_final_of_a_bare_variable_name_uses_its_value():
    engine = ScriptedEngine([repl("result = 'from the repl'"), "FINAL(result)"])
    assert run(engine, guards=False).answer == "from the repl"


def test_final_called_inside_code_finishes():
    engine = ScriptedEngine([repl("x = 5\nFINAL(x * 2)\nprint('not reached?')")])
    result = run(engine, guards=False)
    assert result.answer == "10" and result.turns == 1


def test_final_inside_a_fence_is_not_taken():
    engine = ScriptedEngine([repl("print('FINAL(wrong)')\n# FINAL(wrong)"), "FINAL(right)"])
    result = run(engine, guards=False)
    assert result.answer == "right" and result.turns == 2


def test_literal_final_written_with_code_waits_for_the_output():
    engine = ScriptedEngine(["```repl\nprint(2 + 2)\n```\nFINAL(5)", "FINAL(4)"])
    result = run(engine, guards=False)
    assert result.answer == "4" and result.turns == 2
    assert "before seeing this output" in engine.root_prompts[1][-1]["content"]


def test_missing_final_var_is_reported_to_the_model():
    engine = ScriptedEngine(["FINAL_VAR(nope)", "FINAL(ok)"])
    result = run(engine, guards=False)
    assert result.answer == "ok"
    assert "no variable named 'nope'" in engine.root_prompts[1][-1]["content"]


def test_no_code_no_final_gets_a_reminder():
    engine = ScriptedEngine(["I think...", "FINAL(ok)"])
    run(engine)
    assert "no ```repl code block" in engine.root_prompts[1][-1]["content"]


def test_exceptions_are_shown_as_short_tracebacks():
    engine = ScriptedEngine([repl("x = 1\nundefined_name + 1"), "FINAL(ok)"])
    run(engine)
    shown = engine.root_prompts[1][-1]["content"]
    assert "NameError" in shown and "line 2" in shown and "repl_worker" not in shown


def test_think_blocks_are_stripped_before_parsing():
    engine = ScriptedEngine(["<think>FINAL(wrong)</think>\nFINAL(right)"])
    assert run(engine, guards=False).answer == "right"


def test_iterations_budget_forces_a_final_answer():
    engine = ScriptedEngine([repl("print(1)")] * 3 + ["FINAL(best guess)"])
    result = run(engine, budgets={"max_iterations": 3})
    assert result.stop_reason == "max_iterations" and result.answer == "best guess" and result.turns == 4
    assert "no turns left" in engine.root_prompts[-1][-1]["content"]


def test_subcall_budget_stops_the_run():
    engine = ScriptedEngine([repl("r = llm_query_batched(['a'] * 5)\nprint(r)"), "FINAL(partial)"])
    result = run(engine, budgets={"max_subcalls": 3})
    assert result.stop_reason == "max_subcalls" and "3" in result.stop_detail
    assert len(engine.sub_prompts) == 3
    assert result.answer == "partial"  # one forced final turn, no more sub-calls


def test_token_budget_stops_the_run():
    engine = ScriptedEngine([repl("print(1)")] * 10)
    result = run(engine, budgets={"max_total_tokens": 50})
    assert result.stop_reason == "max_tokens" and result.answer is None and result.turns == 1


def test_deadline_stops_the_run():
    engine = ScriptedEngine([repl("import time\ntime.sleep(5)")] * 5)
    result = run(engine, budgets={"deadline_s": 1.0})
    assert result.stop_reason == "deadline" and result.elapsed_s < 4


def test_near_the_deadline_the_model_answers_from_what_it_has_seen():
    """Another turn like the last would end after the deadline: the model is asked for its answer now, rather than
    the run ending without one. The first turn is never cut short."""
    slow = repl("import time\ntime.sleep(2)\nprint(context[:20])")
    engine = ScriptedEngine([slow, slow.replace("20", "30"), "FINAL(42)"])
    result = run(engine, budgets={"deadline_s": 6.0})  # a turn takes 2 s: 2 + 2 + another 2 would pass 6
    assert result.answer == "42" and result.stop_reason == "deadline" and "deadline was near" in result.stop_detail
    turns = [e for e in result.trajectory if e["event"] == "turn"]
    assert [t["note"] for t in turns][-1] == "forced final answer" and len(turns) == 3


def test_depth_budget_makes_rlm_query_a_plain_call():
    engine = ScriptedEngine([repl("print(rlm_query('sub question'))"), "FINAL(ok)"])
    result = run(engine, budgets={"max_depth": 1})
    assert result.usage.sub_rlm_runs == 0 and engine.sub_prompts == ["sub question"]


def test_depth_two_starts_a_sub_rlm_with_its_own_repl():
    def root(messages):
        first = messages[1]["content"]
        if "inner question" in first:  # the sub-RLM
            return repl("FINAL(len(context))")
        if len(messages) == 2:
            return repl("print(rlm_query('inner question', context='abcdef'))")
        return "FINAL(outer done)"

    engine = ScriptedEngine(root)
    result = run(engine, guards=False, budgets={"max_depth": 2})
    assert result.answer == "outer done" and result.usage.sub_rlm_runs == 1
    assert "6" in engine.root_prompts[-1][-1]["content"]


def test_batch_with_one_failing_prompt():
    def sub(prompt):
        if prompt == "bad":
            raise RuntimeError("engine hiccup")
        return prompt.upper()

    engine = ScriptedEngine([repl("r = llm_query_batched(['a', 'bad', 'c'])\nprint(r)"), "FINAL(ok)"], sub=sub)
    run(engine)
    shown = engine.root_prompts[1][-1]["content"]
    assert "'A'" in shown and "'C'" in shown and "engine hiccup" in shown


def test_batched_subcalls_reach_the_engine_concurrently():
    engine = ScriptedEngine(
        [repl("print(len(llm_query_batched([str(i) for i in range(16)])))"), "FINAL(ok)"], delay_s=0.05
    )
    run(engine)
    assert engine.max_concurrent == 16


def test_oversized_subcall_prompt_tells_the_model_to_split():
    engine = ScriptedEngine([repl("print(llm_query(context))"), "FINAL(ok)"], max_model_len=3000)
    run(engine)
    assert "Send a shorter prompt" in engine.root_prompts[1][-1]["content"]


def test_worker_cannot_raise_host_budgets():
    attack = (
        "import gc, sys\n"
        "for obj in gc.get_objects():\n"
        "    try:\n"
        "        if hasattr(obj, 'max_subcalls'):\n"
        "            obj.max_subcalls = 10**9\n"
        "    except Exception:\n"  # ctypes' library loaders answer any name with an OSError
        "        pass\n"
        "globals()['max_subcalls'] = 10**9\n"
        "print(llm_query_batched(['x'] * 4))"
    )
    engine = ScriptedEngine([repl(attack), "FINAL(done)"])
    result = run(engine, budgets={"max_subcalls": 2})
    assert len(engine.sub_prompts) == 2 and result.stop_reason == "max_subcalls"


def test_cell_timeout_keeps_state_and_run_goes_on():
    engine = ScriptedEngine([repl("keep = 7\nwhile True: pass"), repl("print(keep)"), "FINAL(ok)"])
    result = run(engine, guards=False, cell_timeout_s=1.0)
    assert result.answer == "ok"
    assert "time limit" in engine.root_prompts[1][-1]["content"]
    assert "7" in engine.root_prompts[2][-1]["content"]


def test_worker_crash_is_recovered_and_reported():
    engine = ScriptedEngine([repl("keep = 1\nimport os\nos._exit(9)"), repl("print(len(context))"), "FINAL(ok)"])
    result = run(engine)
    assert result.answer == "ok" and result.faults
    assert "variables were lost" in engine.root_prompts[1][-1]["content"]
    assert str(len(CONTEXT)) in engine.root_prompts[2][-1]["content"]


def test_trajectory_file_records_turns_and_subcalls(tmp_path: Path):
    engine = ScriptedEngine([repl("print(llm_query('hi'))"), "FINAL(ok)"])
    path = tmp_path / "t.jsonl"
    run(engine, guards=False, trajectory_path=path)
    import json

    events = [json.loads(line) for line in path.read_text().splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "run_start" and kinds[-1] == "run_end" and "subcall" in kinds and kinds.count("turn") == 2
    assert events[-1]["answer"] == "ok"


def test_list_and_dict_contexts():
    engine = ScriptedEngine([repl("print(type(context).__name__, len(context), context[1])"), "FINAL(ok)"])
    run(engine, context=["doc one", "doc two", "doc three"])
    assert "list 3 doc two" in engine.root_prompts[1][-1]["content"]


@pytest.mark.parametrize(
    ("context", "message"),
    [("", "empty"), ("   ", "empty"), ([], "empty"), (Path("/no/such/file.txt"), "not found")],
)
def test_bad_context_gives_clear_errors(context, message):
    with pytest.raises(ContextError, match=message):
        run(ScriptedEngine(["FINAL(x)"]), context=context)


def test_binary_file_is_refused(tmp_path: Path):
    binary = tmp_path / "blob.bin"
    binary.write_bytes(b"\x7fELF\x00\x00\x01" * 100)
    with pytest.raises(ContextError, match="binary"):
        run(ScriptedEngine(["FINAL(x)"]), context=binary)


def test_window_smaller_than_system_prompt():
    with pytest.raises(ModelError, match="smaller than the system prompt"):
        run(ScriptedEngine(["FINAL(x)"], max_model_len=50))


def test_small_models_get_worked_examples_as_chat_turns():
    engine = ScriptedEngine(["FINAL(x)"])
    engine.model = "Qwen2.5-Coder-0.5B-Instruct"
    run(engine)
    messages = engine.root_prompts[0]
    assert [m["role"] for m in messages[:5]] == ["system", "user", "assistant", "user", "assistant"]
    assert messages[4]["content"].startswith("FINAL(") and "What is the secret number?" in messages[-1]["content"]


def test_repeated_code_is_pointed_out():
    engine = ScriptedEngine([repl("print(1)"), repl("print(1)"), "FINAL(ok)"])
    run(engine)
    assert "already ran exactly this code" in engine.root_prompts[2][-1]["content"]


def test_a_guess_right_after_failing_code_is_sent_back_once():
    engine = ScriptedEngine([repl("1/0"), "FINAL(0)", "FINAL(0)"])
    result = run(engine, guards=False)
    assert result.answer == "0" and result.turns == 3
    assert "Your last code failed" in engine.root_prompts[2][-1]["content"]


def test_split_text_works_for_every_context_type():
    code = "print([len(p) for p in split_text(context, 1000)][:3], len(split_text(['a' * 10, 'b' * 2500], 1000)))"
    engine = ScriptedEngine([repl(code), "FINAL(ok)"])
    run(engine)
    shown = engine.root_prompts[1][-1]["content"]
    assert "[" in shown and shown.split("]")[1].strip().startswith("4")


FIND_CHANNEL = "import gc\nchannel = next(o for o in gc.get_objects() if type(o).__name__ == 'Channel')\n"


def test_one_frame_of_many_sub_rlm_queries_runs_them_a_few_at_a_time():
    """13 `rlm_query` prompts in one frame: at most `max_concurrent_sub_rlms` sub-RLMs (each with a REPL) at once."""

    def root(messages):
        first = messages[1]["content"]
        if "inner" in first:  # a sub-RLM
            return repl("FINAL(len(context))")
        if len(messages) == 2:
            return repl(FIND_CHANNEL + "print(channel.subcall('rlm_query', [f'inner {i}' for i in range(13)], {}))")
        return "FINAL(outer done)"

    engine = ScriptedEngine(root, delay_s=0.05)
    result = run(engine, guards=False, budgets={"max_depth": 2, "max_concurrent_sub_rlms": 3})
    assert result.answer == "outer done" and result.usage.sub_rlm_runs == 13
    assert engine.max_concurrent <= 3  # every sub-RLM's root turn waits 50 ms: never more than 3 at once


def test_a_sub_call_frame_with_no_prompts_is_charged_as_a_call():
    code = FIND_CHANNEL + "for _ in range(5):\n    channel.subcall('llm_query', [], {})\nprint('sent')"
    engine = ScriptedEngine([repl(code), "FINAL(ok)"])
    result = run(engine, guards=False, budgets={"max_subcalls": 3})
    assert engine.sub_prompts == []
    assert result.stop_reason == "max_subcalls"  # five empty frames used up a budget of three calls


def test_auto_sandbox_without_docker_refuses_to_run_model_code_on_the_host(monkeypatch):
    from rlm_local import docker_host
    from rlm_local.errors import SandboxError
    from rlm_local.rlm import make_sandbox

    monkeypatch.setattr(docker_host, "docker_available", lambda **_: False)
    with pytest.raises(SandboxError, match="--sandbox process"):
        make_sandbox(RLMConfig(sandbox="auto"))
    assert make_sandbox(RLMConfig(sandbox="process")).__class__.__name__ == "ProcessSandbox"


def test_old_cell_outputs_are_dropped_when_the_conversation_outgrows_the_window():
    """Eight cells that each print ~600 words into a 3,000-token window: the run goes on to its answer, the oldest
    outputs give way to a note (the code stays), and the latest output is always shown whole."""
    cells = [repl(f"print(('word{i} ' * 600) + 'end{i}')") for i in range(8)]
    engine = ScriptedEngine([*cells, "FINAL(4217)"], max_model_len=3000)
    result = run(engine, guards=False, output_chars=8000)
    assert result.answer == "4217" and result.stop_reason == "final" and result.turns == 9
    last = engine.root_prompts[-1]
    assert engine.count_tokens(last) <= 3000 - 3000 // 8
    assert "end7" in last[-1]["content"]  # the newest output, whole
    dropped = [m for m in last if "output was dropped" in m["content"]]
    assert len(dropped) >= 5 and all(m["role"] == "user" for m in dropped)
    assert sum("word7" in m["content"] for m in last if m["role"] == "assistant") == 1  # the code stays
    assert engine.root_prompts[0][:2] == last[:2]  # the system prompt and the first message are kept


def test_a_worker_lost_while_reading_the_final_variable_tells_the_model():
    bomb = "import os\nclass Bomb:\n    def __str__(self):\n        os._exit(3)\nanswer = Bomb()"
    engine = ScriptedEngine([repl(bomb), "FINAL_VAR(answer)", "FINAL(4217)"])
    result = run(engine, guards=False)
    assert result.answer == "4217"
    told = engine.root_prompts[-1][-1]["content"]
    assert "could not be read" in told and "all variables were lost" in told, told


def test_the_newest_output_is_cut_when_the_conversation_still_does_not_fit():
    """One cell printing ~1,500 words into a 1,200-token window after a long first message: dropping older outputs
    frees nothing, so the newest is cut in its middle (head, tail and the reminder stay) and the run answers."""
    engine = ScriptedEngine([repl("print(('word ' * 1500) + 'end')"), "FINAL(4217)"], max_model_len=1200)
    result = run(engine, guards=False, output_chars=20_000)
    assert result.answer == "4217" and result.stop_reason == "final"
    last = engine.root_prompts[-1]
    assert engine.count_tokens(last) <= 1200 - 1200 // 8
    assert "characters omitted" in last[-1]["content"] and "end" in last[-1]["content"]
    assert "Turn 2 of" in last[-1]["content"]  # the reminder at its end is kept


def dead_engine(prompt: str) -> str:
    raise EngineError("vLLM failed on a request: EngineCore encountered an issue (engine log: engine.log)")


def test_a_sub_model_engine_that_fails_stops_the_run_with_its_message_not_an_answer():
    """An answer built from failed sub-calls is no answer: the run ends with the engine's error (measured: an
    engine killed for memory mid-eval gave four confident wrong answers with no sub-call made)."""
    engine = ScriptedEngine([repl("r = llm_query('What is the number?')\nFINAL(r)"), "FINAL(guess)"], sub=dead_engine)
    result = run(engine)
    assert result.answer is None and result.stop_reason == "error"
    assert "engine failed" in result.stop_detail and "EngineCore" in result.stop_detail
    assert len(engine.root_prompts) == 1  # no further turn on a dead engine


def test_a_structured_program_on_a_failed_engine_gives_no_answer():
    code = {"units.py": "def to_miles(value):\n    return value * 0.621371\n\n\ndef tidy(text):\n    return text\n"}
    engine = ScriptedEngine(["FINAL(guess)"], sub=dead_engine)
    result = run(engine, context=code, query="Which function converts kilometres to miles?", mode="auto")
    assert result.answer is None and result.stop_reason == "error" and "engine failed" in result.stop_detail
    assert engine.root_prompts == []
