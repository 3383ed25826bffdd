"""`rlm-local serve` on the real engine and Docker sandbox, driven by the official `openai` client and httpx."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest
from openai import OpenAI
from servers import free_port

from rlm_local.synthetic import needle_task

pytestmark = pytest.mark.engine

ALICE, BOB = "alice-key-0123456789abcdef", "bob-key-0123456789abcdef00"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, subprocess.Popen]]:
    port = free_port()
    data = tmp_path_factory.mktemp("server")
    command = [sys.executable, "-m", "rlm_local.cli", "serve", "--port", str(port), "--data", str(data)]
    command += ["--sandbox", "docker", "--max-model-len", "4096", "--max-upload-mb", "1"]
    env = {**os.environ, "RLM_LOCAL_API_KEYS": f"alice:{ALICE},bob:{BOB}"}
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/health").status_code == 200:
                break
        time.sleep(1)
    yield url, process
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) in (0, 130)


def client(url: str, key: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=300)


def wait_for(http: httpx.Client, job_id: str) -> dict:
    while (job := http.get(f"/v1/jobs/{job_id}", params={"events": True}).json())["status"] in ("queued", "running"):
        time.sleep(0.5)
    return job


def messages(task) -> list[dict[str, str]]:
    return [{"role": "user", "content": task.context}, {"role": "user", "content": task.query}]


def test_the_openai_client_gets_an_answer_through_chat_completions(server):
    url, _ = server
    openai = OpenAI(base_url=f"{url}/v1", api_key=ALICE)
    assert {m.id for m in openai.models.list()} >= {"rlm", "rlm-code"}
    task = needle_task(1, chars=15_000)
    reply = openai.chat.completions.create(model="rlm", messages=messages(task))
    assert task.answer in reply.choices[0].message.content
    assert reply.usage.prompt_tokens > 0 and reply.usage.prompt_tokens_details.cached_tokens > 0


def test_streamed_progress_arrives_in_order_then_the_answer(server):
    url, _ = server
    openai = OpenAI(base_url=f"{url}/v1", api_key=ALICE)
    task = needle_task(2, chars=15_000)
    events, answer = [], ""
    for chunk in openai.chat.completions.create(model="rlm", messages=messages(task), stream=True):
        if event := (chunk.model_extra or {}).get("rlm_event"):
            assert not answer, "progress after the answer"
            events.append(event["event"])
        if chunk.choices and chunk.choices[0].delta.content:
            answer += chunk.choices[0].delta.content
    assert events[0] == "run_start" and events[-1] == "run_end" and "turn" in events
    assert task.answer in answer


def test_an_uploaded_document_answers_through_the_jobs_api_with_its_events(server):
    url, _ = server
    http = client(url, ALICE)
    task = needle_task(3, chars=15_000)
    document = http.post("/v1/files", files={"file": ("notes.txt", task.context.encode())}).json()
    job = http.post("/v1/jobs", json={"query": task.query, "documents": [document["id"]]})
    assert job.status_code == 202
    job_id = job.json()["id"]
    with http.stream("GET", f"/v1/jobs/{job_id}/events") as stream:
        lines = [line for line in stream.iter_lines() if line]
    events = [json.loads(line.removeprefix("data: "))["event"] for line in lines]
    assert events[0] == "run_start" and events[-2:] == ["run_end", "job_end"]
    done = wait_for(http, job_id)
    assert done["status"] == "done" and task.answer in done["result"]["answer"]
    assert document["id"] in {d["id"] for d in http.get("/v1/files").json()["data"]}


@contextlib.contextmanager
def hang_up_mid_run(url: str, body: dict) -> Iterator[None]:
    """A client that sends a chat completion, waits for the block to say the run is under way, then hangs up."""
    payload = json.dumps(body).encode()
    host, port = url.removeprefix("http://").split(":")
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {ALICE}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    )
    with socket.create_connection((host, int(port))) as connection:
        connection.sendall(head.encode() + payload)
        yield


def test_a_cancelled_job_and_a_client_that_goes_away_leave_no_engine_request_or_container(server):
    url, process = server
    http = client(url, ALICE)
    task = needle_task(4, chars=60_000)
    job_id = http.post("/v1/jobs", json={"query": task.query, "context": task.context}).json()["id"]
    while http.get(f"/v1/jobs/{job_id}").json()["status"] != "running":
        time.sleep(0.1)
    time.sleep(2)
    assert http.get("/v1/status").json()["engine_requests"] >= 1
    assert http.post(f"/v1/jobs/{job_id}/cancel").json()["status"] == "cancelled"
    assert http.get("/v1/status").json() == {"jobs_running": 0, "engine_requests": 0}
    other = needle_task(6, chars=60_000)  # not prefix-cached by the job above
    with hang_up_mid_run(url, {"model": "rlm", "messages": messages(other)}):
        while http.get("/v1/status").json()["engine_requests"] < 1:
            time.sleep(0.05)
    time.sleep(2)
    assert http.get("/v1/status").json() == {"jobs_running": 0, "engine_requests": 0}
    assert [j["status"] for j in http.get("/v1/jobs").json()["data"]][-2:] == ["cancelled", "cancelled"]
    running = subprocess.run(
        ["docker", "ps", "--filter", f"label=rlm-local.owner-pid={process.pid}", "--format", "{{.Names}}"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert len(running) <= 1, running  # the warm pool (one) only: the runs' own containers are gone


def test_keys_are_checked_and_one_tenant_cannot_reach_another_tenants_data(server):
    url, _ = server
    alice, bob = client(url, ALICE), client(url, BOB)
    document = alice.post("/v1/files", files={"file": ("a.txt", b"private notes")}).json()
    job_id = alice.post("/v1/jobs", json={"query": "What is this?", "context": "short"}).json()["id"]
    assert httpx.get(f"{url}/v1/models").status_code == 401
    assert httpx.get(f"{url}/v1/models", headers={"Authorization": "Bearer wrong-key-0123456789"}).status_code == 401
    assert bob.get(f"/v1/jobs/{job_id}").status_code == 404
    assert bob.post(f"/v1/jobs/{job_id}/cancel").status_code == 404
    assert bob.delete(f"/v1/files/{document['id']}").status_code == 404
    assert bob.post("/v1/jobs", json={"query": "q", "documents": [document["id"]]}).status_code == 404
    assert bob.get("/v1/files").json()["data"] == []
    assert alice.post("/v1/files", files={"file": ("big.txt", b"x" * (3 << 20))}).status_code == 413
    malformed = alice.post("/v1/jobs", content=b"{not json", headers={"content-type": "application/json"})
    assert malformed.status_code == 422
    unknown = {"model": "gpt-9", "messages": [{"role": "user", "content": "q"}], "context": "text"}
    assert alice.post("/v1/chat/completions", json=unknown).status_code == 404
    assert [d["id"] for d in alice.get("/v1/files").json()["data"]].count(document["id"]) == 1  # nothing changed
    # The owner's key can do what bob's could not. (Cancelled rather than waited for: a vague question over five
    # characters takes the small model its whole turn budget, minutes on CPU, and proves nothing more here.)
    assert alice.post(f"/v1/jobs/{job_id}/cancel").json()["status"] in ("cancelled", "done", "failed")
    assert wait_for(alice, job_id)["status"] in ("cancelled", "done", "failed")


def test_two_keys_identical_prompts_share_no_cached_tokens(server):
    url, _ = server
    task = needle_task(5, chars=8_000)

    def first_turn_cached(key: str) -> int:
        http = client(url, key)
        job_id = http.post("/v1/jobs", json={"query": task.query, "context": task.context, "model": "rlm-code"})
        events = wait_for(http, job_id.json()["id"])["events"]
        return next(e["cached_tokens"] for e in events if e["event"] == "turn")

    first_turn_cached(ALICE)
    assert first_turn_cached(ALICE) > 0  # the same prompt again: served from alice's cache
    assert first_turn_cached(BOB) == 0  # bob's salt: not one block of alice's
