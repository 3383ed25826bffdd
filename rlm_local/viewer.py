"""`rlm-local view`: a run's JSONL trajectory as one self-contained HTML page (no server, no CDN), to read by eye.

Per turn: the model's text, its code (highlighted), the output, and the sub-calls it made (collapsed); sub-RLMs and
voting samples nested by the `run` label every event carries; a timeline drawn in SVG shows how many sub-calls ran
at once and how long they waited in the engine's queue. Everything from the trajectory is escaped: it holds model
output, which is untrusted.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import PythonLexer

from rlm_local.errors import RLMError

TIMELINE_WIDTH, LANE_HEIGHT, MAX_LANES = 1100, 9, 48
PREVIEW_CHARS = 90


@dataclass
class Turn:
    event: dict[str, Any]
    start: float
    subcalls: list[dict[str, Any]] = field(default_factory=list)
    others: list[dict[str, Any]] = field(default_factory=list)
    children: list[RunView] = field(default_factory=list)


@dataclass
class RunView:
    """One RLM run of the tree (the main run, a voting sample or a sub-RLM) and what happened in it."""

    label: str
    start: dict[str, Any]
    turns: list[Turn] = field(default_factory=list)
    after: Turn | None = None  # sub-calls and events after its last turn (the answer check, a vote)


def load_events(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise RLMError(f"trajectory file not found: {path}")
    events = []
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except json.JSONDecodeError as exc:
            raise RLMError(
                f"{path}:{number} is not a JSON line ({exc.msg}): is this a run's --trajectory file?"
            ) from exc
        if not isinstance(event, dict) or "event" not in event:
            raise RLMError(f"{path}:{number} is not a trajectory event (no 'event' field)")
        events.append(event)
    if not events:
        raise RLMError(f"the trajectory file is empty: {path}")
    return events


def write_view(trajectory: Path, out: Path | None = None) -> Path:
    out = out or trajectory.with_suffix(".html")
    out.write_text(render_html(load_events(trajectory)), encoding="utf-8")
    return out


def build_runs(events: list[dict[str, Any]]) -> list[RunView]:
    """The runs in order, each child run placed in the parent turn during which it started."""
    runs: dict[str, RunView] = {}
    for event in events:
        if event["event"] == "run_start":
            label = str(event.get("run") or f"depth {event.get('depth', 0)}")
            runs.setdefault(label, RunView(label, event))
    if not runs:
        runs["main"] = RunView("main", {"event": "run_start", "time": events[0].get("time", 0.0)})
    for view in runs.values():
        mine = [e for e in events if _owner(e, runs) == view.label and e["event"] != "run_start"]
        begin = float(view.start.get("time", 0.0))
        pending: list[dict[str, Any]] = []
        for event in mine:
            if event["event"] == "turn":
                turn = Turn(event, begin)
                turn.subcalls = [e for e in pending if e["event"] == "subcall"]
                turn.others = [e for e in pending if e["event"] != "subcall"]
                view.turns.append(turn)
                begin, pending = float(event.get("time", begin)), []
            elif event["event"] != "run_end":
                pending.append(event)
        if pending:
            view.after = Turn({"event": "after"}, begin, [e for e in pending if e["event"] == "subcall"])
            view.after.others = [e for e in pending if e["event"] != "subcall"]
    roots = []
    for view in runs.values():
        parent = runs.get(view.label.rsplit(" / ", 1)[0]) if " / " in view.label else None
        if parent is None:
            roots.append(view)
            continue
        started = float(view.start.get("time", 0.0))
        home = next((t for t in parent.turns if float(t.event.get("time", 0.0)) >= started), parent.after)
        if home is None:
            parent.after = home = Turn({"event": "after"}, started)
        home.children.append(view)
    return roots


def _owner(event: dict[str, Any], runs: dict[str, RunView]) -> str:
    label = event.get("run")
    if label in runs:
        return str(label)
    depth = int(event.get("depth", 0) or 0) - (1 if event["event"] == "subcall" else 0)
    return next((v.label for v in runs.values() if int(v.start.get("depth", 0) or 0) == depth), next(iter(runs)))


def render_html(events: list[dict[str, Any]]) -> str:
    roots = build_runs(events)
    end = next((e for e in reversed(events) if e["event"] == "run_end"), {})
    body = [_header(roots[0].start, end), _timeline(events)]
    body += [_run(view) for view in roots]
    style = HtmlFormatter(style="friendly").get_style_defs(".code")
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>rlm-local run "
        f"{_e(str(end.get('run_id') or roots[0].start.get('run_id', '')))}</title><style>{CSS}\n{style}</style>"
        f"</head><body>{''.join(body)}</body></html>"
    )


def _header(start: dict[str, Any], end: dict[str, Any]) -> str:
    usage = end.get("usage") or {}
    context = start.get("context") or {}
    facts = {
        "answer": end.get("answer"),
        "stopped": f"{end.get('stop_reason', '?')}: {end.get('stop_detail', '')}",
        "models": f"root {start.get('root_model', '?')}, sub {start.get('sub_model', '?')}",
        "context": f"{context.get('type', '?')}, {context.get('total_chars', 0):,} characters, "
        f"{context.get('chunks', 1)} chunk(s)",
        "turns": end.get("turns"),
        "sub-calls": usage.get("sub_calls"),
        "tokens": f"{usage.get('total_tokens', 0):,} (cache hit {usage.get('cache_hit_rate', 0):.0%})",
        "elapsed": f"{end.get('elapsed_s', 0):.1f} s",
    }
    for file in (context.get("unreadable") or []) + [{"path": f, "reason": "fault"} for f in end.get("faults") or []]:
        facts.setdefault("not read / faults", "")
        facts["not read / faults"] += f"{file['path']}: {file['reason']}; "
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e('' if v is None else str(v))}</td></tr>" for k, v in facts.items())
    return f"<h1>{_e(str(start.get('query', '')))}</h1><table class='facts'>{rows}</table>"


def _run(view: RunView) -> str:
    parts = [f"<div class='run' data-run='{_e(view.label)}'><h2>{_e(view.label)}</h2>"]
    for turn in view.turns:
        parts.append(_turn(view.label, turn))
    if view.after and (view.after.subcalls or view.after.others or view.after.children):
        parts.append(_turn(view.label, view.after))
    return "".join(parts) + "</div>"


def _turn(label: str, turn: Turn) -> str:
    event = turn.event
    if event["event"] == "after":
        head, number = "after the last turn", "after"
    else:
        number = str(event.get("turn", "?"))
        head = (
            f"turn {number} · {event.get('prompt_tokens', 0):,} prompt tokens ({event.get('cached_tokens', 0):,} "
            f"cached), {event.get('completion_tokens', 0):,} out · {float(event.get('latency_s', 0)):.1f} s, "
            f"queue {float(event.get('queue_s', 0)):.1f} s · {len(turn.subcalls)} sub-calls"
        )
    anchor = f"turn-{number}" if label == "main" else f"{_slug(label)}-turn-{number}"
    parts = [f"<section class='turn' id='{anchor}'><h3>{_e(head)}</h3>"]
    if event.get("response"):
        parts.append(f"<div class='label'>model</div><pre class='text'>{_e(str(event['response']))}</pre>")
    for code, output in zip(event.get("code") or [], (event.get("outputs") or []) + [""] * 99, strict=False):
        parts.append(
            "<div class='label'>code</div>" + highlight(str(code), PythonLexer(), HtmlFormatter(cssclass="code"))
        )
        parts.append(f"<div class='label'>output</div><pre class='output'>{_e(str(output))}</pre>")
    for key in ("final", "note"):
        if event.get(key):
            parts.append(f"<div class='{key}'>{key}: {_e(str(event[key]))}</div>")
    parts += [_subcall(call) for call in turn.subcalls]
    parts += [_other(other) for other in turn.others]
    parts += [f"<div class='nested'>{_run(child)}</div>" for child in turn.children]
    return "".join(parts) + "</section>"


def _subcall(call: dict[str, Any]) -> str:
    answer = str(call.get("response_preview", call.get("error", "")))
    summary = (
        f"{call.get('kind', 'sub-call')} · {call.get('prompt_tokens', 0)} tokens ({call.get('cached_tokens', 0)} "
        f"cached) → {call.get('completion_tokens', 0)} · {float(call.get('latency_s', 0)):.2f} s "
        f"(queue {float(call.get('queue_s', 0)):.2f} s) · {_preview(answer)}"
    )
    return (
        f"<details class='subcall'><summary>{_e(summary)}</summary><div class='label'>prompt (start)</div>"
        f"<pre class='prompt'>{_e(str(call.get('prompt_preview', '')))}</pre><div class='label'>answer</div>"
        f"<pre class='answer'>{_e(answer)}</pre></details>"
    )


def _other(event: dict[str, Any]) -> str:
    fields = {k: v for k, v in event.items() if k not in ("event", "time", "run_id")}
    shown = json.dumps(fields, ensure_ascii=False, indent=1, default=str)
    return f"<div class='event'><b>{_e(str(event['event']))}</b><pre>{_e(shown)}</pre></div>"


def _timeline(events: list[dict[str, Any]]) -> str:
    """Root turns on the top lane; sub-calls packed into lanes below, so concurrent calls stack up; the part of a
    sub-call spent in the engine's queue is drawn lighter."""
    times = [float(e["time"]) for e in events if "time" in e]
    start = min(times, default=0.0)
    bars = [(float(e["time"]) - float(e.get("latency_s", 0)), e) for e in events if e["event"] in ("turn", "subcall")]
    start = min([start] + [b[0] for b in bars])
    span = max(max(times, default=start) - start, 1e-3)
    scale = TIMELINE_WIDTH / span
    lanes: list[float] = []
    shapes = []
    for begin, event in sorted(bars, key=lambda b: b[0]):
        finish = float(event["time"])
        x, width = (begin - start) * scale, max((finish - begin) * scale, 1.0)
        if event["event"] == "turn":
            title = f"turn {event.get('turn')} ({event.get('run', 'main')}): {float(event.get('latency_s', 0)):.1f} s"
            shapes.append(_rect(x, 0, width, LANE_HEIGHT, "#3b6ea8", title))
            continue
        lane = _lane(lanes, begin, finish)
        y = (lane + 1.5) * LANE_HEIGHT
        queue = min(float(event.get("queue_s", 0)), finish - begin) * scale
        title = f"{event.get('kind')}: {finish - begin:.2f} s, queue {float(event.get('queue_s', 0)):.2f} s"
        shapes.append(_rect(x, y, queue, LANE_HEIGHT - 2, "#f2c38b", title))
        shapes.append(_rect(x + queue, y, max(width - queue, 1.0), LANE_HEIGHT - 2, "#d9822b", title))
    height = (len(lanes) + 2) * LANE_HEIGHT + 14
    axis = (
        f"<text x='0' y='{height - 2}'>0 s</text><text x='{TIMELINE_WIDTH - 60}' y='{height - 2}'>{span:.1f} s</text>"
    )
    return (
        f"<h2>timeline</h2><div class='legend'>blue: root turns · orange: sub-calls, one lane each while they overlap "
        f"(lighter: waiting in the engine queue) · most at once: {len(lanes)}</div>"
        f"<svg class='timeline' width='{TIMELINE_WIDTH}' height='{height}'>{''.join(shapes)}{axis}</svg>"
    )


def _lane(lanes: list[float], begin: float, finish: float) -> int:
    """The first lane free at `begin` (each lane holds when it becomes free); a new one, up to MAX_LANES."""
    lane = next((i for i, free in enumerate(lanes) if free <= begin), None)
    if lane is None and len(lanes) < MAX_LANES:
        lanes.append(finish)
        return len(lanes) - 1
    lane = MAX_LANES - 1 if lane is None else lane
    lanes[lane] = max(lanes[lane], finish)
    return lane


def _rect(x: float, y: float, width: float, height: float, colour: str, title: str) -> str:
    return (
        f"<rect x='{x:.1f}' y='{y:.1f}' width='{width:.1f}' height='{height:.1f}' fill='{colour}'>"
        f"<title>{_e(title)}</title></rect>"
    )


def _preview(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= PREVIEW_CHARS else flat[: PREVIEW_CHARS - 1] + "…"


def _slug(label: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in label.lower())


def _e(text: str) -> str:
    return html.escape(text, quote=True)


CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px auto; max-width: 1150px; color: #222; }
h1 { font-size: 20px; } h2 { font-size: 16px; margin-top: 28px; } h3 { font-size: 13px; color: #444; margin: 0 0 6px; }
table.facts th { text-align: left; padding-right: 14px; color: #555; vertical-align: top; }
section.turn { border-left: 3px solid #3b6ea8; padding: 6px 12px; margin: 14px 0; background: #fafbfd; }
pre { white-space: pre-wrap; word-break: break-word; margin: 2px 0 8px; padding: 6px 8px; background: #f3f3f3; }
pre.output { background: #eef6ee; } .code pre { background: #f8f8f8; }
.label { font-size: 11px; text-transform: uppercase; color: #888; }
details.subcall { margin: 3px 0; border: 1px solid #e3d3c0; background: #fffaf4; padding: 2px 8px; }
details.subcall summary { cursor: pointer; font-size: 12px; }
.final { font-weight: bold; color: #1d6b2f; } .note { color: #8a5a00; }
.event { font-size: 12px; border-left: 3px solid #b55; padding-left: 8px; margin: 6px 0; }
.nested { margin-left: 22px; border-left: 2px dashed #aaa; padding-left: 10px; }
svg.timeline { background: #fcfcfc; border: 1px solid #ddd; } svg text { font-size: 10px; fill: #666; }
.legend { font-size: 12px; color: #555; margin-bottom: 4px; }
"""
