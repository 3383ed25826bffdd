"""The error a caller sees when its run was aborted while its request waited or ran."""

from __future__ import annotations

from rlm_local.errors import EngineError


class RunAborted(EngineError):
    """`abort_run(run_id)` dropped or aborted this request; the run is over, nothing is wrong with the engine."""

    def __init__(self, run_id: str, where: str) -> None:
        super().__init__(f"run {run_id or '(anonymous)'} was aborted: its request was dropped {where}")
        self.run_id = run_id
