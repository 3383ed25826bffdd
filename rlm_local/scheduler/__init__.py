"""Scheduling RLM requests onto engines: priority classes, fairness across runs, admission, routing, cancellation."""

from rlm_local.scheduler.admission import AdmissionLimits, LimitOverrides, derive_limits, kv_cache_tokens
from rlm_local.scheduler.errors import RunAborted
from rlm_local.scheduler.fair_queue import FairQueue
from rlm_local.scheduler.priority import class_label, is_root_class, priority_of
from rlm_local.scheduler.router import Router, prefix_key
from rlm_local.scheduler.scheduler import PoolHandle, Scheduler
from rlm_local.scheduler.slot import EngineSlot

__all__ = [
    "AdmissionLimits",
    "EngineSlot",
    "FairQueue",
    "LimitOverrides",
    "PoolHandle",
    "Router",
    "RunAborted",
    "Scheduler",
    "class_label",
    "derive_limits",
    "is_root_class",
    "kv_cache_tokens",
    "prefix_key",
    "priority_of",
]
