"""Seeded, offline evaluation tasks: five families of long-context questions, each with a gold answer and a metric.

A task is a pure function of (family, variant, shape, seed, chars): the same inputs give a byte-identical context and
gold, on any machine. Gold answers are computed from the data generated, never assumed.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from rlm_local.eval.families import aggregation, codeqa, listing, multihop, needle
from rlm_local.eval.families.text import MIN_CHARS, SHAPES, Context, Draft, Gold, context_chars, rng_for

METRICS = ("contains", "numeric", "label", "set_f1")


@dataclass(frozen=True)
class EvalTask:
    task_id: str  # f"{family}/{variant}/{shape}/{chars}/{seed}", unique
    family: str
    variant: str
    shape: str  # "str" | "list" | "dict": the type of `context`
    seed: int
    chars: int  # the requested size; the context is within 10% of it (and never under the family's minimum)
    query: str
    context: Context
    gold: Gold  # an entity or value (str), a count (int) or a set (list[str])
    metric: str  # "contains" | "numeric" | "label" | "set_f1" (data sets add "exact", "choice")
    distractors: tuple[str, ...] = ()  # wrong answers present in the context: they score 0

    def __hash__(self) -> int:  # the context may be a list or a dict: the id stands for the task
        return hash(self.task_id)

    def to_json(self) -> dict[str, Any]:
        """Everything but the context (which can be megabytes), plus its size."""
        return {
            "task_id": self.task_id,
            "family": self.family,
            "variant": self.variant,
            "shape": self.shape,
            "seed": self.seed,
            "chars": self.chars,
            "query": self.query,
            "gold": self.gold,
            "metric": self.metric,
            "distractors": list(self.distractors),
            "context_chars": context_chars(self.context),
        }


_MODULES: dict[str, ModuleType] = {
    "needle": needle,
    "aggregation": aggregation,
    "listing": listing,
    "multihop": multihop,
    "codeqa": codeqa,
}


def family_variants(family: str) -> tuple[str, ...]:
    return tuple(_module(family).VARIANTS)


def family_shapes(family: str) -> tuple[str, ...]:
    return tuple(getattr(_module(family), "SHAPES", SHAPES))


def family_minimum(family: str) -> int:
    """The smallest context the family makes: a smaller request is raised to it."""
    return int(getattr(_module(family), "MIN_CHARS", MIN_CHARS))


def _module(family: str) -> ModuleType:
    if family not in _MODULES:
        raise ValueError(f"unknown task family {family!r}: choose from {', '.join(_MODULES)}")
    return _MODULES[family]


def seed_variant_shape(family: str, seed: int) -> tuple[str, str]:
    """The variant and shape a seed gets: consecutive seeds walk through every (variant, shape) pair, the first seeds
    already covering every variant and every shape, and a seed keeps its pair at every length (so the length curves
    compare like with like)."""
    variants, shapes = family_variants(family), family_shapes(family)
    k = seed % (len(variants) * len(shapes))
    v, j = k % len(variants), k // len(variants)
    return variants[v], shapes[(v + j) % len(shapes)]


def make_task(family: str, seed: int, chars: int, shape: str | None = None, variant: str | None = None) -> EvalTask:
    """The task of `family` for `seed` at about `chars` characters; variant and shape (unless given) from the seed."""
    module = _module(family)
    variants, shapes = family_variants(family), family_shapes(family)
    default_variant, default_shape = seed_variant_shape(family, seed)
    variant, shape = variant or default_variant, shape or default_shape
    if variant not in variants:
        raise ValueError(f"{family} has no variant {variant!r}: choose from {', '.join(variants)}")
    if shape not in shapes:
        raise ValueError(f"{family} has no shape {shape!r}: choose from {', '.join(shapes)}")
    rng: random.Random = rng_for(family, variant, shape, seed, chars)
    draft: Draft = module.draft(rng, max(chars, family_minimum(family)), shape, variant)
    return EvalTask(
        task_id=f"{family}/{variant}/{shape}/{chars}/{seed}",
        family=family,
        variant=variant,
        shape=shape,
        seed=seed,
        chars=chars,
        query=draft.query,
        context=draft.context,
        gold=draft.gold,
        metric=draft.metric,
        distractors=draft.distractors,
    )


def _generator(family: str) -> Callable[..., EvalTask]:
    def generate(seed: int, chars: int, shape: str, variant: str | None = None) -> EvalTask:
        return make_task(family, seed, chars, shape, variant)

    generate.__name__ = f"generate_{family}"
    return generate


FAMILIES: dict[str, Callable[[int, int, str], EvalTask]] = {name: _generator(name) for name in _MODULES}


def make_tasks(families: Iterable[str], seeds: Iterable[int], lengths: Iterable[int]) -> list[EvalTask]:
    """Every family x seed x length, in that order (variant and shape from each seed)."""
    seeds, lengths = list(seeds), list(lengths)
    return [make_task(f, s, n) for f in families for s in seeds for n in lengths]
