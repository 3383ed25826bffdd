"""`rlm-local view`: trajectories become one self-contained page; model output is escaped; bad files are refused."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rlm_local.errors import RLMError
from rlm_local.viewer import build_runs, load_events, render_html, write_view

EVAL_RUN = Path(__file__).resolve().parent.parent / "docs/eval/qwen2.5-coder-0.5b/trajectories/rlm"


def _event(name: str, time: float, **fields: object) -> dict[str, object]:
    return {"event": name, "time": time, "run_id": "r1", **fields}


def _run_with_a_sub_rlm() -> list[dict[str, object]]:
    return [
        _event("run_start", 0.0, run="main", depth=0, query="Who signed?", context={"type": "str", "total_chars": 9}),
        _event("subcall", 1.0, run="main", depth=1, kind="llm_query", latency_s=0.5, prompt_preview="read <b>this</b>"),
        _event("turn", 2.0, run="main", depth=0, turn=1, response="<script>alert(1)</script>", code=["x = 1"]),
        _event("run_start", 2.5, run="main / sub-RLM 1", depth=1, query="part one"),
        _event("subcall", 3.0, run="main / sub-RLM 1", depth=2, kind="llm_query", latency_s=0.2),
        _event("turn", 3.5, run="main / sub-RLM 1", depth=1, turn=1, response="FINAL(Ada)", code=[]),
        _event("sub_rlm", 3.6, run="main", child="main / sub-RLM 1", depth=1, answer="Ada"),
        _event("turn", 4.0, run="main", depth=0, turn=2, response="FINAL(Ada)", code=[], final="Ada"),
        _event("mystery", 4.2, run="main", detail="an event kind the viewer has never seen"),
        _event("run_end", 4.5, answer="Ada", stop_reason="final", turns=2, usage={"sub_calls": 2}),
    ]


def test_turns_sub_calls_and_nested_sub_rlms_are_placed_where_they_ran():
    (main,) = build_runs(_run_with_a_sub_rlm())  # type: ignore[arg-type]
    assert [len(t.subcalls) for t in main.turns] == [1, 0]
    (child,) = main.turns[1].children  # started during turn 2 (after turn 1 ended at 2.0)
    assert child.label == "main / sub-RLM 1" and len(child.turns[0].subcalls) == 1
    assert main.after is not None and [e["event"] for e in main.after.others] == ["mystery"]


def test_the_page_escapes_model_output_and_shows_unknown_events():
    page = render_html(_run_with_a_sub_rlm())  # type: ignore[arg-type]
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "read &lt;b&gt;this&lt;/b&gt;" in page
    assert page.count("class='turn'") == 3 + 1  # two main turns, one sub-RLM turn, the events after the last turn
    assert page.count("<details class='subcall'>") == 2
    assert "an event kind the viewer has never seen" in page
    assert "http" not in page.replace("http-equiv", ""), "the page must not load anything from the network"


def test_a_real_eval_trajectory_renders_every_turn_and_sub_call(tmp_path):
    source = sorted(EVAL_RUN.glob("needle_*.jsonl"))[0]
    events = load_events(source)
    out = write_view(source, tmp_path / "run.html")
    page = out.read_text()
    assert page.count("<section class='turn'") >= sum(e["event"] == "turn" for e in events)
    assert page.count("<details class='subcall'>") == sum(e["event"] == "subcall" for e in events)
    assert "<svg class='timeline'" in page


def test_bad_files_get_clear_errors(tmp_path):
    with pytest.raises(RLMError, match="trajectory file not found"):
        load_events(tmp_path / "missing.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(RLMError, match="the trajectory file is empty"):
        load_events(tmp_path / "empty.jsonl")
    (tmp_path / "notes.jsonl").write_text("just some text\n")
    with pytest.raises(RLMError, match=r"notes.jsonl:1 is not a JSON line"):
        load_events(tmp_path / "notes.jsonl")
    (tmp_path / "other.jsonl").write_text(json.dumps({"a": 1}) + "\n")
    with pytest.raises(RLMError, match="is not a trajectory event"):
        load_events(tmp_path / "other.jsonl")


def test_the_cli_writes_the_page_and_reports_errors(tmp_path):
    trajectory = tmp_path / "run.jsonl"
    trajectory.write_text("\n".join(json.dumps(e) for e in _run_with_a_sub_rlm()))
    done = subprocess.run(
        [sys.executable, "-m", "rlm_local.cli", "view", str(trajectory)], capture_output=True, text=True
    )
    assert done.returncode == 0 and done.stdout.strip() == str(tmp_path / "run.html")
    missing = subprocess.run(
        [sys.executable, "-m", "rlm_local.cli", "view", str(tmp_path / "x.jsonl")], capture_output=True, text=True
    )
    assert (
        missing.returncode == 2 and "trajectory file not found" in missing.stderr and "Traceback" not in missing.stderr
    )
