"""The remote engine: streaming, usage, retries and error messages against a scripted transport (fast), then against a
real `python -m vllm.entrypoints.openai.api_server` with the real 0.5B model (`-m engine`): same answers as the
in-process engine at temperature 0, prefix-cache hits reported, and a clear error when the server is killed."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from servers import SharedVllmServer

from rlm_local.config import EngineConfig
from rlm_local.engines.base import GenerationRequest, SamplingOptions
from rlm_local.engines.openai_engine import OpenAIEngine
from rlm_local.engines.token_count import estimate_tokens
from rlm_local.engines.vllm_metrics import parse_vllm_metrics
from rlm_local.errors import ConfigError, EngineError, PromptTooLong
from rlm_local.scheduler import RunAborted, Scheduler

ON_ENGINE_LOOP = pytest.mark.asyncio(loop_scope="module")
URL = "http://server.test/v1"


def sse(*chunks: dict[str, Any]) -> bytes:
    return b"".join(f"data: {json.dumps(c)}\n\n".encode() for c in chunks) + b"data: [DONE]\n\n"


def answer(text: str, cached: int | None = None) -> bytes:
    usage: dict[str, Any] = {"prompt_tokens": 30, "completion_tokens": 2, "total_tokens": 32}
    if cached is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": cached}
    return sse(
        {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
        {"choices": [{"index": 0, "delta": {"content": text[:2]}}]},
        {"choices": [{"index": 0, "delta": {"content": text[2:]}, "finish_reason": "stop"}]},
        {"choices": [], "usage": usage},
    )


class Script:
    """A scripted server: each POST takes the next reply (status, body, or an exception to raise)."""

    def __init__(self, *replies: Any) -> None:
        self.replies = list(replies)
        self.bodies: list[dict[str, Any]] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/models"):
            return httpx.Response(200, json={"data": [{"id": "m", "max_model_len": 4096}]})
        self.bodies.append(json.loads(request.content))
        reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        if isinstance(reply, Exception):
            raise reply
        status, body = reply
        if isinstance(body, bytes):
            return httpx.Response(status, content=body, headers={"content-type": "text/event-stream"})
        return httpx.Response(status, json=body)


def engine_for(script: Any, **extra: Any) -> OpenAIEngine:
    config = EngineConfig(backend="openai", base_url=URL, served_model_name="m", extra_engine_args=extra)
    return OpenAIEngine(config, transport=httpx.MockTransport(script))


def chat(text: str = "hi", run_id: str = "r", priority: int = 3) -> GenerationRequest:
    return GenerationRequest(
        messages=[{"role": "user", "content": text}],
        options=SamplingOptions(max_tokens=16, temperature=0.0, seed=1),
        kind="sub",
        run_id=run_id,
        priority=priority,
    )


# ---- scripted server -----------------------------------------------------------------------------------------------


async def test_streams_text_usage_cached_tokens_and_priority() -> None:
    script = Script((200, answer("hello", cached=16)))
    engine = engine_for(script)
    g = await engine.generate(chat())
    assert (g.text, g.prompt_tokens, g.cached_tokens, g.completion_tokens) == ("hello", 30, 16, 2)
    assert g.finish_reason == "stop" and g.first_token_s is not None
    body = script.bodies[0]
    assert body["priority"] == 3 and body["stream"] and body["stream_options"] == {"include_usage": True}
    assert body["max_tokens"] == 16 and body["temperature"] == 0.0 and body["seed"] == 1
    await engine.close()


async def test_priority_can_be_left_out_and_cached_tokens_default_to_zero() -> None:
    script = Script((200, answer("hello")))
    engine = engine_for(script, send_priority=False)
    assert (await engine.generate(chat())).cached_tokens == 0
    assert "priority" not in script.bodies[0]
    await engine.close()


async def test_5xx_and_connection_errors_are_retried() -> None:
    script = Script((503, {"error": {"message": "busy"}}), httpx.ConnectError("refused"), (200, answer("ok")))
    engine = engine_for(script, max_retries=3)
    assert (await engine.generate(chat())).text == "ok"
    assert len(script.bodies) == 3
    await engine.close()


async def test_4xx_is_not_retried() -> None:
    script = Script((400, {"error": {"message": "temperature must be positive"}}))
    engine = engine_for(script, max_retries=3)
    with pytest.raises(EngineError, match=r"refused the request \(HTTP 400\): temperature must be positive"):
        await engine.generate(chat())
    assert len(script.bodies) == 1
    await engine.close()


async def test_a_server_that_stays_away_gives_a_clear_error() -> None:
    script = Script(httpx.ConnectError("All connection attempts failed"))
    engine = engine_for(script, max_retries=2)
    with pytest.raises(EngineError, match=r"the server at http://server.test/v1 went away / is not answering") as err:
        await engine.generate(chat())
    assert "gave up after 3 attempts" in str(err.value) and len(script.bodies) == 3
    await engine.close()


async def test_an_error_sent_inside_the_stream_is_an_engine_error() -> None:
    broken = sse({"choices": [{"index": 0, "delta": {"content": "par"}}]}, {"error": {"message": "worker crashed"}})
    engine = engine_for(Script((200, broken)))
    with pytest.raises(EngineError, match=r"the server at http://server.test/v1 failed on a request: worker crashed"):
        await engine.generate(chat())
    assert engine.in_flight() == 0
    await engine.close()


async def test_context_overflow_becomes_prompt_too_long() -> None:
    message = (
        "This model's maximum context length is 4096 tokens. However, your prompt contains 5000 input tokens, "
        "which exceeds this limit even without any output tokens."
    )
    engine = engine_for(Script((400, {"error": {"message": message}})))
    with pytest.raises(PromptTooLong) as err:
        await engine.generate(chat())
    assert (err.value.prompt_tokens, err.value.window) == (5000, 4096)
    await engine.close()


async def test_a_server_without_priority_scheduling_gets_none_after_refusing_it() -> None:
    script = Script((400, {"error": {"message": "priority scheduling is not enabled"}}), (200, answer("ok")))
    engine = engine_for(script)
    assert (await engine.generate(chat())).text == "ok"
    assert "priority" in script.bodies[0] and "priority" not in script.bodies[1] and not engine.send_priority
    await engine.close()


async def test_abort_run_closes_its_streams() -> None:
    async def slow() -> AsyncIterator[bytes]:
        yield b'data: {"choices": [{"index": 0, "delta": {"content": "a"}}]}\n\n'
        await asyncio.sleep(30)
        yield b"data: [DONE]\n\n"

    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=slow(), headers={"content-type": "text/event-stream"})

    engine = engine_for(handler)
    tasks = [asyncio.create_task(engine.generate(chat(run_id="A"))) for _ in range(3)]
    other = asyncio.create_task(engine.generate(chat(run_id="B")))
    await asyncio.sleep(0.1)
    assert engine.requests_of("A") == 3 and engine.in_flight() == 4
    assert await engine.abort_run("A") == 3
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(o, EngineError) and "aborted" in str(o) for o in outcomes)
    assert engine.requests_of("A") == 0 and engine.in_flight() == 1
    other.cancel()
    await asyncio.gather(other, return_exceptions=True)
    await engine.close()


async def test_start_learns_the_model_and_window() -> None:
    script = Script((200, answer("x")))
    config = EngineConfig(backend="openai", base_url=URL, model=None)
    engine = await OpenAIEngine.start(config, transport=httpx.MockTransport(script))
    assert engine.model == "m" and engine.max_model_len == 4096
    await engine.close()
    with pytest.raises(ConfigError, match="does not serve 'other'"):
        other = config.model_copy(update={"served_model_name": "other"})
        await OpenAIEngine.start(other, transport=httpx.MockTransport(script))
    with pytest.raises(ConfigError, match="needs base_url"):
        await OpenAIEngine.start(EngineConfig(backend="openai"))


def test_token_estimate_and_vllm_metrics_parsing() -> None:
    assert estimate_tokens([{"role": "user", "content": "x" * 400}]) == 100 + 4 + 2
    text = (
        '# HELP x\nvllm:num_requests_running{model_name="m"} 3.0\nvllm:num_requests_waiting{model_name="m"} 7.0\n'
        'vllm:prefix_cache_hits_total{model_name="m"} 50.0\nvllm:prefix_cache_queries_total{model_name="m"} 200.0\n'
    )
    assert parse_vllm_metrics(text) == {"running": 3.0, "waiting": 7.0, "prefix_hits": 50.0, "prefix_queries": 200.0}


# ---- a real vLLM server --------------------------------------------------------------------------------------------


PROMPTS = [
    "What is the capital of France? Answer in one word.",
    "Write a Python function that returns the square of a number.",
    "List three primary colors, comma separated.",
]


@pytest.fixture(scope="module")
async def real_pair(vllm_server: SharedVllmServer):  # type: ignore[no-untyped-def]
    """The shared real vLLM OpenAI server (subprocess) and an in-process engine with the same model, started
    together."""
    from rlm_local.engines.vllm_engine import VLLMEngine
    from rlm_local.models import resolve_model

    model = resolve_model(None, prepare=False)
    started = time.monotonic()
    vllm_server.start()
    local = await VLLMEngine.start(
        EngineConfig(model=model, max_model_len=4096, max_num_seqs=8, cpu_kv_cache_gib=2, enforce_eager=True)
    )
    url = await asyncio.to_thread(vllm_server.wait)
    print(f"server and in-process engine ready in {time.monotonic() - started:.0f} s")
    remote = await OpenAIEngine.start(
        EngineConfig(
            backend="openai",
            base_url=url,
            model=model,
            served_model_name=vllm_server.served_name,
            extra_engine_args={"max_retries": 2},
        )
    )
    yield local, remote, vllm_server.process
    await remote.close()
    await local.close()


@pytest.mark.engine
@ON_ENGINE_LOOP
async def test_remote_server_gives_the_same_answers_as_the_in_process_engine(real_pair) -> None:  # type: ignore[no-untyped-def]
    local, remote, _ = real_pair
    assert remote.model == "qwen-test" and remote.max_model_len == 4096
    assert remote.tokenizer is not None, "the model folder's tokenizer counts tokens exactly"
    for prompt in PROMPTS:
        request = GenerationRequest(
            messages=[{"role": "user", "content": prompt}],
            options=SamplingOptions(max_tokens=32, temperature=0.0),
            kind="sub",
            run_id="same",
            priority=3,
        )
        mine, theirs = await local.generate(request), await remote.generate(request)
        print(f"{prompt!r}: {theirs.text!r}")
        assert theirs.text == mine.text
        assert theirs.prompt_tokens == mine.prompt_tokens == remote.count_tokens(request.messages)
        assert theirs.completion_tokens == mine.completion_tokens


@pytest.mark.engine
@ON_ENGINE_LOOP
async def test_remote_server_reports_prefix_cache_hits_through_the_scheduler(real_pair) -> None:  # type: ignore[no-untyped-def]
    _, remote, _ = real_pair
    sched = Scheduler([remote])
    context = "Facts: " + " ".join(f"item {i} is {i * 7 % 13}." for i in range(70))
    first = [{"role": "system", "content": context}, {"role": "user", "content": "What is item 3?"}]
    turn = GenerationRequest(messages=first, options=SamplingOptions(max_tokens=8), kind="root", run_id="cache")
    a = await sched.root_engine.generate(turn)
    second = [*first, {"role": "assistant", "content": a.text}, {"role": "user", "content": "And item 4?"}]
    b = await sched.root_engine.generate(GenerationRequest(messages=second, options=turn.options, kind="root"))
    assert b.prompt_tokens > 256 and b.cached_tokens >= 128, (b.prompt_tokens, b.cached_tokens)
    assert sched.snapshot().overall.prefix_hit_rate


@pytest.mark.engine
@ON_ENGINE_LOOP
async def test_a_wheel_installs_into_a_clean_venv_and_answers_through_the_server(real_pair, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The wheel carries the REPL worker and the sandbox Dockerfile: installed alone (no checkout, no vLLM), it runs
    a query in the Docker sandbox against the vLLM server."""
    _, remote, _ = real_pair
    root = Path(__file__).resolve().parent.parent
    dist, venv = tmp_path / "dist", tmp_path / "venv"
    build = [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist), str(root)]
    await asyncio.to_thread(subprocess.run, build, check=True, capture_output=True, timeout=600)
    (wheel,) = dist.glob("rlm_local-*.whl")
    await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    install = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)]
    installed = await asyncio.to_thread(subprocess.run, install, capture_output=True, text=True, timeout=900)
    assert installed.returncode == 0, installed.stderr[-3000:]
    context = tmp_path / "notes.txt"
    lines = [f"Shift log {i}: the loading bay was swept and the forklifts were charged." for i in range(60)]
    lines.insert(37, "Shift log 37b: the new gate code for the loading bay is 5519.")
    context.write_text("\n".join(lines))
    command = [str(venv / "bin" / "rlm-local"), "run", "--base-url", remote.base_url, "--sandbox", "docker"]
    command += ["--context", str(context), "--query", "What is the new gate code for the loading bay?", "--quiet"]
    done = await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "5519" in done.stdout, (done.stdout, done.stderr[-2000:])
    assert "Traceback" not in done.stderr


@pytest.mark.engine
@ON_ENGINE_LOOP
async def test_a_killed_server_gives_a_clear_error_mid_run(real_pair) -> None:  # type: ignore[no-untyped-def]
    """Last in this module: it kills the server."""
    _, remote, server = real_pair
    sched = Scheduler([remote])
    long = GenerationRequest(
        messages=[{"role": "user", "content": "Count from 1 to 1000, one number per line."}],
        options=SamplingOptions(max_tokens=2000),
        kind="sub",
        run_id="doomed",
    )
    tasks = [asyncio.create_task(sched.generate(long)) for _ in range(3)]
    await asyncio.sleep(3)
    assert not any(t.done() for t in tasks)
    os.killpg(server.pid, signal.SIGKILL)
    server.wait(timeout=30)
    started = time.monotonic()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    print(f"errors after {time.monotonic() - started:.1f} s: {outcomes[0]}")
    for outcome in outcomes:
        assert isinstance(outcome, EngineError) and not isinstance(outcome, RunAborted), outcome
        assert f"the server at {remote.base_url} went away / is not answering" in str(outcome)
    assert sched.in_flight() == 0
    with pytest.raises(EngineError, match="went away / is not answering"):
        await sched.generate(long)


async def test_a_served_name_takes_its_tokenizer_and_size_from_the_card_and_replies_fit_the_window() -> None:
    """`--model served-name` alone: vLLM's card names the folder it loaded (a catalog model here), so token counts
    are exact, the small-model prompt is chosen, and a reply is capped at the room the prompt leaves."""
    from rlm_local.models import resolve_model
    from rlm_local.prompts import choose_profile

    folder = resolve_model(None, prepare=False)
    script = Script((200, answer("ok")))

    async def server(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/models"):
            return httpx.Response(200, json={"data": [{"id": "qwen-test", "root": folder, "max_model_len": 300}]})
        return await script(request)

    config = EngineConfig(backend="openai", base_url=URL, model="qwen-test")
    engine = await OpenAIEngine.start(config, transport=httpx.MockTransport(server))
    assert engine.model == "qwen-test" and engine.source == folder and engine.tokenizer is not None
    assert choose_profile("auto", engine.model, engine.source).name == "small-coder"
    assert choose_profile("auto", engine.model).name == "general"
    request = chat("word " * 200)
    request.options.max_tokens = 1024
    await engine.generate(request)
    assert script.bodies[0]["max_tokens"] == 300 - engine.count_tokens(request.messages) < 100
    with pytest.raises(PromptTooLong):
        await engine.generate(chat("word " * 400))
    await engine.close()
