"""K-sample voting: answer keys, the majority rule, and K concurrent trajectories on one engine (scripted LM)."""

from __future__ import annotations

import asyncio
from collections import defaultdict

from fakes import ScriptedEngine, repl

from rlm_local.config import RLMConfig
from rlm_local.repl.process_sandbox import ProcessSandbox
from rlm_local.rlm import RLM
from rlm_local.runtime.voting import answer_key, verified_vote, vote, written_in


def test_answers_that_say_the_same_share_a_key():
    assert answer_key("12") == answer_key("There are 12 messages.") == "12"
    assert answer_key("Mira  Kessel.") == answer_key("mira kessel")
    assert answer_key("Mira Kessel") != answer_key("Tomas Vey")


def test_majority_wins_and_ties_go_to_the_greedy_sample():
    assert vote(["41", "There are 42.", "42"]) == ("There are 42.", 2)
    assert vote(["Mira", "Tomas"]) == ("Mira", 1)
    assert vote([None, "", None]) == (None, 0)
    assert vote([None, "x"]) == ("x", 1)


def test_samples_run_concurrently_and_the_vote_decides():
    calls: dict[int | None, int] = defaultdict(int)
    answers = {7919: "FINAL(There are 42.)", 15838: "FINAL(42)"}

    def sampled(options):  # samples 1 and 2 (higher temperature): look at the data, then answer 42
        calls[options.seed] += 1
        return repl("print(context[:30])") if calls[options.seed] == 1 else answers.get(options.seed, "FINAL(0)")

    engine = ScriptedEngine([repl("print(context[:20])"), "FINAL(41)"], sampled=sampled, delay_s=0.05)

    async def go():
        async with RLM(RLMConfig(sandbox="process", samples=3), root_engine=engine, sandbox=ProcessSandbox()) as rlm:
            return await rlm.acompletion("How many?", "some data " * 50)

    result = asyncio.run(go())
    assert result.answer == "There are 42." and result.stop_detail == "2 of 3 samples agreed"
    assert engine.max_concurrent >= 2  # the trajectories were in flight together
    (event,) = [e for e in result.trajectory if e["event"] == "vote"]
    assert sorted(event["answers"]) == sorted(["41", "There are 42.", "42"])
    # neither answer was ever printed (the code printed only the data): both fail the check, the vote stands
    assert [c["verdict"] for c in event["checks"]] == ["not written in its evidence"] * 2


def check(answers, evidence, verdicts: dict[str, str]):
    """verified_vote with a sub-model that answers from `verdicts` (by proposed answer); returns what was asked."""
    asked: list[str] = []

    async def ask(prompt: str) -> str:
        proposed = prompt.split("Proposed answer: ", 1)[1].split("\n", 1)[0]
        asked.append(proposed)
        return verdicts.get(proposed, "no")

    return asyncio.run(verified_vote("Who won?", answers, evidence, ask)), asked


def test_the_majority_is_kept_when_its_evidence_supports_it():
    (answer, agreed, checks), asked = check(
        ["Mira", "Mira", "Tomas"], ["Mira won", "winner: Mira", "Tomas"], {"Mira": "Yes"}
    )
    assert (answer, agreed, asked) == ("Mira", 2, ["Mira"]) and checks[0].verdict == "supported"


def test_a_majority_its_evidence_does_not_show_gives_way_to_a_supported_answer():
    answers, evidence = ["Mira", "Mira", "Tomas"], ["no result", "nothing", "Tomas Vey won the race"]
    (answer, agreed, checks), asked = check(answers, evidence, {"Tomas": "yes"})
    assert (answer, agreed, asked) == ("Tomas", 1, ["Tomas"])  # Mira was never printed: no sub-call for it
    assert [c.verdict for c in checks] == ["not written in its evidence", "supported"]


def test_when_nothing_is_supported_the_vote_stands():
    (answer, agreed, checks), asked = check(["41", "42", "42"], ["count 41", "count 42", "42"], {})
    assert (answer, agreed) == ("42", 2) and asked == ["42", "41"]
    assert [c.verdict for c in checks] == ["not supported", "not supported"]
    assert written_in("There are 12.", "total: 12 rows") and not written_in("12", "112 rows")
    assert written_in("Mira Kessel", "[doc] mira kessel, first") and not written_in("Mira", "Miranda")
