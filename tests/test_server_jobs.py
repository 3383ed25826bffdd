"""Server jobs kept on disk: a finished job's result outlives a restart, and one cut off by a crash reads
`interrupted` afterwards instead of vanishing (scripted LM; the server's engine tests cover the rest)."""

from __future__ import annotations

import json
from pathlib import Path

from fakes import ScriptedEngine, repl

from rlm_local.config import RLMConfig
from rlm_local.repl.process_sandbox import ProcessSandbox
from rlm_local.rlm import RLM
from rlm_local.server.auth import Tenant
from rlm_local.server.jobs import JobManager

ALICE, BOB = Tenant("alice"), Tenant("bob")


def answer(messages: list[dict[str, str]]) -> str:
    if len(messages) == 2:
        return repl("print(context)")
    return f"FINAL({messages[-1]['content'].split('code-')[1].split()[0]})"  # the code its cell printed


def manager(rlm: RLM, folder: Path) -> JobManager:
    return JobManager(rlm, {"rlm": rlm}, max_running=2, max_queued=4, folder=folder)


async def test_a_finished_job_is_served_again_after_a_restart_to_its_owner_only(tmp_path: Path) -> None:
    config = RLMConfig(sandbox="process", mode="code", guards=False)
    async with RLM(config, root_engine=ScriptedEngine(answer), sandbox=ProcessSandbox()) as rlm:
        jobs = manager(rlm, tmp_path)
        job = jobs.submit(ALICE, "rlm", "What is the code?", "the code is code-gamma7 .")
        await jobs.wait(job)
        assert job.status == "done" and job.result["answer"] == "gamma7"
        saved = json.loads((tmp_path / f"{job.id}.json").read_text())
        assert saved["status"] == "done" and saved["tenant"] == "alice"

        again = manager(rlm, tmp_path)  # a new server life on the same data folder
        restored = again.get(ALICE, job.id)
        assert restored.status == "done" and restored.result["answer"] == "gamma7"
        assert [e["event"] for e in restored.events] == [e["event"] for e in job.events] != []
        assert again.list(BOB) == []


async def test_a_job_cut_off_by_a_crash_reads_interrupted_and_a_torn_file_is_skipped(tmp_path: Path) -> None:
    record = {"id": "job-cut", "tenant": "alice", "query": "q", "model": "rlm", "status": "running"}
    record |= {"created_at": 1.0, "result": None, "error": None, "events": []}
    (tmp_path / "job-cut.json").write_text(json.dumps(record))
    (tmp_path / "job-torn.json").write_text('{"id": "job-torn", "tena')
    jobs = manager(RLM(RLMConfig(sandbox="process")), tmp_path)
    job = jobs.get(ALICE, "job-cut")
    assert job.status == "interrupted" and "stopped before the job finished" in (job.error or "")
    assert json.loads((tmp_path / "job-cut.json").read_text())["status"] == "interrupted"
    assert list(jobs.jobs) == ["job-cut"]
