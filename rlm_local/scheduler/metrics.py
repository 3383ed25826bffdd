"""Scheduler metrics: queue wait, time to first token, tokens/s, prefix-cache hit rate, requests in flight.

Why here and not in vLLM's own metrics: the figures that matter for RLM runs are per priority class (root turns vs
sub-calls) and per run, and include the time spent in *our* admission queue, which vLLM never sees. Figures are kept
in process (a bounded window of per-request samples, plus running totals) and, when `start_metrics_server` was
called, also exported for Prometheus (per class and engine; never per run, to keep label cardinality bounded).
"""

from __future__ import annotations

import math
import threading
import weakref
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

SAMPLE_WINDOW = 100_000  # per-request samples kept for percentiles


def class_label(priority: int) -> str:
    """The class name of a priority (see `rlm_local.scheduler.priority`; imported late to avoid an import cycle)."""
    from rlm_local.scheduler.priority import class_label as label

    return label(priority)


@dataclass(frozen=True)
class RequestSample:
    """One finished (or failed) request as the scheduler saw it."""

    run_id: str
    priority: int
    engine: str
    submitted_at: float  # time.monotonic() when it entered our queue
    finished_at: float
    scheduler_wait_s: float  # in our admission queue
    engine_queue_s: float  # in the engine's waiting queue, as the engine reported it (0 when unknown)
    first_token_s: float | None
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    ok: bool = True

    @property
    def queue_wait_s(self) -> float:
        return self.scheduler_wait_s + self.engine_queue_s


@dataclass(frozen=True)
class GroupStats:
    """Figures for one group of requests: a priority class, a run, an engine, or everything."""

    requests: int = 0
    errors: int = 0
    in_flight: int = 0
    queued: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    tokens_per_s: float = 0.0  # generated tokens over the span from first submission to last completion
    prefix_hit_rate: float | None = None  # cached / prompt tokens
    queue_wait_p50_s: float | None = None  # our queue + the engine's
    queue_wait_p99_s: float | None = None
    scheduler_wait_p50_s: float | None = None
    scheduler_wait_p99_s: float | None = None
    engine_queue_p50_s: float | None = None
    engine_queue_p99_s: float | None = None
    first_token_p50_s: float | None = None
    first_token_p99_s: float | None = None


@dataclass(frozen=True)
class MetricsSnapshot:
    overall: GroupStats
    by_class: dict[str, GroupStats]
    by_run: dict[str, GroupStats]
    by_engine: dict[str, GroupStats]


def percentile(values: Iterable[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    ordered = sorted(values)
    if not ordered:
        return None
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def summarize(samples: list[RequestSample], in_flight: int = 0, queued: int = 0) -> GroupStats:
    """Figures of a group of samples (the live counts come from the caller)."""
    if not samples:
        return GroupStats(in_flight=in_flight, queued=queued)
    done = [s for s in samples if s.ok]
    prompt = sum(s.prompt_tokens for s in done)
    cached = sum(s.cached_tokens for s in done)
    completion = sum(s.completion_tokens for s in done)
    span = max(s.finished_at for s in samples) - min(s.submitted_at for s in samples)
    waits = [s.queue_wait_s for s in done]
    ours = [s.scheduler_wait_s for s in done]
    engine = [s.engine_queue_s for s in done]
    ttft = [s.first_token_s for s in done if s.first_token_s is not None]
    return GroupStats(
        requests=len(samples),
        errors=len(samples) - len(done),
        in_flight=in_flight,
        queued=queued,
        prompt_tokens=prompt,
        cached_tokens=cached,
        completion_tokens=completion,
        tokens_per_s=completion / span if span > 0 else 0.0,
        prefix_hit_rate=cached / prompt if prompt else None,
        queue_wait_p50_s=percentile(waits, 50),
        queue_wait_p99_s=percentile(waits, 99),
        scheduler_wait_p50_s=percentile(ours, 50),
        scheduler_wait_p99_s=percentile(ours, 99),
        engine_queue_p50_s=percentile(engine, 50),
        engine_queue_p99_s=percentile(engine, 99),
        first_token_p50_s=percentile(ttft, 50),
        first_token_p99_s=percentile(ttft, 99),
    )


class Metrics:
    """Samples of finished requests for one scheduler, and its live requests read from its tickets (`slots`, set by
    the scheduler); `snapshot()` turns them into figures."""

    def __init__(self, window: int = SAMPLE_WINDOW) -> None:
        self._samples: deque[RequestSample] = deque(maxlen=window)
        self.slots: list[Any] = []  # objects with a `tickets` set: the scheduler's engine slots
        self._lock = threading.Lock()  # snapshots may be taken from the Prometheus server's thread
        _INSTANCES.add(self)

    # ---- recording -----------------------------------------------------------------------------------------------

    def observe(self, sample: RequestSample) -> None:
        with self._lock:
            self._samples.append(sample)
        exporter = _EXPORTER
        if exporter is not None:
            exporter.observe(sample)

    def reset(self) -> None:
        """Forget finished samples (e.g. between benchmark phases); live counts stay."""
        with self._lock:
            self._samples.clear()

    # ---- reading -------------------------------------------------------------------------------------------------
    def samples(self) -> list[RequestSample]:
        with self._lock:
            return list(self._samples)

    def live(
        self, which: str, *, engine: str | None = None, priority: int | None = None, run: str | None = None
    ) -> int:
        """Live count of 'queued' or 'in_flight' requests, optionally for one engine, class or run."""
        return sum(
            n
            for (e, p, r), n in self.live_by(which).items()
            if (engine is None or e == engine) and (priority is None or p == priority) and (run is None or r == run)
        )

    def live_by(self, which: str) -> dict[tuple[str, int, str], int]:
        """Live requests in one state ('queued' or 'in_flight') by (engine, priority, run), from the tickets."""
        state = "running" if which == "in_flight" else which
        tickets = [t for slot in self.slots for t in list(slot.tickets)]  # list(set): one step under the GIL
        return dict(Counter((t.engine, t.priority, t.run_id) for t in tickets if t.state == state))

    def snapshot(self) -> MetricsSnapshot:
        samples = self.samples()
        queued, running = self.live_by("queued"), self.live_by("in_flight")
        keys = set(queued) | set(running)

        def live(pick: int, value: Any) -> tuple[int, int]:
            return (
                sum(n for k, n in running.items() if k[pick] == value),
                sum(n for k, n in queued.items() if k[pick] == value),
            )

        def group(pick: int, attr: str) -> dict[Any, GroupStats]:
            buckets: dict[Any, list[RequestSample]] = {}
            for sample in samples:
                buckets.setdefault(getattr(sample, attr), []).append(sample)
            for key in keys:
                buckets.setdefault(key[pick], [])
            return {value: summarize(items, *live(pick, value)) for value, items in buckets.items()}

        by_class = group(1, "priority")
        return MetricsSnapshot(
            overall=summarize(samples, sum(running.values()), sum(queued.values())),
            by_class={class_label(p): stats for p, stats in sorted(by_class.items())},
            by_run=group(2, "run_id"),
            by_engine=group(0, "engine"),
        )


# ---- Prometheus ------------------------------------------------------------------------------------------------------

_INSTANCES: weakref.WeakSet[Metrics] = weakref.WeakSet()
_EXPORTER: _PrometheusExporter | None = None


class _PrometheusExporter:
    """Histograms and counters fed by `Metrics.observe`; live gauges read from every `Metrics` at scrape time."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry()
        buckets = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, math.inf)
        self.wait = Histogram(
            "rlm_queue_wait_seconds",
            "Time a request waited before running: in our admission queue (source=scheduler) or the engine's",
            ["class_", "engine", "source"],
            buckets=buckets,
            registry=self.registry,
        )
        self.ttft = Histogram(
            "rlm_time_to_first_token_seconds",
            "Engine-reported time to first token",
            ["class_", "engine"],
            buckets=buckets,
            registry=self.registry,
        )
        self.requests = Counter(
            "rlm_requests", "Finished requests", ["class_", "engine", "outcome"], registry=self.registry
        )
        self.tokens = Counter(
            "rlm_tokens",
            "Tokens of finished requests: prompt, cached (prefix-cache hits) and generated",
            ["class_", "engine", "type"],
            registry=self.registry,
        )
        self.registry.register(_LiveCollector())

    def observe(self, s: RequestSample) -> None:
        label = class_label(s.priority)
        self.requests.labels(label, s.engine, "ok" if s.ok else "error").inc()
        if not s.ok:
            return
        self.wait.labels(label, s.engine, "scheduler").observe(s.scheduler_wait_s)
        self.wait.labels(label, s.engine, "engine").observe(s.engine_queue_s)
        if s.first_token_s is not None:
            self.ttft.labels(label, s.engine).observe(s.first_token_s)
        for kind, n in (("prompt", s.prompt_tokens), ("cached", s.cached_tokens), ("generated", s.completion_tokens)):
            self.tokens.labels(label, s.engine, kind).inc(n)


class _LiveCollector:
    """`rlm_requests_in_flight` and `rlm_requests_queued` per class and engine, summed over every scheduler."""

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        for which, help_text in (
            ("in_flight", "Requests running in an engine"),
            ("queued", "Requests waiting in the scheduler's admission queue"),
        ):
            family = GaugeMetricFamily(f"rlm_requests_{which}", help_text, labels=["class_", "engine"])
            totals: Counter[tuple[str, str]] = Counter()
            for metrics in list(_INSTANCES):
                for (engine, priority, _run), n in metrics.live_by(which).items():
                    totals[(class_label(priority), engine)] += n
            for (label, engine), n in sorted(totals.items()):
                family.add_metric([label, engine], n)
            yield family


@dataclass
class MetricsServer:
    """A running exposition endpoint; `close()` stops it."""

    host: str
    port: int
    _server: Any
    _thread: threading.Thread

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def start_metrics_server(port: int, host: str = "127.0.0.1") -> MetricsServer:
    """Serve Prometheus metrics of every scheduler in this process on host:port (port 0: any free port)."""
    global _EXPORTER
    from prometheus_client import start_http_server

    if _EXPORTER is None:
        _EXPORTER = _PrometheusExporter()
    server, thread = start_http_server(port, addr=host, registry=_EXPORTER.registry)
    return MetricsServer(host, server.server_port, server, thread)
