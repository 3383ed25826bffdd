"""Runs as server-side jobs: they outlive the request that started them, stream their events, and can be cancelled.

A cancelled job is a cancelled task: the run unwinds as on Ctrl-C, aborting its engine requests and stopping its
container. Each tenant has a cap on running jobs (the rest wait in its queue) and on queued jobs (then 429).
Every job is also a JSON file under the server's data folder, rewritten when its status changes, so that results
outlive a restart, and a job that a crash or `kill -9` cut off reads `interrupted` after it instead of vanishing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import HTTPException

from rlm_local.errors import RLMError
from rlm_local.rlm import RLM
from rlm_local.server.auth import Tenant

log = logging.getLogger(__name__)

FINISHED = ("done", "failed", "cancelled", "interrupted")


@dataclass
class Job:
    id: str
    tenant: Tenant
    query: str
    model: str
    status: str = "queued"
    created_at: float = field(default_factory=time.time)
    events: list[dict[str, Any]] = field(default_factory=list)
    result: dict[str, Any] | None = None
    error: str | None = None
    task: asyncio.Task[None] | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def emit(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        self.changed.set()

    def record(self) -> dict[str, Any]:
        """What the data folder keeps of the job: its public view with events, and whose it is."""
        return {**self.public(with_events=True), "tenant": self.tenant.name, "query": self.query}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Job:
        job = cls(record["id"], Tenant(record["tenant"]), record["query"], record["model"], record["status"])
        job.created_at, job.result, job.error = record["created_at"], record["result"], record["error"]
        job.events = record.get("events", [])
        return job

    def public(self, *, with_events: bool = False) -> dict[str, Any]:
        view = {
            "id": self.id,
            "object": "rlm.job",
            "model": self.model,
            "status": self.status,
            "created_at": int(self.created_at),
            "result": self.result,
            "error": self.error,
        }
        if with_events:
            view["events"] = self.events
        return view


class JobManager:
    def __init__(
        self,
        rlm: RLM,
        profiles: dict[str, RLM],
        *,
        max_running: int,
        max_queued: int,
        folder: Path | None = None,
    ) -> None:
        self.rlm = rlm
        self.profiles = profiles  # model name -> an RLM on the shared engines and sandbox
        self.max_running = max_running
        self.max_queued = max_queued
        self.folder = folder  # one JSON file per job; None keeps jobs in memory only
        self.jobs: dict[str, Job] = self._load() if folder is not None else {}
        self._gates: dict[str, asyncio.Semaphore] = defaultdict(lambda: asyncio.Semaphore(self.max_running))

    def _load(self) -> dict[str, Job]:
        """The jobs of earlier server lives. One still queued or running was cut off by a crash: it is interrupted."""
        assert self.folder is not None
        self.folder.mkdir(parents=True, exist_ok=True)
        jobs = {}
        for path in sorted(self.folder.glob("job-*.json")):
            try:
                job = Job.from_record(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("skipping the unreadable job file %s: %s", path, exc)
                continue
            if job.status not in FINISHED:
                job.status, job.error = "interrupted", "the server stopped before the job finished"
                self._save(job)
            jobs[job.id] = job
        return jobs

    def _save(self, job: Job) -> None:
        """Write the job's file whole (a temporary file renamed over it), so that a crash leaves the old or the new."""
        if self.folder is None:
            return
        path = self.folder / f"{job.id}.json"
        temporary = path.with_suffix(".tmp")
        try:
            temporary.write_text(json.dumps(job.record(), ensure_ascii=False, default=str), encoding="utf-8")
            os.replace(temporary, path)
        except OSError as exc:  # a full disk must not fail a run: the job stays served from memory
            log.warning("could not save job %s to %s: %s", job.id, path, exc)

    def submit(self, tenant: Tenant, model: str, query: str, context: Any, cleanup: Path | None = None) -> Job:
        if model not in self.profiles:
            raise HTTPException(404, f"no model {model!r}: GET /v1/models lists them")
        waiting = sum(1 for j in self.jobs.values() if j.tenant == tenant and j.status in ("queued", "running"))
        if waiting >= self.max_running + self.max_queued:
            raise HTTPException(429, f"{waiting} jobs already running or queued for this key")
        job = Job(f"job-{uuid.uuid4().hex[:20]}", tenant, query, model)
        self.jobs[job.id] = job
        self._save(job)
        job.task = asyncio.create_task(self._run(job, context, cleanup))
        return job

    async def _run(self, job: Job, context: Any, cleanup: Path | None) -> None:
        try:
            async with self._gates[job.tenant.name]:
                job.status = "running"
                job.changed.set()
                self._save(job)
                result = await self.profiles[job.model].acompletion(
                    job.query, context, run_id=job.id, listeners=[job.emit], cache_salt=job.tenant.cache_salt
                )
            job.result = result.summary()
            job.status = "done"
        except asyncio.CancelledError:
            job.status = "cancelled" if job.status != "interrupted" else job.status
            raise
        except RLMError as exc:
            job.status, job.error = "failed", str(exc)
        finally:
            if cleanup is not None:
                shutil.rmtree(cleanup, ignore_errors=True)
            job.changed.set()
            self._save(job)

    def get(self, tenant: Tenant, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None or job.tenant != tenant:  # another tenant's job does not exist, as far as this key knows
            raise HTTPException(404, f"no job {job_id!r}")
        return job

    def list(self, tenant: Tenant) -> list[Job]:
        return [j for j in self.jobs.values() if j.tenant == tenant]

    async def cancel(self, job: Job) -> None:
        if job.task is not None and not job.task.done():
            job.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await job.task

    async def wait(self, job: Job) -> None:
        if job.task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(job.task)

    async def follow(self, job: Job) -> AsyncIterator[dict[str, Any]]:
        """The job's events from the first, then live ones, until it finishes."""
        sent = 0
        while True:
            job.changed.clear()
            while sent < len(job.events):
                yield job.events[sent]
                sent += 1
            if job.status in FINISHED:
                return
            await job.changed.wait()

    async def shutdown(self) -> None:
        """Running jobs are marked interrupted (their runs unwind); the server then stops."""
        for job in self.jobs.values():
            if job.status in ("queued", "running"):
                job.status = "interrupted"
                await self.cancel(job)

    def running(self) -> int:
        return sum(1 for j in self.jobs.values() if j.status == "running")


def documents_context(paths: list[Path]) -> tuple[Path, Path | None]:
    """One document is its file; several are hard-linked into a temporary folder (removed when the job ends)."""
    if len(paths) == 1:
        return paths[0], None
    folder = Path(tempfile.mkdtemp(prefix="rlm-serve-docs-"))
    for i, path in enumerate(paths):
        target = folder / f"{i:03d}-{path.name}"
        try:
            os.link(path, target)
        except OSError:
            shutil.copyfile(path, target)
    return folder, folder


def profile_rlms(rlm: RLM, overrides: dict[str, dict[str, Any]]) -> dict[str, RLM]:
    """One RLM per served model name, all on the same engines and sandbox."""
    profiles = {}
    for name, changes in overrides.items():
        config = rlm.config.with_overrides(changes)
        profiles[name] = RLM(config, root_engine=rlm.root_engine, sub_engine=rlm.sub_engine, sandbox=rlm.sandbox)
    return profiles
