"""The evaluation report: a Markdown table per model and PNG plots, made from `results.jsonl` alone.

Cells are family x length x system; "inside"/"beyond" says whether the context fits the model's window (measured
in the model's own tokens), so a claim like "the RLM beats the base model beyond the window" can be read off.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rlm_local.eval.runner import code_version, load_results
from rlm_local.eval.seeds import REPORT_SEED_START

REPORT = "report.md"


def where(record: dict[str, Any]) -> str:
    return "inside" if record["context_tokens"] <= record["window"] else "beyond"


def summarise(records: Iterable[dict[str, Any]]) -> dict[str, Any]:
    rows = list(records)
    n = len(rows)
    return {
        "n": n,
        "accuracy": sum(r["exact"] for r in rows) / n if n else 0.0,
        "score": statistics.fmean(r["score"] for r in rows) if n else 0.0,
        "sub_calls": statistics.fmean(r["sub_calls"] for r in rows) if n else 0.0,
        "tokens": statistics.fmean(r["total_tokens"] for r in rows) if n else 0.0,
        "seconds": statistics.fmean(r["seconds"] for r in rows) if n else 0.0,
        "errors": sum(1 for r in rows if r.get("error")),
    }


def _group(records: Iterable[dict[str, Any]], *keys: str) -> dict[tuple[Any, ...], list[dict[str, Any]]]:
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        groups[tuple(where(r) if k == "where" else r[k] for k in keys)].append(r)
    return dict(sorted(groups.items(), key=lambda item: tuple(str(v).zfill(12) for v in item[0])))


def _row(label: list[str], s: dict[str, Any]) -> str:
    cells = [
        *label,
        str(s["n"]),
        f"{s['accuracy']:.0%}",
        f"{s['score']:.2f}",
        f"{s['sub_calls']:.1f}",
        f"{s['tokens']:,.0f}",
        f"{s['seconds']:.0f}",
    ]
    if s["errors"]:
        cells[-1] += f" ({s['errors']} errors)"
    return "| " + " | ".join(cells) + " |"


METRIC_HEAD = "| tasks | accuracy | mean score | sub-calls/task | tokens/task | s/task |"
METRIC_RULE = "|---:|---:|---:|---:|---:|---:|"


def markdown(records: list[dict[str, Any]], plots: list[Path], out: Path) -> str:
    seeds = sorted({r["seed"] for r in records})
    lines = [
        "# rlm-local evaluation report",
        "",
        "Made by `rlm-local eval` from `results.jsonl` in this folder. Accuracy: share of tasks answered exactly "
        "right; mean score: the family's metric (numeric answers 0.75^|error| as in OOLONG, sets F1). "
        "`inside`/`beyond`: the context fits the model's window or not, counted in the model's tokens.",
        "",
        f"- models: {', '.join(sorted({r['model'] for r in records}))}",
        f"- commit: {_commits(records)}",
        f"- windows (tokens): {', '.join(str(w) for w in sorted({r['window'] for r in records}))}",
        f"- systems: {', '.join(sorted({r['system'] for r in records}))}",
        f"- seeds: {_seed_sets(seeds)}",
        "",
    ]
    for (model,), rows in _group(records, "model").items():
        lines += [
            f"## {_name(model)}",
            "",
            "### Overall",
            "",
            "| system | where " + METRIC_HEAD,
            "|---|---" + METRIC_RULE,
        ]
        lines += [_row([s, w], summarise(g)) for (s, w), g in _group(rows, "system", "where").items()]
        lines += ["", "### By family and length", "", "| family | chars | x window | system " + METRIC_HEAD]
        lines.append("|---|---:|---:|---" + METRIC_RULE)
        for (family, chars, system), group in _group(rows, "family", "chars", "system").items():
            ratio = statistics.median(r["context_tokens"] / r["window"] for r in group)
            lines.append(_row([family, f"{chars:,}", f"{ratio:.1f}", system], summarise(group)))
        lines += _paired(rows)
        lines.append("")
    for plot in plots:
        lines += [f"![{plot.stem}]({plot.relative_to(out)})", ""]
    return "\n".join(lines)


def _paired(rows: list[dict[str, Any]], reference: str = "rlm") -> list[str]:
    """Each other system against `reference` on exactly the tasks both ran (ablations run on a subset)."""
    by_system = _group(rows, "system")
    ref = {r["task_id"]: r for r in by_system.get((reference,), [])}
    lines: list[str] = []
    for (system,), group in by_system.items():
        shared = [r for r in group if r["task_id"] in ref] if system != reference else []
        if not shared:
            continue
        mine, theirs = summarise(shared), summarise(ref[r["task_id"]] for r in shared)
        lines.append(
            f"| {system} | {len(shared)} | {mine['accuracy']:.0%} | {mine['score']:.2f} | {theirs['accuracy']:.0%} "
            f"| {theirs['score']:.2f} | {mine['sub_calls']:.1f} | {theirs['sub_calls']:.1f} |"
        )
    if not lines:
        return []
    head = [
        "",
        f"### Against `{reference}` on the same tasks (ablations and the base model)",
        "",
        f"| system | tasks | accuracy | mean score | `{reference}` accuracy | `{reference}` mean score "
        f"| sub-calls/task | `{reference}` sub-calls/task |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    return head + lines


def _commits(records: list[dict[str, Any]]) -> str:
    """The code versions the rows were made with (rows from before versions were kept count as 'unrecorded'),
    and the one that wrote the report."""
    counts = defaultdict(int)
    for r in records:
        counts[r.get("commit") or "unrecorded"] += 1
    rows = ", ".join(f"{c} ({n} rows)" for c, n in sorted(counts.items()))
    return f"{rows}; report written at {code_version()}"


def _seed_sets(seeds: list[int]) -> str:
    dev = [s for s in seeds if s < REPORT_SEED_START]
    report = [s for s in seeds if s >= REPORT_SEED_START]
    parts = []
    if report:
        parts.append(f"report seeds {report} (never used while developing)")
    if dev:
        parts.append(f"development seeds {dev}")
    return "; ".join(parts)


def plot(records: list[dict[str, Any]], out: Path) -> list[Path]:
    """Per model: accuracy, tokens and seconds per task against context length, one line per system."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    (out / "plots").mkdir(parents=True, exist_ok=True)
    for (model,), rows in _group(records, "model").items():
        fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
        for (system,), group in _group(rows, "system").items():
            by_length = _by_length(group)
            xs = sorted(by_length)
            stats = [summarise(by_length[x]) for x in xs]
            for ax, key in zip(axes, ("accuracy", "tokens", "seconds"), strict=True):
                ax.plot(xs, [s[key] for s in stats], marker="o", label=system)
        window = max(r["window"] for r in rows)
        titles = ("accuracy", "tokens per task", "seconds per task")
        for ax, title in zip(axes, titles, strict=True):
            ax.axvline(window, color="grey", linestyle="--", linewidth=1)
            ax.set_xscale("log")
            ax.set_xlabel("context length (tokens); dashed: the window")
            ax.set_title(title)
            ax.grid(alpha=0.3)
        axes[0].set_ylim(-0.05, 1.05)
        axes[0].legend()
        fig.suptitle(f"{_name(model)}: accuracy and cost inside and beyond the window (median context length)")
        fig.tight_layout()
        path = out / "plots" / f"{_slug(model)}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def _by_length(rows: list[dict[str, Any]]) -> dict[float, list[dict[str, Any]]]:
    """Rows grouped inside / beyond the window (families differ in length per token), keyed by the group's median
    context length in tokens, so each system is one line from inside the window to beyond it."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[where(r)].append(r)
    return {statistics.median(r["context_tokens"] for r in g): g for g in groups.values()}


def _name(model: str) -> str:
    return model.rstrip("/").rsplit("/", 1)[-1]


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text.rsplit("/", 1)[-1])


def write_report(out: Path) -> Path:
    """Rebuild `report.md` and the plots from the results in `out`."""
    records = load_results(out)
    if not records:
        raise FileNotFoundError(f"no results in {out}: run `rlm-local eval --out {out}` first")
    path = out / REPORT
    path.write_text(markdown(records, plot(records, out), out), encoding="utf-8")
    return path
