"""`rlm-local batch` on the real engine and Docker sandbox: 6 jobs, killed with SIGKILL mid-batch, rerun: every job
once, each with its own answer."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from rlm_local.synthetic import needle_task

pytestmark = pytest.mark.engine


def test_a_batch_killed_mid_run_resumes_on_the_real_engine(tmp_path):
    tasks = [needle_task(seed, chars=2_000) for seed in range(6)]
    jobs = tmp_path / "jobs.jsonl"
    for i, task in enumerate(tasks):
        (tmp_path / f"doc-{i}.txt").write_text(task.context)
    jobs.write_text(
        "".join(
            json.dumps({"id": f"doc-{i}", "query": t.query, "context_path": f"doc-{i}.txt"}) + "\n"
            for i, t in enumerate(tasks)
        )
    )
    out = tmp_path / "out.jsonl"
    command = [sys.executable, "-m", "rlm_local.cli", "batch", str(jobs), str(out), "--concurrency", "4"]
    command += ["--sandbox", "docker", "--max-model-len", "4096"]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 400
    while not (out.exists() and out.read_text().count("\n") >= 2) and time.monotonic() < deadline:
        assert first.poll() is None, first.stderr.read().decode()[-2000:]
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGKILL)  # the CLI and its engine processes, as a crash would
    first.wait()
    done_before = out.read_text().count("\n")
    assert 1 <= done_before < len(tasks)
    second = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-2000:]
    assert f"resuming: {done_before} finished job(s)" in second.stderr
    records = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert len(records) == len(tasks) == out.read_text().count("\n")  # every job once
    right = [i for i, t in enumerate(tasks) if t.answer in (records[f"doc-{i}"]["answer"] or "")]
    assert len(right) >= len(tasks) // 2, records  # the 0.5B model finds most needles
    for i, task in enumerate(tasks):  # and no result holds another job's needle
        others = [records[f"doc-{j}"]["answer"] or "" for j in range(len(tasks)) if j != i]
        assert not any(task.answer in answer for answer in others)
    assert "answered" in second.stdout  # the summary line
