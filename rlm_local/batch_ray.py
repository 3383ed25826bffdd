"""`rlm-local batch --ray ADDRESS`: the jobs of a batch spread over a Ray cluster, one engine set per node.

Each worker is a Ray actor that starts an RLM (its engines and sandbox) on its node from the batch's config, and runs
the jobs it is handed with the same `run_job` as a local batch. The driver alone writes OUT, so the resume rule is the
local one: a killed driver loses no finished job, and a rerun skips them. A job whose worker dies (its node lost) is
handed to another worker; when none is left it becomes a failed result, never a silent gap.
Contexts given by path must be readable on every node (shared storage); inline contexts travel with the job.
"""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Any

from rlm_local.batch import Job, run_job
from rlm_local.config import RLMConfig
from rlm_local.errors import ConfigError, RLMError
from rlm_local.rlm import RLM


class BatchWorker:
    """The body of one Ray actor: one RLM on this node, started once, running many jobs at once."""

    def __init__(self, config_json: str) -> None:
        self.rlm = RLM(RLMConfig.model_validate_json(config_json))

    async def start(self) -> str:
        """Start the engines and sandbox here; the node's id says where this worker landed."""
        import ray

        await self.rlm.start()
        return ray.get_runtime_context().get_node_id()

    async def run(self, job: dict[str, Any]) -> dict[str, Any]:
        record = await run_job(self.rlm, Job.model_validate(job))
        record["worker"] = f"{socket.gethostname()}/{os.getpid()}"  # which worker ran it, for a look at the spread
        return record

    async def close(self) -> None:
        await self.rlm.aclose()


class RayWorkers:
    """The driver's side: a worker per alive node (or `count` spread over the cluster); each job goes to the least
    busy worker that is still alive."""

    def __init__(self, actors: list[Any]) -> None:
        self.actors = actors
        self.busy = [0] * len(actors)
        self.alive = [True] * len(actors)
        self.nodes: list[str] = []

    @classmethod
    def connect(cls, config: RLMConfig, address: str, count: int | None = None) -> RayWorkers:
        """Join the cluster at `address` ("local" starts one on this machine) and place the workers. Call it before
        the event loop runs: `ray.init` blocks."""
        try:
            import ray
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
        except ImportError as exc:
            raise ConfigError("--ray needs Ray: pip install 'rlm-local[ray]'") from exc
        if count is not None and count < 1:
            raise ConfigError("--ray-workers must be at least 1")
        try:
            ray.init(address=address, logging_level="ERROR", log_to_driver=False, configure_logging=True)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise ConfigError(f"cannot join the Ray cluster at {address!r}: {exc}") from exc
        # num_cpus=0: a worker's engine uses its whole node; Ray's CPU accounting must not keep a worker from landing.
        remote = ray.remote(num_cpus=0, max_concurrency=1000)(BatchWorker)
        payload = config.model_dump_json()
        if count is None:
            nodes = [node["NodeID"] for node in ray.nodes() if node.get("Alive")]
            actors = [
                remote.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote(payload)
                for node in nodes
            ]
        else:
            actors = [remote.options(scheduling_strategy="SPREAD").remote(payload) for _ in range(count)]
        return cls(actors)

    async def start(self) -> None:
        """Every worker's engines up before the first job: a node that cannot start is a clear error, not N failures."""
        from ray.exceptions import RayError

        try:
            self.nodes = list(await asyncio.gather(*(actor.start.remote() for actor in self.actors)))
        except RayError as exc:
            raise RLMError(f"a Ray worker could not start its engines: {_reason(exc)}") from exc

    async def run(self, job: Job) -> dict[str, Any]:
        from ray.exceptions import RayActorError

        while True:
            choices = [i for i in range(len(self.actors)) if self.alive[i]]
            if not choices:
                return {"id": job.id, "answer": None, "stop_reason": "error", "stop_detail": "every Ray worker is lost"}
            i = min(choices, key=lambda k: self.busy[k])
            self.busy[i] += 1
            try:
                return await self.actors[i].run.remote(job.model_dump())
            except RayActorError:  # the worker (or its node) died: its jobs go to another one
                self.alive[i] = False
            finally:
                self.busy[i] -= 1

    async def close(self) -> None:
        import ray

        await asyncio.gather(
            *(actor.close.remote() for actor, alive in zip(self.actors, self.alive, strict=True) if alive),
            return_exceptions=True,
        )
        for actor in self.actors:
            ray.kill(actor)
        ray.shutdown()


def _reason(exc: BaseException) -> str:
    """The worker's own error, not Ray's wrapping of it with a remote traceback."""
    cause = getattr(exc, "cause", None)
    return str(cause or exc).strip().splitlines()[-1][:500]
