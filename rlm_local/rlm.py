"""The public entry point: `RLM(config).completion(query, context)`.

An `RLM` owns its engines and sandbox for its whole life, so that many completions reuse one warm engine (and its
prefix cache). The synchronous API runs on a private event loop; async callers use `acompletion`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from rlm_local.budget import BudgetExceeded, RunBudget
from rlm_local.config import RLMConfig
from rlm_local.context import ContextInput, PreparedContext, prepare_context
from rlm_local.engines.base import Engine
from rlm_local.errors import EngineError, PromptTooLong, RLMError, SandboxError
from rlm_local.repl.sandbox import Sandbox
from rlm_local.runtime.run import Outcome, RLMRun, RunTree
from rlm_local.runtime.usage import RLMResult
from rlm_local.runtime.voting import verified_vote, vote
from rlm_local.scheduler import Scheduler
from rlm_local.trajectory import EventListener, Trajectory

log = logging.getLogger(__name__)
# Set by the CLI's SIGTERM/SIGINT handler, which also raises KeyboardInterrupt. vLLM's start-up can swallow that
# exception (measured: a SIGTERM while the engine process was starting was lost, and the run went on), so a start
# that returns looks here too.
STOP_REQUESTED = threading.Event()
UNWIND_TIMEOUT_S = 30.0  # how long an interrupted run may take to abort its requests and stop its cells


def make_sandbox(config: RLMConfig) -> Sandbox:
    """Docker unless the user asked for the plain process worker: without a Docker engine `auto` fails closed, since
    running model-written code on the host must be a choice, not a fallback."""
    from rlm_local.repl.process_sandbox import ProcessSandbox

    if config.sandbox == "process":
        log.warning("sandbox 'process': model-written code runs on this host WITHOUT isolation")
        return ProcessSandbox()
    from rlm_local import docker_host
    from rlm_local.repl import docker_sandbox

    if config.sandbox == "auto" and not docker_host.docker_available():
        raise SandboxError(
            "no Docker engine answers, and model-written code runs in a Docker sandbox: start Docker (`make setup` "
            "installs it) and run `rlm-local sandbox build`, or pass `--sandbox process` to run the code on this "
            "host without isolation"
        )
    return docker_sandbox.DockerSandbox(
        image=config.docker_image,
        pool_size=config.sandbox_pool_size,
        mem_limit=config.sandbox_memory,
        cpus=config.sandbox_cpus,
        runtime=config.sandbox_runtime,
    )


class RLM:
    """Recursive Language Model runs over one set of engines and one sandbox."""

    def __init__(
        self,
        config: RLMConfig | None = None,
        *,
        root_engine: Engine | None = None,
        sub_engine: Engine | None = None,
        sandbox: Sandbox | None = None,
    ) -> None:
        self.config = config or RLMConfig()
        self.root_engine = root_engine
        self.sub_engine = sub_engine
        self.sandbox = sandbox
        self.scheduler: Scheduler | None = None
        self._owned: list[Engine | Sandbox] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    # ---- life ----------------------------------------------------------------------------------------------------
    async def start(self) -> RLM:
        """Start what was not given: the engines behind a scheduler (so that concurrent runs share them with
        priorities, fairness and admission control), and the sandbox."""
        if self.root_engine is None:
            self.scheduler = await self._start_scheduler()
            self._owned.append(self.scheduler)
            self.root_engine = self.scheduler.root_engine
            self.sub_engine = self.sub_engine or self.scheduler.sub_engine
        if self.sub_engine is None:
            self.sub_engine = self.root_engine
        if self.sandbox is None:
            self.sandbox = make_sandbox(self.config)
            self._owned.append(self.sandbox)
        if STOP_REQUESTED.is_set():
            raise KeyboardInterrupt
        return self

    async def _start_scheduler(self) -> Scheduler:
        """The config's engines, started the one way every deployment is: its deployment file, or its root (and sub)
        engine as a deployment of one (or two). In-process engines without a log file log where the root does."""
        from rlm_local.deployment import build_engines, deployment_of

        return await build_engines(deployment_of(self.config), log_file=self.config.root.log_file)

    async def aclose(self) -> None:
        owned, self._owned = self._owned, []
        for item in reversed(owned):
            try:
                await item.close()
            except Exception as exc:  # the rest still close; what failed is said
                log.warning("closing %s failed: %s", type(item).__name__, exc)

    async def __aenter__(self) -> RLM:
        try:
            return await self.start()
        except BaseException:  # `async with` does not close what a failed __aenter__ started
            await self.aclose()
            raise

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ---- runs ----------------------------------------------------------------------------------------------------
    async def acompletion(
        self,
        query: str,
        context: ContextInput | PreparedContext,
        *,
        run_id: str | None = None,
        trajectory_path: Path | None = None,
        listeners: list[EventListener] | None = None,
        cache_salt: str | None = None,
    ) -> RLMResult:
        """Answer `query` over `context`. Bad input raises `RLMError`; a run that stops early returns its reason."""
        if not query or not query.strip():
            raise RLMError("the query is empty")
        # Reading, converting and writing the context out is blocking work: off the event loop other runs share.
        prepared = (
            context if isinstance(context, PreparedContext) else await asyncio.to_thread(prepare_context, context)
        )
        await self.start()
        assert self.root_engine and self.sub_engine and self.sandbox
        run_id = run_id or uuid.uuid4().hex[:12]
        trajectory = Trajectory(trajectory_path or self.config.trajectory_path, listeners)
        tree = self.new_tree(run_id, trajectory)
        tree.cache_salt = cache_salt
        started = time.monotonic()
        try:
            outcome = await self._run_with_deadline(tree, query, prepared)
        finally:
            prepared.cleanup()
            await self._abort_leftovers(run_id)
        result = RLMResult(
            answer=outcome.answer,
            stop_reason=outcome.stop_reason,
            stop_detail=outcome.detail,
            run_id=run_id,
            turns=outcome.turns,
            elapsed_s=time.monotonic() - started,
            usage=tree.usage,
            faults=tree.faults,
            trajectory=trajectory.events,
            unreadable=prepared.unreadable,
        )
        trajectory.emit("run_end", **result.summary())
        trajectory.close()
        return result

    def new_tree(self, run_id: str, trajectory: Trajectory | None = None) -> RunTree:
        """The shared state of one run and its sub-RLMs, on this RLM's engines and sandbox."""
        assert self.root_engine and self.sub_engine and self.sandbox, "call start() first"
        return RunTree(
            config=self.config,
            root_engine=self.root_engine,
            sub_engine=self.sub_engine,
            sandbox=self.sandbox,
            run_id=run_id,
            budget=RunBudget(self.config.budgets),
            trajectory=trajectory or Trajectory(),
        )

    async def _abort_leftovers(self, run_id: str) -> None:
        """Abort what the run left in the engines: once through the scheduler, else once per distinct engine."""
        engines = (
            [self.scheduler]
            if self.scheduler
            else list({id(e): e for e in (self.root_engine, self.sub_engine)}.values())
        )
        for engine in engines:
            try:
                await engine.abort_run(run_id)
            except Exception as exc:
                log.warning("aborting what run %s left in %s failed: %s", run_id, engine.name, exc)

    async def _run_with_deadline(self, tree: RunTree, query: str, prepared: Any) -> Outcome:
        k = self.config.samples
        runs = [RLMRun(tree, query, prepared, sample=i, label=f"sample {i + 1}" if k > 1 else "main") for i in range(k)]
        try:
            async with asyncio.timeout(tree.budget.remaining_s()):
                outcomes = await asyncio.gather(*(run.run() for run in runs))
        except TimeoutError:
            return Outcome(None, "deadline", f"the {self.config.budgets.deadline_s:g}s deadline passed", runs[0].turn)
        except PromptTooLong as exc:
            return Outcome(None, "error", f"the root conversation no longer fits the model: {exc}", runs[0].turn)
        except (EngineError, SandboxError) as exc:
            return Outcome(None, "error", str(exc), runs[0].turn)
        if len(outcomes) == 1:
            return outcomes[0]
        answers = [o.answer for o in outcomes]
        try:
            answer, agreed, checks = await verified_vote(
                query, answers, [run.evidence() for run in runs], lambda p: runs[0].ask_sub_model(p, max_tokens=4)
            )
        except (BudgetExceeded, RLMError):  # no budget left to check: the vote stands
            (answer, agreed), checks = vote(answers), []
        tree.trajectory.emit(
            "vote", run_id=tree.run_id, answers=answers, chosen=answer, checks=[vars(c) for c in checks]
        )
        chosen = next((o for o in outcomes if o.answer == answer), outcomes[0])
        detail = f"{agreed} of {len(outcomes)} samples agreed" if answer is not None else chosen.detail
        return Outcome(answer, chosen.stop_reason, detail, max(o.turns for o in outcomes))

    # ---- synchronous API -----------------------------------------------------------------------------------------
    def _run_sync(self, coro: Any) -> Any:
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        task = self._loop.create_task(coro)
        try:
            return self._loop.run_until_complete(task)
        except BaseException:
            # Ctrl-C or SIGTERM landed in the loop: cancel the task and let it unwind here (abort its requests, stop
            # its cells) rather than leave it pending, to be destroyed with the loop and to fail noisily at exit.
            if not task.done():
                task.cancel()
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    self._loop.run_until_complete(asyncio.wait([task], timeout=UNWIND_TIMEOUT_S))
            elif not task.cancelled():
                task.exception()  # the interrupt raised inside the task is raised below: not "never retrieved"
            raise

    def completion(self, query: str, context: ContextInput | PreparedContext, **kwargs: Any) -> RLMResult:
        """Synchronous `acompletion`; engines stay warm between calls until `close()`."""
        return self._run_sync(self.acompletion(query, context, **kwargs))

    def close(self) -> None:
        if self._loop is not None:
            try:
                self._run_sync(self.aclose())
            finally:  # as asyncio.run does: what an interrupt left running is cancelled, not destroyed pending
                leftovers = [t for t in asyncio.all_tasks(self._loop) if not t.done()]
                for task in leftovers:
                    task.cancel()
                if leftovers:
                    with contextlib.suppress(Exception, asyncio.CancelledError):
                        self._loop.run_until_complete(asyncio.wait(leftovers, timeout=UNWIND_TIMEOUT_S))
                self._loop.close()
                self._loop = None

    def __enter__(self) -> RLM:
        try:
            self._run_sync(self.start())
        except BaseException:  # `with` does not close what a failed __enter__ started
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
