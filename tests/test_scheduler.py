"""The scheduler: ordering, fairness, admission, cancellation and routing (fast, with a fake engine), then the same
claims on the real vLLM engine with the real 0.5B model (`-m engine`), plus deployment files and the engines table."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from rlm_local.deployment import (
    build_engines,
    check_memory_split,
    engines_command,
    load_deployment,
    parse_deployment,
    render_engines,
)
from rlm_local.engines.base import Engine, Generation, GenerationRequest, SamplingOptions
from rlm_local.errors import ConfigError, EngineError
from rlm_local.scheduler import (
    AdmissionLimits,
    FairQueue,
    LimitOverrides,
    RunAborted,
    Scheduler,
    class_label,
    derive_limits,
    priority_of,
)
from rlm_local.scheduler.metrics import percentile, start_metrics_server

ON_ENGINE_LOOP = pytest.mark.asyncio(loop_scope="module")  # the module-scoped engine lives on the module's loop

EXAMPLES = Path(__file__).resolve().parent.parent / "docs" / "examples"


class FakeEngine(Engine):
    """Answers after `delay_s`, or when `gate` opens; records what ran, how many at once, and cancellations."""

    def __init__(
        self,
        name: str = "fake",
        *,
        max_num_seqs: int = 4,
        delay_s: float = 0.0,
        gated: bool = False,
        fail_on: str | None = None,
        cached_fraction: float = 0.5,
    ) -> None:
        self.name = name
        self.model = f"{name}-model"
        self.max_model_len = 4096
        self.max_num_seqs = max_num_seqs
        self.delay_s = delay_s
        self.gate = asyncio.Event() if gated else None
        self.fail_on = fail_on
        self.cached_fraction = cached_fraction
        self.started: list[GenerationRequest] = []
        self.active: Counter[str] = Counter()
        self.concurrent = 0
        self.peak = 0
        self.cancelled = 0

    def count_tokens(self, messages: list[dict[str, str]]) -> int:
        return sum(len(m["content"]) // 4 + 4 for m in messages)

    async def generate(self, request: GenerationRequest) -> Generation:
        self.started.append(request)
        self.concurrent += 1
        self.peak = max(self.peak, self.concurrent)
        self.active[request.run_id] += 1
        try:
            if self.gate is not None:
                await self.gate.wait()
            else:
                await asyncio.sleep(self.delay_s)
            if self.fail_on and self.fail_on in request.messages[-1]["content"]:
                raise EngineError("boom")
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.concurrent -= 1
            self.active[request.run_id] -= 1
        tokens = self.count_tokens(request.messages)
        return Generation(
            text=f"{request.kind}:{request.run_id}:{request.messages[-1]['content']}",
            prompt_tokens=tokens,
            cached_tokens=int(tokens * self.cached_fraction),
            completion_tokens=3,
            queue_s=0.001,
            first_token_s=0.002,
            engine=self.name,
        )

    def requests_of(self, run_id: str) -> int:
        return self.active[run_id]


def req(run_id: str, kind: str = "sub", text: str = "hello", depth: int | None = None) -> GenerationRequest:
    depth = (0 if kind == "root" else 1) if depth is None else depth
    return GenerationRequest(
        messages=[{"role": "user", "content": text}],
        options=SamplingOptions(max_tokens=8),
        kind=kind,  # type: ignore[arg-type]
        run_id=run_id,
        depth=depth,
    )


async def until(predicate, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


# ---- priority classes and the fair queue ---------------------------------------------------------------------------


def test_priority_classes() -> None:
    assert priority_of("root", 0) == 0
    assert priority_of("sub", 0) == 1
    assert priority_of("root", 1) == 2
    assert priority_of("sub", 1) == 3
    assert priority_of("root", 1) < priority_of("sub", 1) < priority_of("root", 2)
    assert class_label(0) == "root@0" and class_label(3) == "sub@1"


def test_fair_queue_orders_classes_and_rotates_runs() -> None:
    q: FairQueue[str] = FairQueue()
    for i in range(4):
        q.push(3, "A", f"A{i}")
    q.push(3, "B", "B0")
    q.push(3, "B", "B1")
    q.push(0, "C", "root-C")
    assert q.peek() == (0, "root-C")
    order = [q.pop() for _ in range(len(q))]
    assert order == ["root-C", "A0", "B0", "A1", "B1", "A2", "A3"]
    q.push(1, "A", "x")
    q.push(1, "B", "y")
    assert q.remove(1, "A", "x") and not q.remove(1, "A", "x")
    assert q.drop_run("B") == ["y"] and len(q) == 0 and q.peek() is None


def test_limits_derive_from_capacity() -> None:
    engine = FakeEngine(max_num_seqs=32)
    limits = derive_limits(engine)
    assert limits.max_in_flight == 32 and limits.reserved_for_roots == 2 and limits.max_sub_in_flight == 30
    engine.kv_cache_tokens = 10_000  # type: ignore[attr-defined]
    assert derive_limits(engine, LimitOverrides(kv_fraction=0.5)).max_prompt_tokens == 5_000
    assert derive_limits(FakeEngine(max_num_seqs=1)).reserved_for_roots == 0
    assert derive_limits(engine, LimitOverrides(max_in_flight=2, reserved_for_roots=5)).reserved_for_roots == 1
    with pytest.raises(ValueError):
        AdmissionLimits(max_in_flight=2, max_prompt_tokens=10, reserved_for_roots=2)


# ---- ordering, fairness, admission ---------------------------------------------------------------------------------


async def test_root_turn_overtakes_queued_subcalls() -> None:
    engine = FakeEngine(delay_s=0.01)
    sched = Scheduler([engine], limits=LimitOverrides(max_in_flight=1, reserved_for_roots=0))
    subs = [asyncio.create_task(sched.sub_engine.generate(req("A", text=f"s{i}"))) for i in range(20)]
    await until(lambda: len(engine.started) == 1)
    root = asyncio.create_task(sched.root_engine.generate(req("B", "root")))
    results = await asyncio.gather(*subs, root)
    position = next(i for i, r in enumerate(engine.started) if r.kind == "root")
    assert position == 1, "the root turn runs as soon as the running sub-call ends"
    assert engine.started[position].priority == 0 and engine.started[0].priority == 3
    sub_waits = [g.queue_s for g in results[:-1]]
    assert results[-1].queue_s < percentile(sub_waits, 50)  # type: ignore[operator]


async def test_reserved_slots_let_a_root_in_while_subcalls_saturate() -> None:
    engine = FakeEngine(gated=True)
    sched = Scheduler([engine], limits=LimitOverrides(max_in_flight=4, reserved_for_roots=1))
    subs = [asyncio.create_task(sched.generate(req("A", text=f"s{i}"))) for i in range(10)]
    await until(lambda: engine.concurrent == 3)
    await asyncio.sleep(0.02)
    assert engine.concurrent == 3 and sched.queued() == 7, "sub-calls leave the reserved slot free"
    root = asyncio.create_task(sched.generate(req("B", "root")))
    await until(lambda: engine.concurrent == 4)
    assert engine.started[-1].kind == "root"
    engine.gate.set()  # type: ignore[union-attr]
    await asyncio.gather(*subs, root)
    assert engine.peak == 4


async def test_runs_take_turns_within_a_class() -> None:
    engine = FakeEngine(gated=True)
    sched = Scheduler([engine], limits=LimitOverrides(max_in_flight=1, reserved_for_roots=0))
    tasks = [asyncio.create_task(sched.generate(req("A", text=f"a{i}"))) for i in range(30)]
    await until(lambda: len(engine.started) == 1)
    tasks += [asyncio.create_task(sched.generate(req("B", text=f"b{i}"))) for i in range(3)]
    await asyncio.sleep(0.01)
    engine.gate.set()  # type: ignore[union-attr]
    await asyncio.gather(*tasks)
    order = [r.run_id for r in engine.started]
    assert [i for i, run in enumerate(order) if run == "B"] == [2, 4, 6], order[:8]


async def test_deeper_recursion_waits_for_shallower() -> None:
    engine = FakeEngine(gated=True)
    sched = Scheduler([engine], limits=LimitOverrides(max_in_flight=1, reserved_for_roots=0))
    first = asyncio.create_task(sched.generate(req("A", text="busy")))
    await until(lambda: len(engine.started) == 1)
    tasks = [
        asyncio.create_task(sched.generate(req("A", "sub", "sub@2", depth=2))),
        asyncio.create_task(sched.generate(req("A", "sub", "sub@1", depth=1))),
        asyncio.create_task(sched.generate(req("A", "root", "root@1", depth=1))),
        asyncio.create_task(sched.generate(req("A", "root", "root@0", depth=0))),
    ]
    await asyncio.sleep(0.01)
    engine.gate.set()  # type: ignore[union-attr]
    await asyncio.gather(first, *tasks)
    order = [r.messages[0]["content"] for r in engine.started[1:]]
    assert order == ["root@0", "root@1", "sub@1", "sub@2"]  # priorities 0, 2, 3, 5


async def test_thousand_subcalls_never_exceed_the_in_flight_limit() -> None:
    engine = FakeEngine(delay_s=0.001)
    sched = Scheduler([engine], limits=LimitOverrides(max_in_flight=8, reserved_for_roots=2))
    seen: list[int] = []

    async def sample() -> None:
        while True:
            seen.append(sched.in_flight())
            await asyncio.sleep(0)

    sampler = asyncio.create_task(sample())
    results = await asyncio.gather(*(sched.generate(req(f"run{i % 5}", text=f"q{i}")) for i in range(1000)))
    sampler.cancel()
    assert len(results) == 1000 and all(g.text.startswith("sub:") for g in results)
    assert engine.peak == 6, "sub-calls use max_in_flight - reserved_for_roots slots, never more"
    assert max(seen) <= 8 and sched.slots[0].peak_in_flight == 6
    assert sched.in_flight() == 0 and sched.queued() == 0


async def test_callers_feel_backpressure() -> None:
    engine = FakeEngine(gated=True)
    sched = Scheduler([engine], limits=LimitOverrides(max_in_flight=2, reserved_for_roots=0))
    tasks = [asyncio.create_task(sched.generate(req("A", text=f"s{i}"))) for i in range(5)]
    await asyncio.sleep(0.05)
    assert not any(t.done() for t in tasks) and engine.concurrent == 2 and sched.queued() == 3
    engine.gate.set()  # type: ignore[union-attr]
    await asyncio.gather(*tasks)


async def test_prompt_token_budget_bounds_admission() -> None:
    engine = FakeEngine(delay_s=0.01, max_num_seqs=10)
    sched = Scheduler([engine], limits=LimitOverrides(max_prompt_tokens=100, reserved_for_roots=0))
    text = "x" * 160  # estimated 48 tokens: two fit in 100
    await asyncio.gather(*(sched.generate(req("A", text=text)) for _ in range(6)))
    assert engine.peak == 2
    huge = await sched.generate(req("A", text="y" * 4000))  # larger than the whole budget: admitted when idle
    assert huge.text.startswith("sub:")


# ---- cancellation --------------------------------------------------------------------------------------------------


async def test_abort_run_drops_queued_and_aborts_running() -> None:
    engine = FakeEngine(gated=True)
    sched = Scheduler([engine], limits=LimitOverrides(max_in_flight=3, reserved_for_roots=0))
    a = [asyncio.create_task(sched.generate(req("A", text=f"a{i}"))) for i in range(10)]
    b = [asyncio.create_task(sched.generate(req("B", text=f"b{i}"))) for i in range(2)]
    await until(lambda: engine.concurrent == 3)
    assert sched.requests_of("A") == 10
    aborted = await sched.abort_run("A")
    assert aborted == 10
    assert sched.requests_of("A") == 0 and engine.requests_of("A") == 0
    assert sched.metrics.live("queued", run="A") == 0 and sched.metrics.live("in_flight", run="A") == 0
    engine.gate.set()  # type: ignore[union-attr]
    outcomes = await asyncio.gather(*a, return_exceptions=True)
    assert all(isinstance(o, RunAborted) for o in outcomes), outcomes
    assert engine.cancelled == 3
    assert [g.text for g in await asyncio.gather(*b)] == ["sub:B:b0", "sub:B:b1"]
    assert sched.in_flight() == 0 and sched.queued() == 0


async def test_a_cancelled_caller_takes_its_request_with_it() -> None:
    engine = FakeEngine(gated=True)
    sched = Scheduler([engine], limits=LimitOverrides(max_in_flight=1, reserved_for_roots=0))
    running = asyncio.create_task(sched.generate(req("A", text="r")))
    queued = asyncio.create_task(sched.generate(req("A", text="q")))
    await until(lambda: engine.concurrent == 1 and sched.queued() == 1)
    queued.cancel()
    await asyncio.gather(queued, return_exceptions=True)
    assert sched.queued() == 0
    running.cancel()
    await asyncio.gather(running, return_exceptions=True)
    assert engine.cancelled == 1 and sched.in_flight() == 0 and engine.concurrent == 0
    engine.gate.set()  # type: ignore[union-attr]
    assert (await sched.generate(req("A", text="after"))).text == "sub:A:after"


async def test_engine_errors_reach_the_caller_and_free_the_slot() -> None:
    engine = FakeEngine(delay_s=0.001, fail_on="bad")
    sched = Scheduler([engine])
    with pytest.raises(EngineError, match="boom"):
        await sched.generate(req("A", text="bad prompt"))
    assert sched.in_flight() == 0
    assert (await sched.generate(req("A", text="good"))).text == "sub:A:good"
    assert sched.snapshot().overall.errors == 1


# ---- routing among replicas ----------------------------------------------------------------------------------------


async def test_root_turns_stick_to_a_replica_and_subcalls_spread() -> None:
    r1, r2 = FakeEngine("r1", gated=True), FakeEngine("r2", gated=True)
    sched = Scheduler([r1, r2], [r1, r2])
    assert len(sched.slots) == 2, "an engine in both pools has one queue"
    subs = [asyncio.create_task(sched.generate(req("A", text=f"s{i}"))) for i in range(8)]
    await until(lambda: r1.concurrent + r2.concurrent == 6)
    assert r1.concurrent == 3 and r2.concurrent == 3, "sub-calls go to the least loaded replica"
    r1.gate.set()  # type: ignore[union-attr]
    r2.gate.set()  # type: ignore[union-attr]
    await asyncio.gather(*subs)
    for turn in range(3):
        for run in ("X", "Y", "Z"):
            await sched.generate(req(run, "root", f"{run} opening turn {turn}"))
    where = {
        run: {e.name for e in (r1, r2) for r in e.started if r.run_id == run and r.kind == "root"} for run in "XYZ"
    }
    assert all(len(names) == 1 for names in where.values()), where
    assert sched.router.root_replica("X") in ("r1", "r2")
    await sched.abort_run("X")
    assert sched.router.root_replica("X") is None


async def test_a_new_run_with_a_known_opening_goes_where_its_prefix_is_cached() -> None:
    r1, r2 = FakeEngine("r1", delay_s=0.001), FakeEngine("r2", delay_s=0.001)
    sched = Scheduler([r1, r2])
    opening = [{"role": "system", "content": "sys"}, {"role": "user", "content": "query over a long context"}]
    first = GenerationRequest(messages=opening, kind="root", run_id="P")
    await sched.generate(first)
    again = GenerationRequest(messages=[*opening, {"role": "assistant", "content": "x"}], kind="root", run_id="Q")
    await sched.generate(again)
    assert sched.router.root_replica("P") == sched.router.root_replica("Q")


async def test_root_and_sub_models_are_separate_pools() -> None:
    big, small = FakeEngine("big", delay_s=0.001), FakeEngine("small", delay_s=0.001)
    sched = Scheduler([big], [small])
    assert sched.root_engine.model == "big-model" and sched.sub_engine.model == "small-model"
    await sched.root_engine.generate(req("A", "root"))
    await sched.sub_engine.generate(req("A", "sub"))
    await sched.generate(req("A", "sub"))  # the scheduler itself routes by kind
    assert [r.kind for r in big.started] == ["root"] and [r.kind for r in small.started] == ["sub", "sub"]


# ---- metrics -------------------------------------------------------------------------------------------------------


async def test_metrics_per_class_and_run_and_prometheus() -> None:
    engine = FakeEngine(delay_s=0.005, cached_fraction=0.25)
    sched = Scheduler([engine], limits=LimitOverrides(max_in_flight=2, reserved_for_roots=1))
    server = start_metrics_server(0)
    try:
        await asyncio.gather(
            sched.generate(req("A", "root")), *(sched.generate(req("A", text=f"s{i}")) for i in range(6))
        )
        await sched.generate(req("B", "root"))
        snap = sched.snapshot()
        assert set(snap.by_class) == {"root@0", "sub@1"}
        assert snap.by_class["sub@1"].requests == 6 and snap.by_run["B"].requests == 1
        assert snap.overall.completion_tokens == 8 * 3 and snap.overall.tokens_per_s > 0
        assert snap.overall.prefix_hit_rate == pytest.approx(0.25, abs=0.05)
        assert snap.by_class["sub@1"].queue_wait_p99_s >= snap.by_class["sub@1"].engine_queue_p99_s  # type: ignore[operator]
        assert snap.by_class["root@0"].first_token_p50_s == pytest.approx(0.002)
        body = (await asyncio.to_thread(httpx.get, server.url)).text
        assert "rlm_queue_wait_seconds_bucket" in body and 'class_="sub@1"' in body
        assert "rlm_requests_in_flight" in body and "rlm_tokens_total" in body
    finally:
        server.close()


# ---- deployment files and the engines table ------------------------------------------------------------------------


def test_example_deployments_load() -> None:
    files = sorted(EXAMPLES.glob("*.toml"))
    assert len(files) >= 3
    for path in files:
        deployment = load_deployment(path)
        roles = deployment.resolved_roles()
        assert deployment.engine(roles.root) and deployment.engine(roles.sub)  # type: ignore[arg-type]


def test_deployment_validation_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs urls"):
        parse_deployment({"engines": [{"name": "r", "backend": "openai"}]})
    with pytest.raises(ConfigError, match="names no engine"):
        parse_deployment({"engines": [{"name": "r"}], "roles": {"root": "nope"}})
    with pytest.raises(ConfigError, match="2 gpus listed for 1 replicas"):
        parse_deployment({"engines": [{"name": "r", "gpus": ["0", "1"]}]})
    bad = tmp_path / "bad.toml"
    bad.write_text("[[engines]\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_deployment(bad)
    two = parse_deployment({"engines": [{"name": "root"}, {"name": "sub"}]})
    with pytest.raises(ConfigError, match="set gpu_memory_utilization"):
        check_memory_split(two)
    split = parse_deployment(
        {"engines": [{"name": "root", "gpu_memory_utilization": 0.55}, {"name": "sub", "gpu_memory_utilization": 0.3}]}
    )
    check_memory_split(split)
    assert split.resolved_roles().sub == "sub"


def test_limits_and_replicas_from_a_deployment() -> None:
    deployment = parse_deployment(
        {
            "scheduler": {"max_in_flight": 16, "reserved_for_roots": 2},
            "engines": [
                {"name": "root", "replicas": 2, "gpus": ["0", "1"]},
                {"name": "sub", "backend": "openai", "urls": ["http://a:1/v1", "http://b:2/v1"], "max_in_flight": 64},
            ],
        }
    )
    limits = deployment.limit_overrides()
    assert limits["root#1"].max_in_flight == 16 and limits["sub#2"].max_in_flight == 64
    configs = deployment.replica_configs(deployment.engine("sub"))
    assert [c.base_url for c in configs] == ["http://a:1/v1", "http://b:2/v1"]


async def test_render_engines_shows_configuration_and_live_figures() -> None:
    from rich.console import Console

    deployment = parse_deployment(
        {
            "engines": [
                {"name": "root", "max_num_seqs": 4},
                {"name": "sub", "backend": "openai", "urls": ["http://127.0.0.1:9/v1"]},
            ]
        }
    )
    sched = Scheduler([FakeEngine("root", delay_s=0.001)], [FakeEngine("sub", delay_s=0.001)])
    await sched.generate(req("A", "root"))
    await sched.generate(req("A", "sub"))
    console = Console(record=True, width=250)
    console.print(render_engines(deployment, sched))
    text = console.export_text()
    assert "root" in text and "sub" in text and "http://127.0.0.1:9/v1" in text and "(1 for roots)" in text
    console = Console(record=True, width=250)
    console.print(render_engines(deployment, None, {"sub": {"answering": False, "error": "x"}}))
    text = console.export_text()
    assert "DOWN" in text and "not started" in text


def test_engines_command_reports_a_server_that_does_not_answer(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "remote.toml"
    path.write_text('[[engines]]\nname = "remote"\nbackend = "openai"\nurls = ["http://127.0.0.1:9/v1"]\n')
    assert engines_command(path) == 1
    out = capsys.readouterr().out
    assert "remote" in out and "is not answering" in out


# ---- the real engine -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def real_scheduler(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """One in-process vLLM engine with the real 0.5B model, built from a deployment file as users would."""
    from rlm_local.models import resolve_model

    model = resolve_model(None, prepare=False)
    path = tmp_path_factory.mktemp("deploy") / "one.toml"
    path.write_text(
        f'[models.coder]\nmodel = "{model}"\n\n[[engines]]\nname = "local"\nmodel = "coder"\n'
        "max_model_len = 4096\nmax_num_seqs = 8\ncpu_kv_cache_gib = 2\nenforce_eager = true\n"
    )
    started = time.monotonic()
    sched = await build_engines(load_deployment(path))
    print(f"engine started in {time.monotonic() - started:.0f} s")
    yield sched
    await sched.close()


def _unfinished(engine: Engine) -> int:
    """Requests vLLM itself still holds (running or waiting)."""
    return engine._llm.get_num_unfinished_requests()  # type: ignore[attr-defined]


def _sub(run_id: str, text: str, max_tokens: int) -> GenerationRequest:
    return GenerationRequest(
        messages=[{"role": "user", "content": text}],
        options=SamplingOptions(max_tokens=max_tokens, temperature=0.0),
        kind="sub",
        run_id=run_id,
        depth=1,
    )


@pytest.mark.engine
@ON_ENGINE_LOOP
async def test_real_engine_root_turn_waits_less_than_saturating_subcalls(real_scheduler: Scheduler) -> None:
    sched = real_scheduler
    assert sched.slots[0].limits.max_in_flight == 8 and sched.slots[0].limits.reserved_for_roots == 1
    prompts = [f"Write one sentence about the number {i}." for i in range(16)]
    subs = [asyncio.create_task(sched.sub_engine.generate(_sub("A", p, 16))) for p in prompts]
    await until(lambda: sched.queued() > 0, timeout=60)
    root_request = GenerationRequest(
        messages=[{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say OK."}],
        options=SamplingOptions(max_tokens=4),
        kind="root",
        run_id="B",
    )
    root = await sched.root_engine.generate(root_request)
    sub_results = await asyncio.gather(*subs)
    sub_waits = [g.queue_s for g in sub_results]
    print(f"root wait {root.queue_s:.3f}s; sub waits p50 {percentile(sub_waits, 50):.3f}s max {max(sub_waits):.3f}s")
    assert root.text and all(g.completion_tokens > 0 for g in sub_results)
    assert root.queue_s < percentile(sub_waits, 50)  # type: ignore[operator]
    snap = sched.snapshot()
    assert snap.by_class["root@0"].requests >= 1 and snap.by_class["sub@1"].requests >= 16


@pytest.mark.engine
@ON_ENGINE_LOOP
async def test_real_engine_abort_run_leaves_none_of_its_requests(real_scheduler: Scheduler) -> None:
    sched = real_scheduler
    engine = sched.slots[0].engine
    tasks = [
        asyncio.create_task(sched.generate(_sub("C", f"Count slowly from 1 to {200 + i}.", 400))) for i in range(16)
    ]
    await until(lambda: engine.in_flight() > 0 and sched.queued() > 0, timeout=60)
    await asyncio.sleep(0.5)
    assert await sched.abort_run("C") == 16
    assert engine.requests_of("C") == 0  # type: ignore[attr-defined]
    assert sched.requests_of("C") == 0 and sched.queued() == 0
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(o, RunAborted) for o in outcomes), [repr(o)[:100] for o in outcomes]
    await until(lambda: _unfinished(engine) == 0, timeout=10)
    assert engine.in_flight() == 0
    after = await sched.generate(_sub("D", "Say hi.", 4))
    assert after.completion_tokens > 0, "the engine serves other runs after an abort"


@pytest.mark.engine
@ON_ENGINE_LOOP
async def test_real_engine_in_flight_never_exceeds_the_limit(real_scheduler: Scheduler) -> None:
    engine = real_scheduler.slots[0].engine
    sched = Scheduler([engine], limits=LimitOverrides(max_in_flight=3, reserved_for_roots=0))
    seen: list[int] = []

    async def sample() -> None:
        while True:
            seen.append(max(engine.in_flight(), _unfinished(engine)))
            await asyncio.sleep(0.002)

    sampler = asyncio.create_task(sample())
    results = await asyncio.gather(*(sched.generate(_sub(f"L{i % 4}", f"Number {i}?", 1)) for i in range(18)))
    sampler.cancel()
    assert len(results) == 18 and all(g.completion_tokens == 1 for g in results)
    assert max(seen) <= 3 and sched.slots[0].peak_in_flight == 3, max(seen)
