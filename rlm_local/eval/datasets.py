"""Public long-context data sets from local files, for users who have them: OOLONG-synth and LongBench-v2.

Nothing is downloaded: the user points at a file they have (parquet or JSONL for OOLONG, JSON for LongBench-v2).
Rows become `EvalTask`s scored as the data set's authors score them.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

from rlm_local.errors import ContextError
from rlm_local.eval.tasks import EvalTask

OOLONG_COLUMNS = ("context_window_text", "question", "answer")
LONGBENCH_COLUMNS = ("question", "choice_A", "choice_B", "choice_C", "choice_D", "answer", "context")


def _read_rows(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        raise ContextError(f"data set file not found: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            try:
                import pyarrow.parquet as pq
            except ImportError as exc:
                raise ContextError("reading parquet needs pyarrow: pip install pyarrow (or convert to JSONL)") from exc
            return pq.read_table(path).to_pylist()
        text = path.read_text(encoding="utf-8")
        if suffix == ".jsonl":
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        data = json.loads(text)
    except (ValueError, OSError) as exc:
        raise ContextError(f"cannot read data set {path}: {exc}") from exc
    if isinstance(data, dict):
        data = data.get("data", [data])
    if not isinstance(data, list):
        raise ContextError(f"{path}: expected a list of rows")
    return data


def _check_columns(rows: list[dict[str, Any]], columns: tuple[str, ...], path: Path, name: str) -> None:
    if not rows:
        raise ContextError(f"{path}: the {name} file has no rows")
    missing = [c for c in columns if c not in rows[0]]
    if missing:
        raise ContextError(
            f"{path} is not in the {name} schema: missing column(s) {', '.join(missing)} "
            f"(found: {', '.join(sorted(rows[0])[:12])})"
        )


def _oolong_gold(raw: Any) -> str | int:
    """OOLONG stores answers as a list literal ('[5]', "['positive']"); numbers are scored numerically."""
    value = raw
    if isinstance(raw, str):
        try:
            value = ast.literal_eval(raw.strip())
        except (ValueError, SyntaxError):
            value = raw
    if isinstance(value, list | tuple) and value:
        value = value[0]
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int | float) and float(value).is_integer():
        return int(value)
    text = str(value).strip()
    return int(text) if text.lstrip("-").isdigit() else text


def load_oolong(path: Path, limit: int | None = None) -> list[EvalTask]:
    """OOLONG-synth rows: numeric answers score 0.75^|error|, every other answer type exact match."""
    rows = _read_rows(path)
    _check_columns(rows, OOLONG_COLUMNS, path, "OOLONG-synth")
    tasks = []
    for i, row in enumerate(rows[:limit]):
        gold = _oolong_gold(row["answer"])
        context = str(row["context_window_text"])
        tasks.append(
            EvalTask(
                task_id=f"oolong/{row.get('id', i)}",
                family="oolong",
                variant=str(row.get("answer_type", "numeric" if isinstance(gold, int) else "exact")),
                shape="str",
                seed=i,
                chars=len(context),
                query=str(row["question"]),
                context=context,
                gold=gold,
                metric="numeric" if isinstance(gold, int) else "exact",
            )
        )
    return tasks


def load_longbench(path: Path, limit: int | None = None) -> list[EvalTask]:
    """LongBench-v2 rows: four-way multiple choice, scored by the chosen letter."""
    rows = _read_rows(path)
    _check_columns(rows, LONGBENCH_COLUMNS, path, "LongBench-v2")
    tasks = []
    for i, row in enumerate(rows[:limit]):
        choices = "\n".join(f"({letter}) {row[f'choice_{letter}']}" for letter in "ABCD")
        query = f"{row['question']}\n\nChoices:\n{choices}\n\nAnswer with the letter of the correct choice."
        context = str(row["context"])
        tasks.append(
            EvalTask(
                task_id=f"longbench/{row.get('_id', i)}",
                family="longbench",
                variant=str(row.get("domain", "all")),
                shape="str",
                seed=i,
                chars=len(context),
                query=query,
                context=context,
                gold=str(row["answer"]).strip().upper(),
                metric="choice",
            )
        )
    return tasks


LOADERS = {"oolong": load_oolong, "longbench": load_longbench}


def load_dataset(spec: str, limit: int | None = None) -> list[EvalTask]:
    """`oolong:PATH` or `longbench:PATH`."""
    name, sep, path = spec.partition(":")
    if not sep or name not in LOADERS:
        raise ContextError(f"data set {spec!r}: use oolong:PATH or longbench:PATH")
    return LOADERS[name](Path(path).expanduser(), limit)
