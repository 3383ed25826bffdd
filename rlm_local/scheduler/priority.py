"""Priority classes: root turns before sub-calls, shallower recursion before deeper.

Why one integer: vLLM's `scheduling_policy="priority"` orders its own waiting queue by a lower-is-sooner integer, so
the same number orders our queue and the engine's, and it names the class in metrics.
"""

from __future__ import annotations

from rlm_local.engines.base import RequestKind


def priority_of(kind: RequestKind, depth: int) -> int:
    """`depth*2 + (0 if root else 1)`: a root turn at depth d runs before sub-calls at depth d, which run before
    the root turns of sub-RLMs one level deeper."""
    return max(0, depth) * 2 + (0 if kind == "root" else 1)


def is_root_class(priority: int) -> bool:
    return priority % 2 == 0


def class_label(priority: int) -> str:
    """A stable, readable name for a class in tables and Prometheus labels: `root@0`, `sub@1`, ..."""
    return f"{'root' if is_root_class(priority) else 'sub'}@{priority // 2}"
