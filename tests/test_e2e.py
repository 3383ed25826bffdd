"""End to end on the real vLLM engine with the real Qwen2.5-Coder-0.5B-Instruct, in the Docker sandbox.

One engine and one sandbox serve the whole module (engine start-up is the slow part on CPU).
"""

from __future__ import annotations

import json
import re

import pytest
from document_samples import write_docx, write_encrypted_pdf, write_pdf, write_xlsx

from rlm_local.config import Budgets, EngineConfig, RLMConfig
from rlm_local.engines.vllm_engine import VLLMEngine
from rlm_local.eval.tasks import make_task
from rlm_local.repl.docker_sandbox import DockerSandbox
from rlm_local.rlm import RLM
from rlm_local.synthetic import counting_task, needle_task

pytestmark = [pytest.mark.engine, pytest.mark.asyncio(loop_scope="module")]

NEEDLE_SEEDS = range(5)
NEEDLE_CHARS = 200_000  # ~36K tokens: beyond the model's 32K-token window, twice the engine's 16K


@pytest.fixture(scope="module")
async def engine():
    engine = await VLLMEngine.start(EngineConfig(max_model_len=16384, cpu_kv_cache_gib=3))
    yield engine
    await engine.close()


@pytest.fixture(scope="module")
async def docker_sandbox():
    sandbox = DockerSandbox(pool_size=1)
    yield sandbox
    await sandbox.close()


def config(**budgets) -> RLMConfig:
    return RLMConfig(budgets=Budgets(max_iterations=6, **budgets), sandbox="docker")


async def test_needle_in_a_haystack_in_docker(engine, docker_sandbox):
    """At least 4 of 5 seeded needle tasks over 200,000 characters answered correctly."""
    rlm = RLM(config(), root_engine=engine, sandbox=docker_sandbox)
    outcomes = []
    for seed in NEEDLE_SEEDS:
        task = needle_task(seed, chars=NEEDLE_CHARS)
        assert len(task.context) >= NEEDLE_CHARS
        result = await rlm.acompletion(task.query, task.context)
        outcomes.append((task.answer, result.answer, result.stop_reason))
        assert result.usage.root_prompt_tokens < engine.max_model_len * result.turns  # context never in a prompt
    correct = sum(1 for expected, got, _ in outcomes if got and expected in got)
    assert correct >= 4, outcomes


async def test_the_quickstart_question_is_answered(engine, docker_sandbox):
    """`make quickstart`'s own context and query, with default settings: the answer must be the hidden code."""
    task = needle_task(seed=2025, chars=400_000, item="access code")  # as scripts/make_demo_context.py writes it
    rlm = RLM(RLMConfig(sandbox="docker"), root_engine=engine, sandbox=docker_sandbox)
    result = await rlm.acompletion("What is the access code mentioned in the text?", task.context)
    assert result.answer is not None and task.answer in result.answer, (result.answer, result.stop_detail)


async def test_a_counting_question_fans_out_over_every_document_and_aggregates(engine, docker_sandbox):
    """A user's counting question over 16 documents (no recipe in it): the run reads every document with sub-calls
    sent together, and its answer is the count of what those sub-calls said."""
    task = counting_task(3, documents=16, chars_per_document=1_500)
    rlm = RLM(config(), root_engine=engine, sandbox=docker_sandbox)
    result = await rlm.acompletion(task.query, task.context)
    subcalls = [e for e in result.trajectory if e["event"] == "subcall" and e["kind"] in ("llm_query", "llm_choose")]
    assert len(subcalls) >= 16, [e["response"] for e in result.trajectory if e["event"] == "turn"]
    yes = sum(1 for e in subcalls if said_yes(e))
    assert result.answer is not None
    numbers = [int(n) for n in re.findall(r"\d+", result.answer)]
    assert numbers and numbers[0] == yes, (result.answer, yes)


def said_yes(subcall: dict) -> bool:
    """A sub-call's yes: its reply text, or for a scored one (llm_choose) the likelier of yes and no."""
    if subcall["kind"] == "llm_choose":
        probabilities = json.loads(subcall["response_preview"])
        return probabilities.get("yes", 0.0) > probabilities.get("no", 0.0)
    return subcall["response_preview"].strip().lower().startswith("yes")


async def test_prefix_cache_serves_later_root_turns(engine, docker_sandbox):
    rlm = RLM(config(), root_engine=engine, sandbox=docker_sandbox)
    task = needle_task(7, chars=50_000)
    result = await rlm.acompletion(task.query, task.context)
    turns = [e for e in result.trajectory if e["event"] == "turn"]
    assert turns[0]["prompt_tokens"] > 0
    if len(turns) > 1:
        assert all(t["cached_tokens"] > 0 for t in turns[1:])
    # A second run shares the system prompt and worked examples: its first turn hits the cache too.
    again = await rlm.acompletion(task.query, task.context)
    first = next(e for e in again.trajectory if e["event"] == "turn")
    assert first["cached_tokens"] > 0


async def test_a_question_about_people_labels_every_record_and_groups_by_person(engine, docker_sandbox):
    """'Which users only ever wrote ...?' over 76 messages: auto mode runs the per-person program first, which
    names the categories from the data, labels every record with them (one scored sub-call each) and keeps users
    by the question's rule; whatever it keeps are users of the data."""
    task = make_task("listing", 3, 6_000, shape="str", variant="only_label")
    records = [line for line in task.context.splitlines() if line.strip()]
    result = await RLM(config(), root_engine=engine, sandbox=docker_sandbox).acompletion(task.query, task.context)
    planned = next(e for e in result.trajectory if e["event"] == "turn")
    assert planned["note"] == "structured mode" and planned["plan"]["people"]["rule"] == "all", planned
    assert "categories:" in planned["outputs"][0] and "people kept" in planned["outputs"][0], planned["outputs"]
    labelled = [e for e in result.trajectory if e["event"] == "subcall" and e["kind"] in ("llm_query", "llm_choose")]
    assert len(labelled) >= len(records)
    users = set(re.findall(r"user_\d{4}", task.context))
    kept = re.search(r"people kept: (\[.*\])", planned["outputs"][0])
    assert kept and set(re.findall(r"user_\d{4}", kept.group(1))) <= users


async def test_a_folder_of_documents_answers_from_the_pdf_and_lists_the_unreadable_file(
    engine, docker_sandbox, tmp_path, monkeypatch
):
    """A folder of real office documents: the answer is only in the PDF, the encrypted PDF is listed as unreadable,
    and a second query over the folder converts nothing."""
    monkeypatch.setenv("RLM_LOCAL_DOCUMENT_CACHE", str(tmp_path / "cache"))  # a cold conversion cache
    folder = tmp_path / "quarterly"
    folder.mkdir()
    write_pdf(
        folder / "operations-report.pdf",
        [
            "Operations report, third quarter.\nStaffing was stable and two new loading docks opened in August.",
            "Shipments.\nThe Tilbury warehouse shipped 4,812 pallets in the quarter, its best result so far.\n"
            "Returns fell to under one percent.",
        ],
    )
    write_encrypted_pdf(folder / "board-minutes.pdf", "Minutes of the board meeting. Confidential.")
    write_docx(
        folder / "staff-memo.docx",
        ["Memo to all staff", "The canteen moves to the ground floor from Monday.", "Parking is on level B."],
    )
    write_xlsx(folder / "budget.xlsx", {"Q3": [["line", "amount"], ["forklift leases", 18400], ["cleaning", 2300]]})
    (folder / "intranet.html").write_text(
        "<html><title>Intranet news</title><body><h1>News</h1><p>The summer party is on 12 September.</p></body></html>"
    )
    query = "What did the Tilbury warehouse ship last quarter?"
    rlm = RLM(RLMConfig(sandbox="docker"), root_engine=engine, sandbox=docker_sandbox)
    first = await rlm.acompletion(query, folder, trajectory_path=tmp_path / "first.jsonl")
    second = await rlm.acompletion(query, folder)
    print(first.answer, first.stop_detail, "|", second.answer)
    assert first.answer is not None and "4,812" in first.answer.replace("4812", "4,812"), first.answer
    assert first.unreadable == [{"path": "board-minutes.pdf", "reason": "encrypted PDF: it needs a password"}]
    converted = [e["context"] for e in (first.trajectory[0], second.trajectory[0])]
    assert first.trajectory[0]["event"] == "run_start"
    assert (converted[0]["converted"], converted[0]["conversion_cache_hits"]) == (4, 0), converted[0]
    assert (converted[1]["converted"], converted[1]["conversion_cache_hits"]) == (0, 4), converted[1]
    assert second.unreadable == first.unreadable
