"""`rlm-local batch IN.jsonl OUT.jsonl`: many runs on one set of warm engines, resumable after any crash.

Each input line is a job: {"id": optional, "query": ..., "context": inline text | "context_path": a file or folder
(relative to the jobs file), "options": RLMConfig / budget overrides}. Jobs run concurrently through the scheduler;
each result is appended to OUT as one JSON line, flushed and synced, as soon as it finishes. A restart with the same
files skips the ids OUT already holds (a line torn by `kill -9` is cut off first), so no job is lost and none is
written twice.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from rlm_local.errors import ConfigError, RLMError
from rlm_local.rlm import RLM

_TOTALS = ("prompt_tokens", "cached_tokens", "total_tokens")


class Job(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str | None = None
    query: str
    context: str | None = None
    context_path: str | None = None
    options: dict[str, Any] = {}

    @model_validator(mode="after")
    def _one_context(self) -> Job:
        if (self.context is None) == (self.context_path is None):
            raise ValueError("give exactly one of 'context' (text) and 'context_path' (a file or folder)")
        return self


def load_jobs(path: Path) -> list[Job]:
    """Every job of IN, checked before an engine starts: a bad line is an error that names it."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the jobs file {path}: {exc}") from exc
    jobs: list[Job] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            job = Job.model_validate_json(line)
        except ValidationError as exc:
            problem = exc.errors()[0]
            where = ".".join(str(p) for p in problem["loc"])
            raise ConfigError(f"{path}:{number}: {where + ': ' if where else ''}{problem['msg']}") from exc
        update: dict[str, Any] = {"id": job.id or f"line-{number}"}
        if job.context_path is not None:  # relative to the jobs file, so that a file and its documents move together
            update["context_path"] = str(path.parent / Path(job.context_path).expanduser())
        jobs.append(job.model_copy(update=update))
    if not jobs:
        raise ConfigError(f"the jobs file {path} has no jobs")
    repeated = [i for i, n in Counter(j.id for j in jobs).items() if n > 1]
    if repeated:
        raise ConfigError(f"job ids must be unique; repeated: {', '.join(map(str, repeated[:5]))}")
    return jobs


def finished_ids(out: Path) -> set[str]:
    """Ids already in OUT. A last line without its newline was torn by a crash: it is cut off, and its job reruns."""
    if not out.exists():
        return set()
    data = out.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(out, "r+b") as file:
            file.truncate(data.rfind(b"\n") + 1)
        data = data[: data.rfind(b"\n") + 1]
    return {json.loads(line)["id"] for line in data.decode("utf-8").splitlines() if line.strip()}


JobFunction = Callable[[Job], Awaitable[dict[str, Any]]]


async def run_job(rlm: RLM, job: Job) -> dict[str, Any]:
    """One job's result line on `rlm`'s engines and sandbox. A bad job is a failed result, not the end of the batch."""
    started = time.monotonic()
    record: dict[str, Any] = {"id": job.id}
    try:
        if job.options:
            config = rlm.config.with_overrides(job.options)
            rlm = RLM(config, root_engine=rlm.root_engine, sub_engine=rlm.sub_engine, sandbox=rlm.sandbox)
        context: Any = job.context if job.context is not None else Path(job.context_path or "")
        result = await rlm.acompletion(job.query, context, run_id=f"batch-{job.id}")
        record.update(result.summary())
    except (RLMError, ValidationError) as exc:
        record.update(answer=None, stop_reason="error", stop_detail=str(exc).splitlines()[0][:500])
    record["seconds"] = round(time.monotonic() - started, 2)
    return record


class BatchRunner:
    """Runs jobs `concurrency` at a time through `run` (one RLM here, or workers on a Ray cluster), appending one line
    per finished job to OUT."""

    def __init__(self, run: JobFunction, out: Path, *, concurrency: int = 4, console: Console | None = None) -> None:
        self.run_one = run
        self.out = out
        self.concurrency = concurrency
        self.console = console or Console(stderr=True)
        self.results: list[dict[str, Any]] = []
        self._totals: Counter[str] = Counter()  # for the progress line, kept as jobs finish (not re-summed)

    async def run(self, jobs: list[Job]) -> list[dict[str, Any]]:
        done = finished_ids(self.out)
        todo = [job for job in jobs if job.id not in done]
        if done:
            self.console.print(f"resuming: {len(jobs) - len(todo)} finished job(s) in {self.out} are skipped")
        self.out.parent.mkdir(parents=True, exist_ok=True)
        gate = asyncio.Semaphore(self.concurrency)
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        started = time.monotonic()
        with open(self.out, "a", encoding="utf-8") as sink, Progress(*columns, console=self.console) as progress:
            bar = progress.add_task("batch", total=len(todo), status="")

            async def one(job: Job) -> None:
                async with gate:
                    record = await self.run_one(job)
                sink.write(json.dumps(record, ensure_ascii=False) + "\n")
                sink.flush()
                os.fsync(sink.fileno())
                self.results.append(record)
                self._totals.update({k: record.get("usage", {}).get(k, 0) for k in _TOTALS})
                self._totals["failed"] += record.get("answer") is None
                progress.update(bar, advance=1, status=self._status(time.monotonic() - started))

            await asyncio.gather(*(one(job) for job in todo))
        return self.results

    def _status(self, elapsed_s: float) -> str:
        totals = self._totals
        hit = totals["cached_tokens"] / totals["prompt_tokens"] if totals["prompt_tokens"] else 0.0
        speed = totals["total_tokens"] / max(elapsed_s, 1e-9)
        return f"failed {totals['failed']}  {speed:,.0f} tok/s  cache hit {hit:.0%}"


def summary(results: list[dict[str, Any]], jobs: int, wall_s: float) -> str:
    """The lines printed when a batch ends: answers, failures by reason, tokens, wall time."""
    answered = sum(1 for r in results if r.get("answer") is not None)
    reasons = Counter(r.get("stop_reason", "?") for r in results if r.get("answer") is None)
    tokens = sum(r.get("usage", {}).get("total_tokens", 0) for r in results)
    failures = ", ".join(f"{reason}: {n}" for reason, n in reasons.most_common()) or "none"
    return (
        f"{len(results)} of {jobs} job(s) run now: {answered} answered, {len(results) - answered} without an answer "
        f"({failures}); {tokens:,} tokens; {wall_s:.1f}s"
    )
