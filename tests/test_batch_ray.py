"""`rlm-local batch --ray` on a real local Ray cluster (`ray start --head`), two workers, each with its own engine
client, sandbox and event loop, against one real vLLM server: the local batch's answers at temperature 0 (up to the
engine's batch variance, below)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from servers import SharedVllmServer, free_port

from rlm_local.synthetic import needle_task

pytestmark = pytest.mark.engine
JOBS = 8


@pytest.fixture(scope="module")
def vllm_url(vllm_server: SharedVllmServer) -> str:
    return vllm_server.start().wait()


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A real Ray head node on this machine, as `ray start` makes one for a cluster."""
    ray = str(Path(sys.executable).parent / "ray")
    port = free_port()
    temp = tmp_path_factory.mktemp("ray")
    start = [ray, "start", "--head", "--port", str(port), "--num-cpus", "2", "--include-dashboard", "false"]
    subprocess.run([*start, "--temp-dir", str(temp), "--disable-usage-stats"], check=True, capture_output=True)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([ray, "stop", "--force"], capture_output=True, timeout=120)


def batch(jobs: Path, out: Path, url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "rlm_local.cli", "batch", str(jobs), str(out), "--base-url", url]
    command += ["--model", "qwen-test", "--sandbox", "docker", "--max-model-len", "4096", *extra]
    return subprocess.run(command, capture_output=True, text=True, timeout=900)


def test_a_ray_batch_gives_the_local_batchs_answers(tmp_path: Path, vllm_url: str, ray_cluster: str) -> None:
    tasks = [needle_task(seed, chars=1_200) for seed in range(JOBS)]
    jobs = tmp_path / "jobs.jsonl"
    options = {"max_iterations": 4}  # a short tail: a lookup the model misses would take the default 20 turns
    lines = [
        json.dumps({"id": f"job-{i}", "query": t.query, "context": t.context, "options": options})
        for i, t in enumerate(tasks)
    ]
    jobs.write_text("\n".join(lines) + "\n")

    here = batch(jobs, tmp_path / "local.jsonl", vllm_url, "--concurrency", "4")
    assert here.returncode == 0, here.stderr[-3000:]
    on_ray = batch(jobs, tmp_path / "ray.jsonl", vllm_url, "--ray", ray_cluster, "--ray-workers", "2")
    assert on_ray.returncode == 0, on_ray.stderr[-3000:]

    local = {r["id"]: r for r in map(json.loads, (tmp_path / "local.jsonl").read_text().splitlines())}
    remote = {r["id"]: r for r in map(json.loads, (tmp_path / "ray.jsonl").read_text().splitlines())}
    assert len(local) == len(remote) == JOBS
    assert len({r["worker"] for r in remote.values()}) == 2  # both workers ran jobs
    same = [i for i in local if local[i]["answer"] == remote[i]["answer"]]
    right = [i for i, t in enumerate(tasks) if t.answer in (remote[f"job-{i}"]["answer"] or "")]
    print(f"ray vs local: {len(same)} of {JOBS} answers the same; {len(right)} of {JOBS} right on Ray")
    # vLLM's CPU kernels are not batch-invariant: a greedy reply can differ in its last bits, and then in a token,
    # between a batch of 4 and one of 8, so a job may go another way (30/30 in 3 of 4 runs of 30 jobs here, 29/30 once).
    assert len(same) >= JOBS - 1, {i: (local[i]["answer"], remote[i]["answer"]) for i in local if i not in same}
    assert len(right) >= JOBS // 2
    assert f"{JOBS} of {JOBS} job(s) run now" in on_ray.stdout
