"""Running evaluation tasks: every system (RLM settings, or the base model) on the same warm engines.

Tasks run concurrently through the scheduler, results are appended to `results.jsonl` as each finishes (so a
crash loses nothing), and a rerun into the same folder skips what is already there.
"""

from __future__ import annotations

import asyncio
import json
import time
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from rlm_local.config import RLMConfig
from rlm_local.errors import ConfigError
from rlm_local.eval.baseline import base_completion, base_record, context_tokens
from rlm_local.eval.scoring import score_answer
from rlm_local.eval.tasks import EvalTask
from rlm_local.rlm import RLM

RESULTS = "results.jsonl"


@dataclass(frozen=True)
class System:
    """What answers: `base`, or `rlm` with RLMConfig overrides, written `rlm:guards=false,max_iterations=8`."""

    name: str
    kind: str  # "rlm" | "base"
    overrides: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> System:
        kind, _, settings = text.strip().partition(":")
        if kind not in ("rlm", "base"):
            raise ConfigError(f"unknown system {text!r}: use 'rlm', 'base' or 'rlm:key=value,...'")
        if kind == "base" and settings:
            raise ConfigError("the base system takes no settings")
        overrides: dict[str, Any] = {}
        for item in filter(None, settings.split(",")):
            key, eq, value = item.partition("=")
            if not eq:
                raise ConfigError(f"system setting {item!r} is not key=value")
            overrides[key.strip()] = _value(value.strip())
        return cls(text.strip(), kind, overrides)

    def config(self, base: RLMConfig) -> RLMConfig:
        """`base` with this system's overrides; budget fields may be named directly."""
        return base.with_overrides(self.overrides)


def _value(text: str) -> Any:
    lowered = text.lower()
    if lowered in ("true", "on", "yes"):
        return True
    if lowered in ("false", "off", "no"):
        return False
    try:
        return json.loads(text)
    except ValueError:
        return text


def result_key(model: str, system: str, task_id: str) -> str:
    return f"{model}|{system}|{task_id}"


def load_results(out: Path) -> list[dict[str, Any]]:
    """Every finished result in an output folder (a torn last line from a crash is ignored)."""
    path = out / RESULTS
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


class EvalRunner:
    """Runs tasks x systems on one RLM's engines and sandbox, writing one JSON line per finished task."""

    def __init__(self, rlm: RLM, out: Path, *, concurrency: int = 4, console: Console | None = None) -> None:
        self.rlm = rlm
        self.out = out
        self.concurrency = concurrency
        self.console = console or Console(stderr=True)
        self._write_lock = asyncio.Lock()
        self._tokens: dict[str, int] = {}
        self._version = code_version()

    async def run(self, tasks: list[EvalTask], systems: list[System]) -> list[dict[str, Any]]:
        await self.rlm.start()
        assert self.rlm.root_engine is not None
        model = self.rlm.root_engine.model
        self.out.mkdir(parents=True, exist_ok=True)
        done = {result_key(r["model"], r["system"], r["task_id"]) for r in load_results(self.out)}
        todo = [(s, t) for s in systems for t in tasks if result_key(model, s.name, t.task_id) not in done]
        skipped = len(systems) * len(tasks) - len(todo)
        if skipped:
            self.console.print(f"resuming: {skipped} finished task(s) in {self.out / RESULTS} are skipped")
        rlms = {s.name: self._rlm_for(s) for s in systems if s.kind == "rlm"}
        gate = asyncio.Semaphore(self.concurrency)
        records: list[dict[str, Any]] = []
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=self.console, transient=False) as progress:
            bar = progress.add_task(f"eval {model}", total=len(todo))

            async def one(system: System, task: EvalTask) -> None:
                async with gate:
                    record = await self._run_one(model, system, task, rlms.get(system.name))
                await self._append(record)
                records.append(record)
                mark = "ok " if record["exact"] else "bad"
                progress.console.print(
                    f"{mark} {system.name:<10} {task.task_id:<40} score {record['score']:.2f} "
                    f"sub-calls {record['sub_calls']:>3} {record['seconds']:.0f}s"
                )
                progress.advance(bar)

            await asyncio.gather(*(one(s, t) for s, t in todo))
        return records

    def _rlm_for(self, system: System) -> RLM:
        """An RLM with the system's settings, sharing the warm engines and sandbox."""
        rlm = self.rlm
        return RLM(
            system.config(rlm.config), root_engine=rlm.root_engine, sub_engine=rlm.sub_engine, sandbox=rlm.sandbox
        )

    async def _run_one(self, model: str, system: System, task: EvalTask, rlm: RLM | None) -> dict[str, Any]:
        engine = self.rlm.root_engine
        assert engine is not None
        record: dict[str, Any] = {
            **task.to_json(),
            "model": model,
            "system": system.name,
            "window": engine.max_model_len,
            "context_tokens": await self._context_tokens(task),
        }
        run_id = f"eval-{uuid.uuid4().hex[:12]}"
        started = time.monotonic()
        try:
            if rlm is None:
                cost = base_record(await base_completion(engine, task.query, task.context, run_id=run_id))
            else:
                cost = await self._rlm_run(rlm, system, task, run_id)
            record.update(cost, error=None)
        except Exception as exc:  # one broken task must not end the evaluation: it is recorded and scored 0
            record.update(answer=None, stop_reason="error", error=f"{type(exc).__name__}: {exc}")
            record["traceback"] = traceback.format_exc(limit=5)
        record["seconds"] = round(time.monotonic() - started, 2)
        record["commit"] = self._version
        score = score_answer(task, record.get("answer"))
        record.update(score=round(score.score, 4), exact=score.exact)
        for key in ("turns", "sub_calls", "prompt_tokens", "cached_tokens", "completion_tokens", "total_tokens"):
            record.setdefault(key, 0)
        return record

    async def _rlm_run(self, rlm: RLM, system: System, task: EvalTask, run_id: str) -> dict[str, Any]:
        trajectory = self.out / "trajectories" / _slug(system.name) / f"{_slug(task.task_id)}.jsonl"
        trajectory.unlink(missing_ok=True)  # a run cut short by a crash starts over
        result = await rlm.acompletion(task.query, task.context, run_id=run_id, trajectory_path=trajectory)
        usage = result.usage
        return {
            "answer": result.answer,
            "stop_reason": result.stop_reason,
            "turns": result.turns,
            "sub_calls": usage.sub_calls,
            "prompt_tokens": usage.prompt_tokens,
            "cached_tokens": usage.cached_tokens,
            "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens,
            "trajectory": str(trajectory.relative_to(self.out)),
        }

    async def _context_tokens(self, task: EvalTask) -> int:
        if task.task_id not in self._tokens:
            engine = self.rlm.root_engine
            assert engine is not None
            self._tokens[task.task_id] = await asyncio.to_thread(context_tokens, engine, task.context)
        return self._tokens[task.task_id]

    async def _append(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, ensure_ascii=False, default=str) + "\n"
        async with self._write_lock:
            with open(self.out / RESULTS, "a", encoding="utf-8") as f:
                f.write(line)


def code_version() -> str:
    """The commit of this checkout (with '+' when it has uncommitted changes), kept in every result row."""
    import subprocess

    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "rlm_local", "sandbox"], cwd=root, capture_output=True, text=True
        )
    except OSError:
        return "unknown"
    version = head.stdout.strip() or "unknown"
    return f"{version}+" if dirty.stdout.strip() else version


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)
