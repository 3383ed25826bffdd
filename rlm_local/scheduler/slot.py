"""One engine behind the scheduler: its fair queue, its admission limits, the requests it runs, per run.

Why the caller's own task waits for admission and then runs the request in a child task: backpressure is a plain
`await`, a caller that is cancelled takes its request with it (queued: removed; running: the engine aborts it), and
`abort_run` can cancel a run's running requests without touching the callers' tasks.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import Literal

from rlm_local.engines.base import Engine, Generation, GenerationRequest
from rlm_local.scheduler.admission import AdmissionLimits
from rlm_local.scheduler.errors import RunAborted
from rlm_local.scheduler.fair_queue import FairQueue
from rlm_local.scheduler.metrics import Metrics, RequestSample
from rlm_local.scheduler.priority import is_root_class

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Ticket:
    """One request from submission to completion: the one record of what is queued and running (counts, aborts and
    the live metrics are all read from tickets)."""

    request: GenerationRequest
    engine: str
    priority: int
    tokens: int
    enqueued_at: float
    admitted: asyncio.Future[None]
    state: Literal["queued", "running", "done"] = "queued"
    task: asyncio.Task[Generation] | None = None
    aborted: bool = False

    @property
    def run_id(self) -> str:
        return self.request.run_id


class EngineSlot:
    """Admits requests into one engine in priority/fair order within its limits; aborts runs."""

    def __init__(self, engine: Engine, name: str, limits: AdmissionLimits, metrics: Metrics) -> None:
        self.engine = engine
        self.name = name
        self.limits = limits
        self.metrics = metrics
        self.tickets: set[Ticket] = set()  # queued and running
        self.peak_in_flight = 0
        self._queue: FairQueue[Ticket] = FairQueue()
        self._in_flight = 0  # running tickets and their prompt tokens, kept as sums for admission's hot path
        self._in_flight_tokens = 0

    # ---- figures -------------------------------------------------------------------------------------------------
    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def queued(self) -> int:
        return len(self._queue)

    def load(self) -> float:
        """Work held (running + queued) per admission slot: the router sends sub-calls to the lowest."""
        return (self._in_flight + len(self._queue)) / self.limits.max_in_flight

    def requests_of(self, run_id: str) -> int:
        return sum(1 for ticket in self.tickets if ticket.run_id == run_id)

    # ---- requests ------------------------------------------------------------------------------------------------
    async def submit(self, request: GenerationRequest, priority: int, tokens: int) -> Generation:
        """Wait for admission, run in the engine, return its generation with `queue_s` = our wait + the engine's."""
        loop = asyncio.get_running_loop()
        ticket = Ticket(request, self.name, priority, tokens, time.monotonic(), loop.create_future())
        self._queue.push(priority, request.run_id, ticket)
        self.tickets.add(ticket)
        self._pump()
        try:
            await ticket.admitted
        except asyncio.CancelledError:
            if ticket.state == "running":
                self._release(ticket)  # admitted in the same loop step as the caller was cancelled
            else:
                self._queue.remove(priority, request.run_id, ticket)
                self._finish(ticket)
            raise
        waited = time.monotonic() - ticket.enqueued_at
        if ticket.aborted:  # aborted between admission and this task resuming
            raise RunAborted(request.run_id, "before it reached the engine")
        ticket.task = asyncio.create_task(self.engine.generate(dataclasses.replace(request, priority=priority)))
        generation: Generation | None = None
        try:
            generation = await ticket.task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if ticket.aborted and not (current and current.cancelling()):
                raise RunAborted(request.run_id, "while it ran") from None
            raise
        except Exception as exc:
            if ticket.aborted:
                raise RunAborted(request.run_id, "while it ran") from exc
            self._record(ticket, waited, None)
            raise
        finally:
            self._release(ticket)
        if ticket.aborted:  # the engine finished it as 'abort' before the cancellation reached it
            raise RunAborted(request.run_id, "while it ran")
        self._record(ticket, waited, generation)
        return dataclasses.replace(generation, queue_s=waited + generation.queue_s, engine=self.name)

    async def abort_run(self, run_id: str) -> int:
        """Drop the run's queued requests (their callers get `RunAborted`) and abort its running ones."""
        dropped = self._queue.drop_run(run_id)
        for ticket in dropped:
            self._finish(ticket)
            if not ticket.admitted.done():
                ticket.admitted.set_exception(RunAborted(run_id, "before it reached the engine"))
        running = [t for t in self.tickets if t.run_id == run_id and t.state == "running"]
        for ticket in running:
            ticket.aborted = True
            if ticket.task is not None:
                ticket.task.cancel()  # an in-process engine aborts the request in vLLM when its generate is cancelled
        tasks = [t.task for t in running if t.task is not None]
        if tasks:
            await asyncio.wait(tasks)
        for ticket in running:
            self._release(ticket)  # now, not when each caller wakes: the run holds nothing once this returns
        try:
            await self.engine.abort_run(run_id)  # whatever the engine still holds for the run
        except Exception as exc:
            log.warning("engine %s could not abort run %s: %s", self.name, run_id, exc)
        return len(dropped) + len(running)

    # ---- admission -----------------------------------------------------------------------------------------------
    def _fits(self, ticket: Ticket) -> bool:
        if self._in_flight == 0:
            return True  # an idle engine takes anything, however long
        cap = self.limits.max_in_flight if is_root_class(ticket.priority) else self.limits.max_sub_in_flight
        if self._in_flight >= cap:
            return False
        return self._in_flight_tokens + ticket.tokens <= self.limits.max_prompt_tokens

    def _pump(self) -> None:
        """Admit queued requests, best class first, while they fit (strict order: nothing overtakes the head)."""
        while True:
            head = self._queue.peek()
            if head is None:
                return
            _, ticket = head
            if ticket.admitted.done():  # its caller is gone (cancelled)
                self._queue.pop()
                self._finish(ticket)
                continue
            if not self._fits(ticket):
                return
            self._queue.pop()
            ticket.state = "running"  # held from now on, so abort_run sees it
            self._in_flight += 1
            self._in_flight_tokens += ticket.tokens
            self.peak_in_flight = max(self.peak_in_flight, self._in_flight)
            ticket.admitted.set_result(None)

    def _release(self, ticket: Ticket) -> None:
        """A running ticket is done: its place goes to the next in the queue."""
        if ticket.state != "running":
            return
        self._in_flight -= 1
        self._in_flight_tokens -= ticket.tokens
        self._finish(ticket)
        self._pump()

    def _finish(self, ticket: Ticket) -> None:
        ticket.state = "done"
        self.tickets.discard(ticket)

    def _record(self, ticket: Ticket, waited: float, generation: Generation | None) -> None:
        self.metrics.observe(
            RequestSample(
                run_id=ticket.run_id,
                priority=ticket.priority,
                engine=self.name,
                submitted_at=ticket.enqueued_at,
                finished_at=time.monotonic(),
                scheduler_wait_s=waited,
                engine_queue_s=generation.queue_s if generation else 0.0,
                first_token_s=generation.first_token_s if generation else None,
                prompt_tokens=generation.prompt_tokens if generation else 0,
                cached_tokens=generation.cached_tokens if generation else 0,
                completion_tokens=generation.completion_tokens if generation else 0,
                ok=generation is not None,
            )
        )
