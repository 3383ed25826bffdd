"""`rlm-local view`: a run's JSONL trajectory as one self-contained HTML page (no server, no CDN), to read by eye.

Per turn: the model's text, its code (highlighted), the output, and the sub-calls it made (collapsed); sub-RLMs and
voting samples nested under the turn during which they ran; a timeline drawn in SVG shows how many sub-calls ran at
once and how long they waited in the engine's queue. Everything from the trajectory is escaped (it holds model
output, which is untrusted) and a Content-Security-Policy forbids the page any network access and any script but
its own.
"""

from __future__ import annotations

import base64
import hashlib
import html
import itertools
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import PythonLexer

from rlm_local.errors import RLMError

Event = dict[str, Any]
WIDTH, GUTTER, LANE, MAX_TURN_LANES, MAX_CALL_LANES = 1100, 64, 10, 8, 40
PREVIEW_CHARS = 90
UP = ("subcall", "sub_rlm")  # events written by a run with the depth of what it called
TURN_FIELDS = {"event", "time", "run_id", "run", "depth", "turn", "response", "code", "outputs", "final", "note"}
TURN_FIELDS |= {"prompt_tokens", "cached_tokens", "completion_tokens", "latency_s", "queue_s"}


@dataclass
class Turn:
    """A root turn and what happened while it ran (its sub-calls, other events, sub-RLMs started in it)."""

    begin: float
    event: Event | None = None  # None: the events after the run's last turn (answer check, vote)
    subcalls: list[Event] = field(default_factory=list)
    others: list[Event] = field(default_factory=list)
    children: list[RunView] = field(default_factory=list)


@dataclass
class RunView:
    """One RLM of the tree: the main run, a voting sample or a sub-RLM."""

    label: str
    start: Event
    turns: list[Turn] = field(default_factory=list)
    open: Turn = field(default_factory=lambda: Turn(0.0))
    starts: int = 1  # >1: an older trajectory whose voting samples carry no label, shown together

    def add(self, event: Event) -> None:
        if event["event"] == "turn":
            self.open.event = event
            self.turns.append(self.open)
            self.open = Turn(_num(event.get("time"), self.open.begin))
        elif event["event"] == "subcall":
            self.open.subcalls.append(event)
        else:
            self.open.others.append(event)


@dataclass
class Tree:
    roots: list[RunView]
    tail: list[Event]  # events of no run (the vote of the samples)
    end: Event  # run_end, or {} when the run did not finish
    other_runs: list[str]  # run ids of earlier runs appended to the same file, not shown
    events: list[Event]  # the events of the run shown


def load_events(path: Path) -> list[Event]:
    """The events of a trajectory file, or an RLMError saying why the file is not one."""
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
        if not isinstance(event, dict) or not isinstance(event.get("event"), str):
            raise RLMError(
                f"{path}:{number} is not a trajectory event (no 'event' field): is this a --trajectory file?"
            )
        events.append(event)
    if not events:
        raise RLMError(f"the trajectory file is empty: {path}")
    return events


def write_view(trajectory: Path, out: Path | None = None) -> Path:
    """Render `trajectory` to `out` (default: beside it, suffix .html) and return the path written."""
    out = out or trajectory.with_suffix(".html")
    if out.resolve() == trajectory.resolve():
        out = trajectory.with_name(trajectory.name + ".html")
    page = render_html(load_events(trajectory))
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise RLMError(f"cannot write the page {out}: {exc.strerror or exc}") from exc
    return out


def build_tree(events: list[Event]) -> Tree:
    """Runs in file (= time) order; a run starting while its parent's turn is open is nested in that turn.

    Events carry the label of their run ("main", "sample 2", "main / sub-RLM 1"); older trajectories have none and
    are placed by depth: a sub-call (or sub-RLM result) carries the depth of the callee, so it belongs to the latest
    run one level up; anything else to the latest run at its depth.
    """
    events = [e if isinstance(e.get("event"), str) else {**e, "event": "?"} for e in events if isinstance(e, dict)]
    ids = [e.get("run_id") for e in events if e["event"] == "run_start" and not _num(e.get("depth"))]
    last = ids[-1] if ids else None  # `--trajectory` appends: a file may hold several runs, show the last
    events = [e for e in events if last is None or e.get("run_id") in (last, None)]
    runs: dict[str, RunView] = {}
    latest: dict[int, RunView] = {}
    roots: list[RunView] = []
    tail: list[Event] = []
    end: Event = {}
    for event in events:
        kind, depth = event["event"], int(_num(event.get("depth")))
        if kind == "run_end":
            end = event
        elif kind == "run_start":
            label = str(event.get("run") or "")
            if not label:
                parent = latest.get(depth - 1)
                label = f"{parent.label} / sub-RLM {len(runs)}" if depth and parent else "main"
            if label in runs:
                runs[label].starts += 1
                continue
            view = runs[label] = latest[depth] = RunView(label, event, open=Turn(_num(event.get("time"))))
            parent = runs.get(label.rsplit(" / ", 1)[0]) if " / " in label else None
            (parent.open.children if parent else roots).append(view)
        else:
            owner = runs.get(str(event.get("run")))
            if owner is None and "depth" in event:
                owner = latest.get(depth - (kind in UP)) or next(iter(runs.values()), None)
            if owner is None:
                tail.append(event)
            else:
                owner.add(event)
    if not roots:  # a file cut before its run_start: still show what it holds
        start = {"event": "run_start", "time": _num(events[0].get("time")) if events else 0.0}
        roots = [RunView("main", start, open=Turn(_num(start["time"])))]
        for event in tail:
            roots[0].add(event)
        tail = []
    return Tree(roots, tail, end, [str(i) for i in dict.fromkeys(ids) if i != last], events)


def render_html(events: list[Event]) -> str:
    """The whole page for one run's events (as `load_events` returns them)."""
    tree = build_tree(events)
    events = tree.events
    page = _Page({id(e): i for i, e in enumerate(e for e in events if e["event"] == "subcall")})
    body = [_header(tree, events), _timeline(events, tree, page.numbers)]
    body += [page.run(view) for view in tree.roots]
    if tree.tail:
        body.append("<section class='after'><h3>after the runs</h3>")
        body += [_other(event) for event in tree.tail] + ["</section>"]
    digest = base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()
    policy = f"default-src 'none'; style-src 'unsafe-inline'; script-src 'sha256-{digest}'"
    title = _e(str(tree.end.get("run_id") or tree.roots[0].start.get("run_id") or ""))
    style = HtmlFormatter(style="friendly").get_style_defs(".code")
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><meta http-equiv='Content-Security-Policy' "
        f'content="{policy}"><title>rlm-local run {title}</title><style>{CSS}\n{style}</style></head><body>'
        f"{''.join(body)}<script>{SCRIPT}</script></body></html>"
    )


def _header(tree: Tree, events: list[Event]) -> str:
    start, end = tree.roots[0].start, tree.end
    context = start.get("context") if isinstance(start.get("context"), dict) else {}
    turns = [e for e in events if e["event"] == "turn"]
    calls = [e for e in events if e["event"] == "subcall"]
    root, sub = (str(start.get(k, "?")).rstrip("/").rsplit("/", 1)[-1] for k in ("root_model", "sub_model"))
    run = f"{end.get('turns', '?')} turns, {len(calls)} sub-calls, {_num(end.get('elapsed_s')):.1f} s" if end else ""
    facts: dict[str, str] = {
        "answer": ("(none)" if end.get("answer") is None else str(end["answer"]))
        if end
        else "(no run_end: the run did not finish, or was cut)",
        "stopped": f"{end.get('stop_reason', '?')}: {end.get('stop_detail', '')}" if end else "",
        "run": f"{run} · profile {start.get('profile', '?')} · sandbox {start.get('sandbox', '?')} · "
        f"id {end.get('run_id') or start.get('run_id', '?')}",
        "models": f"root {root} · sub-calls {sub}",
        "context": f"{context.get('type', '?')}, {_num(context.get('total_chars')):,.0f} characters, "
        f"{context.get('chunks', '?')} chunk(s)" + (f", {context['source']}" if context.get("source") else ""),
        "root calls": f"{len(turns)}: {_tokens(turns)}",
        "sub-calls": f"{len(calls)}: {_tokens(calls)}",
    }
    if tree.other_runs:
        facts["note"] = f"this file also holds earlier runs, not shown: {', '.join(tree.other_runs)}"
    unread = [f"{u.get('path')}: {u.get('reason')}" for u in context.get("unreadable") or [] if isinstance(u, dict)]
    for key, values in (("not read", unread), ("faults", [str(f) for f in end.get("faults") or []])):
        if values:
            facts[key] = "; ".join(values)
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in facts.items() if v)
    return f"<h1>{_e(str(start.get('query', '(no query)')))}</h1><table class='facts'>{rows}</table>"


def _tokens(calls: list[Event]) -> str:
    prompt, cached, out = (
        sum(_num(c.get(k)) for c in calls) for k in ("prompt_tokens", "cached_tokens", "completion_tokens")
    )
    hit = f" ({cached / prompt:.0%} of prompt tokens cached)" if prompt else ""
    return f"{prompt:,.0f} prompt tokens, {cached:,.0f} cached{hit}, {out:,.0f} completion tokens"


class _Page:
    """Renders runs, keeping element ids unique (older sample trajectories repeat turn numbers)."""

    def __init__(self, numbers: dict[int, int]) -> None:
        self.numbers, self.ids = numbers, set()

    def unique(self, anchor: str) -> str:
        candidates = itertools.chain([anchor], (f"{anchor}-{i}" for i in itertools.count(2)))
        anchor = next(a for a in candidates if a not in self.ids)
        self.ids.add(anchor)
        return anchor

    def run(self, view: RunView) -> str:
        note = f" · {view.starts} runs without labels (an older trajectory), shown together" if view.starts > 1 else ""
        depth = int(_num(view.start.get("depth")))
        query = f"<div class='query'>query: {_e(str(view.start.get('query', '')))}</div>" if depth else ""
        parts = [f"<div class='run' data-run='{_e(view.label)}'><h2>{_e(view.label + note)}</h2>{query}"]
        parts += [self.turn(view.label, turn) for turn in view.turns]
        if view.open.subcalls or view.open.others or view.open.children:
            parts.append(self.turn(view.label, view.open))
        return "".join(parts) + "</div>"

    def turn(self, label: str, turn: Turn) -> str:
        event = turn.event
        if event is None:
            parts = ["<section class='after'><h3>after the last turn</h3>"]
        else:
            number = str(event.get("turn", "?"))
            anchor = self.unique(f"turn-{number}" if label == "main" else f"{_slug(label)}-turn-{number}")
            head = (
                f"turn {number} · {_num(event.get('prompt_tokens')):,.0f} prompt tokens "
                f"({_num(event.get('cached_tokens')):,.0f} cached), {_num(event.get('completion_tokens')):,.0f} "
                f"completion · {_num(event.get('latency_s')):.1f} s generating (queue {_num(event.get('queue_s')):.1f}"
                f" s), {_num(event.get('time')) - turn.begin:.1f} s in all · {len(turn.subcalls)} sub-calls"
            )
            parts = [f"<section class='turn' id='{anchor}'><h3>{_e(head)}</h3>"]
            if event.get("response"):
                parts.append(f"<div class='label'>model</div><pre class='text'>{_e(str(event['response']))}</pre>")
            code, outputs = _list(event.get("code")), _list(event.get("outputs"))
            for block, output in itertools.zip_longest(code, outputs):
                if block is not None:
                    formatted = highlight(str(block), PythonLexer(), HtmlFormatter(cssclass="code"))
                    parts.append(f"<div class='label'>code</div>{formatted}")
                if output is not None:
                    parts.append(f"<div class='label'>output</div><pre class='output'>{_e(str(output))}</pre>")
            for key in ("final", "note"):
                if event.get(key):
                    parts.append(f"<div class='{key}'>{key}: {_e(str(event[key]))}</div>")
            extra = {k: v for k, v in event.items() if k not in TURN_FIELDS and v not in (None, "", [], {})}
            if extra:
                parts.append(_pairs(extra))
        parts += [self.subcall(call) for call in turn.subcalls]
        # Other events and the sub-RLMs started in this turn, in time order (a sub-RLM's result follows its run).
        later = [(_num(o.get("time")), i, o) for i, o in enumerate(turn.others)]
        later += [(_num(c.start.get("time")), -1, c) for c in turn.children]
        for _, _, item in sorted(later, key=lambda x: x[:2]):
            parts.append(f"<div class='nested'>{self.run(item)}</div>" if isinstance(item, RunView) else _other(item))
        return "".join(parts) + "</section>"

    def subcall(self, call: Event) -> str:
        answer = str(call.get("response_preview", call.get("error", "")))
        summary = (
            f"{call.get('kind', 'sub-call')} · {_num(call.get('prompt_tokens')):,.0f} tokens "
            f"({_num(call.get('cached_tokens')):,.0f} cached) → {_num(call.get('completion_tokens')):,.0f} · "
            f"{_num(call.get('latency_s')):.2f} s (queue {_num(call.get('queue_s')):.2f} s) · {_preview(answer)}"
        )
        shown = {"error": call.get("error"), "chars": call.get("chars"), "depth": call.get("depth")}
        shown |= {
            k: v for k, v in call.items() if k not in TURN_FIELDS | {"kind", "prompt_preview", "response_preview"}
        }
        return (
            f"<details class='subcall' id='subcall-{self.numbers.get(id(call), 0)}'><summary>{_e(summary)}</summary>"
            f"{_pairs({k: v for k, v in shown.items() if v is not None})}<div class='label'>prompt (start)</div>"
            f"<pre class='prompt'>{_e(str(call.get('prompt_preview', '')))}</pre><div class='label'>answer</div>"
            f"<pre class='answer'>{_e(answer)}</pre></details>"
        )


def _other(event: Event) -> str:
    """Any other event (guards, faults, votes, kinds added later): its fields as they are."""
    fields = {k: v for k, v in event.items() if k not in ("event", "time", "run_id")}
    shown = json.dumps(fields, ensure_ascii=False, indent=1, default=str)
    return f"<div class='event'><b>{_e(str(event['event']))}</b><pre>{_e(shown)}</pre></div>"


def _pairs(fields: dict[str, Any]) -> str:
    cells = "".join(f"<span><b>{_e(str(k))}</b> {_e(_short(v))}</span>" for k, v in fields.items())
    return f"<div class='pairs'>{cells}</div>"


def _timeline(events: list[Event], tree: Tree, numbers: dict[int, int]) -> str:
    """Root turns on the top lanes (generating, then running their code, lighter); sub-calls packed into lanes
    below, one per call running at once; the part of each call spent in the engine's queue drawn lighter."""
    times = [_num(e.get("time")) for e in events if "time" in e]
    turn_begin = {id(t.event): t.begin for t in _all_turns(tree.roots) if t.event is not None}
    bars: list[tuple[float, float, Event]] = []
    for event in events:
        finish = _num(event.get("time"))
        if event["event"] == "subcall":
            bars.append((finish - _num(event.get("latency_s")), finish, event))
        elif event["event"] == "turn":
            bars.append((min(turn_begin.get(id(event), finish), finish - _num(event.get("latency_s"))), finish, event))
    origin = min(times + [b[0] for b in bars], default=0.0)
    span = max(max(times, default=origin) - origin, 1e-3)
    scale = (WIDTH - GUTTER) / span
    turn_lanes: list[float] = []
    call_lanes: list[float] = []
    placed: list[tuple[str, float, float, Event, int]] = []
    for begin, finish, event in sorted(bars, key=lambda b: b[0]):
        is_turn = event["event"] == "turn"
        lanes, most = (turn_lanes, MAX_TURN_LANES) if is_turn else (call_lanes, MAX_CALL_LANES)
        placed.append((event["event"], begin, finish, event, _lane(lanes, begin, finish, most)))
    calls_top = (len(turn_lanes) + 1) * LANE
    shapes = []
    for kind, begin, finish, event, lane in placed:
        x = GUTTER + (begin - origin) * scale
        y = lane * LANE if kind == "turn" else calls_top + lane * LANE
        queue = min(_num(event.get("queue_s")), finish - begin)
        if kind == "turn":
            generating = min(_num(event.get("latency_s")), finish - begin)
            depth = int(_num(event.get("depth")))
            title = f"{event.get('run', 'main')} turn {event.get('turn')}: {generating:.1f} s generating, "
            title += f"{finish - begin - generating:.1f} s running code"
            colours = ("#a9c1de", "#3b6ea8" if depth == 0 else "#7a5ea8", "#d4dfee")
            segments = [(0.0, queue), (queue, generating), (generating, finish - begin)]
            link = ""
        else:
            title = f"{event.get('kind')}: {finish - begin:.2f} s, queue {queue:.2f} s"
            colours, segments = ("#f2c38b", "#d9822b"), [(0.0, queue), (queue, finish - begin)]
            link = f"#subcall-{numbers.get(id(event), 0)}"
        rects = "".join(
            _rect(x + a * scale, y, max((b - a) * scale, 1.0 if i == 1 else 0.0), LANE - 2, colour)
            for i, ((a, b), colour) in enumerate(zip(segments, colours, strict=False))
            if b > a or i == 1
        )
        group = f"<g><title>{_e(title)}</title>{rects}</g>"
        shapes.append(f"<a href='{link}'>{group}</a>" if link else group)
    height = calls_top + max(len(call_lanes), 1) * LANE + 18
    axis = [f"<text x='0' y='{LANE - 2}'>turns</text><text x='0' y='{calls_top + LANE - 2}'>sub-calls</text>"]
    step = next((s for s in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600) if span / s <= 10), 3600 * 6)
    for tick in range(0, math.floor(span / step) + 1):
        x = GUTTER + tick * step * scale
        axis.append(f"<line x1='{x:.1f}' x2='{x:.1f}' y1='0' y2='{height - 14}' class='tick'/>")
        axis.append(f"<text x='{x + 2:.1f}' y='{height - 3}'>{tick * step} s</text>")
    return (
        f"<h2>timeline</h2><div class='legend'>blue: root turns (dark: generating, light: running the code; "
        f"purple: sub-RLM turns) · orange: sub-calls, one lane each while they overlap, lighter while waiting in "
        f"the engine queue · most sub-calls at once: {len(call_lanes)} · click a sub-call to open it</div>"
        f"<svg class='timeline' width='{WIDTH}' height='{height}'>{''.join(axis)}{''.join(shapes)}</svg>"
        "<p><button id='expand'>open all sub-calls</button> <button id='collapse'>close all</button></p>"
    )


def _all_turns(views: list[RunView]) -> list[Turn]:
    turns = [t for v in views for t in [*v.turns, v.open]]
    return turns + _all_turns([c for t in turns for c in t.children]) if turns else []


def _lane(lanes: list[float], begin: float, finish: float, most: int) -> int:
    """The first lane free at `begin` (each lane holds the time it becomes free); a new one, up to `most`."""
    lane = next((i for i, free in enumerate(lanes) if free <= begin + 1e-6), None)
    if lane is None and len(lanes) < most:
        lanes.append(finish)
        return len(lanes) - 1
    lane = min(range(len(lanes)), key=lanes.__getitem__) if lane is None else lane
    lanes[lane] = max(lanes[lane], finish)
    return lane


def _rect(x: float, y: float, width: float, height: float, colour: str) -> str:
    return f"<rect x='{x:.1f}' y='{y:.1f}' width='{width:.1f}' height='{height:.1f}' fill='{colour}'/>"


def _num(value: Any, default: float = 0.0) -> float:
    """A number from a field that may be missing or malformed: the page is drawn anyway."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return default
    return number if math.isfinite(number) else default


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [] if value in (None, "") else [value]


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return _preview(text) if len(text) > 200 else text


def _preview(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= PREVIEW_CHARS else flat[: PREVIEW_CHARS - 1] + "…"


def _slug(label: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")


def _e(text: str) -> str:
    return html.escape(text, quote=True)


# The page's only script (its hash is the one the page's policy allows): open a sub-call clicked in the timeline,
# and open or close them all.
SCRIPT = """
function openTarget() {
  var target = document.getElementById(decodeURIComponent(location.hash.slice(1)));
  if (target && target.tagName === 'DETAILS') { target.open = true; }
}
function setAll(open) { document.querySelectorAll('details.subcall').forEach(function (d) { d.open = open; }); }
window.addEventListener('hashchange', openTarget);
document.getElementById('expand').addEventListener('click', function () { setAll(true); });
document.getElementById('collapse').addEventListener('click', function () { setAll(false); });
openTarget();
"""

CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px auto; max-width: 1150px; color: #222; }
h1 { font-size: 20px; } h2 { font-size: 16px; margin-top: 28px; } h3 { font-size: 13px; color: #444; margin: 0 0 6px; }
table.facts { font-size: 13px; }
table.facts th { text-align: left; padding-right: 14px; color: #555; vertical-align: top; white-space: nowrap; }
section.turn, section.after { border-left: 3px solid #3b6ea8; padding: 6px 12px; margin: 14px 0; background: #fafbfd; }
section.after { border-left-color: #999; }
pre { white-space: pre-wrap; word-break: break-word; margin: 2px 0 8px; padding: 6px 8px; background: #f3f3f3; }
pre.output { background: #eef6ee; } .code pre { background: #f8f8f8; }
.label { font-size: 11px; text-transform: uppercase; color: #888; }
.query { font-size: 12px; color: #555; }
details.subcall { margin: 3px 0; border: 1px solid #e3d3c0; background: #fffaf4; padding: 2px 8px; }
details.subcall summary { cursor: pointer; font-size: 12px; }
details.subcall:target { outline: 2px solid #d9822b; }
.pairs { font-size: 12px; color: #555; margin: 4px 0; } .pairs span { margin-right: 14px; }
.final { font-weight: bold; color: #1d6b2f; } .note { color: #8a5a00; }
.event { font-size: 12px; border-left: 3px solid #b55; padding-left: 8px; margin: 6px 0; }
.nested { margin-left: 22px; border-left: 2px dashed #aaa; padding-left: 10px; }
svg.timeline { background: #fcfcfc; border: 1px solid #ddd; } svg text { font-size: 10px; fill: #666; }
svg line.tick { stroke: #eee; } svg a rect:hover { opacity: .7; }
.legend { font-size: 12px; color: #555; margin-bottom: 4px; }
"""
