"""Batch jobs: checked before they run, resumed after `kill -9` with no job lost or written twice."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rlm_local.batch import finished_ids, load_jobs
from rlm_local.config import RLMConfig
from rlm_local.errors import ConfigError

HOST = Path(__file__).parent / "batch_host.py"


def write_jobs(path: Path, lines: list[dict | str]) -> Path:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (['{"query": "q", "context": "c"', '{"query": "q"}'], "jobs.jsonl:1"),
        ([{"query": "q"}], "exactly one of"),
        ([{"query": "q", "context": "c", "context_path": "f"}], "exactly one of"),
        ([{"query": "q", "context": "c", "colour": "red"}], "colour"),
        ([{"id": "a", "query": "q", "context": "c"}, {"id": "a", "query": "r", "context": "d"}], "repeated: a"),
        ([], "no jobs"),
    ],
)
def test_a_bad_jobs_file_is_an_error_that_names_the_line(tmp_path, lines, message):
    with pytest.raises(ConfigError, match=message):
        load_jobs(write_jobs(tmp_path / "jobs.jsonl", lines))


def test_ids_default_to_line_numbers_and_paths_are_read_beside_the_jobs_file(tmp_path):
    jobs = load_jobs(write_jobs(tmp_path / "jobs.jsonl", [{"query": "q", "context_path": "docs/a.txt"}]))
    assert jobs[0].id == "line-1" and jobs[0].context_path == str(tmp_path / "docs" / "a.txt")


def test_a_line_torn_by_a_crash_is_cut_off_and_its_job_runs_again(tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text('{"id": "a", "answer": "1"}\n{"id": "b", "ans')
    assert finished_ids(out) == {"a"}
    assert out.read_text() == '{"id": "a", "answer": "1"}\n'


def test_job_options_override_the_config_and_budgets():
    config = RLMConfig().with_overrides({"max_iterations": 3, "mode": "code"})
    assert config.budgets.max_iterations == 3 and config.mode == "code"


def test_a_batch_killed_halfway_resumes_with_no_job_lost_or_written_twice(tmp_path):
    jobs = write_jobs(
        tmp_path / "jobs.jsonl",
        [{"id": f"job-{i}", "query": "What is the code?", "context": f"note: code-{i} is it"} for i in range(200)],
    )
    out = tmp_path / "out.jsonl"
    command = [sys.executable, str(HOST), str(jobs), str(out)]
    env = {**os.environ, "PYTHONPATH": str(HOST.parent)}
    first = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while (not out.exists() or out.read_text().count("\n") < 100) and time.monotonic() < deadline:
        assert first.poll() is None, "the batch ended before it was killed"
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)  # the host and its REPL workers, as a crash or an OOM kill would
    first.wait()
    killed_at = out.read_text().count("\n")
    assert 100 <= killed_at < 200
    time.sleep(1)
    orphans = subprocess.run(["pgrep", "-f", "rlm-worker-batch-job"], capture_output=True, text=True).stdout.split()
    assert orphans == [], "REPL workers outlived their killed host"
    subprocess.run(command, env=env, stderr=subprocess.DEVNULL, check=True, timeout=300)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["id"] for r in records) == sorted(f"job-{i}" for i in range(200))  # each once
    assert all(r["answer"] == r["id"].removeprefix("job-") for r in records)


class FakeActor:
    """A Ray actor handle's shape (`actor.run.remote(job)` is awaitable) for the driver's failover logic."""

    def __init__(self, name: str, dies_after: int | None = None) -> None:
        self.name, self.dies_after, self.ran = name, dies_after, 0
        self.run = self
        self.start = self

    def remote(self, job: dict | None = None) -> object:
        from ray.exceptions import RayActorError

        async def reply() -> dict:
            await asyncio.sleep(0.01)
            if self.dies_after is not None and self.ran >= self.dies_after:
                raise RayActorError()
            self.ran += 1
            return {"id": job["id"], "answer": self.name}

        return reply()


async def test_a_ray_workers_lost_jobs_go_to_another_worker_and_none_left_is_a_failed_result() -> None:
    from rlm_local.batch import Job
    from rlm_local.batch_ray import RayWorkers

    workers = RayWorkers([FakeActor("a", dies_after=2), FakeActor("b")])
    jobs = [Job(id=f"j{i}", query="q", context="c") for i in range(8)]
    results = await asyncio.gather(*(workers.run(job) for job in jobs))
    assert [r["id"] for r in results] == [job.id for job in jobs]
    assert all(r["answer"] in ("a", "b") for r in results) and workers.alive == [False, True]
    assert sum(r["answer"] == "a" for r in results) == 2  # what "a" finished before it died stands

    alone = RayWorkers([FakeActor("c", dies_after=0)])
    assert await alone.run(jobs[0]) == {
        "id": "j0",
        "answer": None,
        "stop_reason": "error",
        "stop_detail": "every Ray worker is lost",
    }
