"""`rlm-local view`: a real trajectory becomes one self-contained page with every turn and sub-call; model output
is escaped; sub-RLMs sit under the turn they ran in; unknown or malformed events are shown, never a crash; bad files
get a one-line error."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from rlm_local.errors import RLMError
from rlm_local.viewer import build_tree, load_events, render_html, write_view

ROOT = Path(__file__).resolve().parents[1]
REAL_RUN = ROOT / "tests/data/multihop_winner_dict_8000_1000.jsonl"  # a docs/eval run: 9 turns, 24 sub-calls
EVIL = "<script>alert(1)</script>"


def _event(name: str, time: float, **fields: object) -> dict[str, object]:
    return {"event": name, "time": time, "run_id": "r1", **fields}


def _run_with_a_sub_rlm() -> list[dict[str, object]]:
    return [
        _event("run_start", 0.0, run="main", depth=0, query=f"Who signed? {EVIL}", context={"type": "str"}),
        _event("subcall", 1.0, run="main", depth=1, kind="llm_query", latency_s=0.5, prompt_preview="read <b>this</b>"),
        _event("turn", 2.0, run="main", depth=0, turn=1, response=EVIL, code=[f"x = '{EVIL}'"], outputs=[EVIL]),
        _event("run_start", 2.5, run="main / sub-RLM 1", depth=1, query="part one"),
        _event("subcall", 3.0, run="main / sub-RLM 1", depth=2, kind="llm_query", latency_s=0.2),
        _event("turn", 3.5, run="main / sub-RLM 1", depth=1, turn=1, response="FINAL(Ada)", code=[]),
        _event("sub_rlm", 3.6, run="main", child="main / sub-RLM 1", depth=1, answer="Ada"),
        _event("turn", 4.0, run="main", depth=0, turn=2, response="FINAL(Ada)", code=[], final="Ada"),
        _event("mystery", 4.2, run="main", depth=0, detail=f"an event kind the viewer has never seen {EVIL}"),
        _event("run_end", 4.5, answer="Ada", stop_reason="final", turns=2, usage={"sub_calls": 2}),
    ]


def _sections(page: str, kind: str) -> list[str]:
    return re.findall(rf"<{kind} class='(?:turn|subcall)' id='([^']+)'", page)


def test_a_real_run_shows_every_turn_and_sub_call():
    events = load_events(REAL_RUN)
    page = render_html(events)
    turns = [e for e in events if e["event"] == "turn"]
    calls = [e for e in events if e["event"] == "subcall"]
    assert _sections(page, "section") == [f"turn-{e['turn']}" for e in turns]
    assert len(set(_sections(page, "details"))) == len(calls) == 24
    assert page.count("<details class='subcall'") == len(calls)
    for call in calls:  # prompt and answer previews, escaped as the page shows them
        assert f"<pre class='prompt'>{_escaped(call['prompt_preview'])}</pre>" in page
    assert "<svg class='timeline'" in page and page.count("<a href='#subcall-") == len(calls)
    assert "Which competitor won the 2017 42-kilometre run" in page  # the query, in the header
    assert "the root conversation no longer fits the model" in page  # the stop reason
    assert '<div class="code"><pre>' in page and '<span class="nb">print</span>' in page  # pygments


def _escaped(text: str) -> str:
    import html

    return html.escape(text, quote=True)


def test_model_output_is_escaped_and_the_page_loads_nothing():
    page = render_html(_run_with_a_sub_rlm())  # type: ignore[arg-type]
    assert EVIL not in page and page.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 5
    assert page.count("<script") == 1, "only the page's own script"
    assert "read &lt;b&gt;this&lt;/b&gt;" in page
    assert "default-src 'none'" in page and "script-src 'sha256-" in page
    assert not re.search(r"(src|href)=['\"]?(https?:)?//", page), "the page must not load anything from the network"


def test_sub_rlms_nest_under_the_turn_they_ran_in_and_unknown_events_are_shown():
    tree = build_tree(_run_with_a_sub_rlm())  # type: ignore[arg-type]
    (main,) = tree.roots
    assert [len(t.subcalls) for t in main.turns] == [1, 0]
    (child,) = main.turns[1].children  # started at 2.5, during turn 2 (turn 1 ended at 2.0)
    assert child.label == "main / sub-RLM 1" and len(child.turns[0].subcalls) == 1
    assert [e["event"] for e in main.open.others] == ["mystery"]
    page = render_html(_run_with_a_sub_rlm())  # type: ignore[arg-type]
    assert _sections(page, "section") == ["turn-1", "turn-2", "main-sub-rlm-1-turn-1"]
    nested = page.index("<div class='nested'><div class='run' data-run='main / sub-RLM 1'>")
    assert page.index("id='turn-2'") < nested < page.index("<section class='after'>")  # inside turn 2
    assert nested < page.index("<b>sub_rlm</b>"), "the sub-RLM's result follows its run"
    assert "an event kind the viewer has never seen" in page and "<b>mystery</b>" in page


def test_older_unlabelled_trajectories_nest_by_depth_and_time():
    events = [{k: v for k, v in e.items() if k != "run"} for e in _run_with_a_sub_rlm()]
    (main,) = build_tree(events).roots  # type: ignore[arg-type]
    assert [len(t.subcalls) for t in main.turns] == [1, 0]
    (child,) = main.turns[1].children
    assert child.start["query"] == "part one" and len(child.turns) == 1 and len(child.turns[0].subcalls) == 1


def test_voting_samples_are_separate_runs_and_the_vote_follows_them():
    events = [_event("run_start", 0.0, run=f"sample {i}", depth=0, query="q") for i in (1, 2)]
    events += [_event("turn", 1.0 + i, run=f"sample {i}", depth=0, turn=1, response=f"FINAL({i})") for i in (1, 2)]
    events += [_event("vote", 4.0, answers=["1", "2"], chosen="1"), _event("run_end", 5.0, answer="1")]
    tree = build_tree(events)  # type: ignore[arg-type]
    assert [v.label for v in tree.roots] == ["sample 1", "sample 2"] and tree.tail[0]["event"] == "vote"
    page = render_html(events)  # type: ignore[arg-type]
    assert _sections(page, "section") == ["sample-1-turn-1", "sample-2-turn-1"]
    assert page.index("data-run='sample 2'") < page.index("<b>vote</b>")


def test_malformed_fields_and_a_cut_file_still_render():
    events = [
        {"event": "turn", "turn": "x", "latency_s": "slow", "queue_s": None, "code": "print(1)", "outputs": None},
        {"event": "subcall", "time": "later", "latency_s": float("nan"), "prompt_tokens": [1]},
        {"event": "guard", "time": 3.0, "depth": 0, "nested": {"a": [1, 2]}},
    ]
    page = render_html(events)  # type: ignore[arg-type]
    assert "id='turn-x'" in page and page.count("<details class='subcall'") == 1 and "<b>guard</b>" in page
    assert "no run_end" in page
    assert "no run_end" in render_html([]) and "<b>?</b>" in render_html([{"time": 1.0}, "junk"])  # type: ignore[list-item]


def test_a_file_with_appended_runs_shows_the_last():
    first = [_event("run_start", 0.0, run="main", depth=0, query="first"), _event("run_end", 1.0, answer="A")]
    second = [{**e, "run_id": "r2", "time": e["time"] + 10} for e in _run_with_a_sub_rlm()]  # type: ignore[operator]
    page = render_html(first + second)  # type: ignore[arg-type]
    assert "Who signed?" in page and "<h1>first" not in page and "earlier runs, not shown: r1" in page
    assert "3: 0 prompt tokens" in page and "id r2" in page  # the counts are those of the run shown


def test_bad_files_get_clear_errors(tmp_path):
    with pytest.raises(RLMError, match="trajectory file not found"):
        load_events(tmp_path / "missing.jsonl")
    with pytest.raises(RLMError, match="trajectory file not found"):
        load_events(tmp_path)  # a folder
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(RLMError, match="the trajectory file is empty"):
        load_events(tmp_path / "empty.jsonl")
    (tmp_path / "notes.jsonl").write_text("just some text\n")
    with pytest.raises(RLMError, match=r"notes.jsonl:1 is not a JSON line"):
        load_events(tmp_path / "notes.jsonl")
    (tmp_path / "other.jsonl").write_text(json.dumps({"a": 1}) + "\n")
    with pytest.raises(RLMError, match="is not a trajectory event"):
        load_events(tmp_path / "other.jsonl")


def test_the_page_never_overwrites_its_trajectory(tmp_path):
    source = tmp_path / "run.html"
    source.write_text(REAL_RUN.read_text())
    assert write_view(source) == tmp_path / "run.html.html" and source.read_text() == REAL_RUN.read_text()


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "rlm_local.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def test_the_view_command_writes_the_page_and_reports_errors(tmp_path):
    trajectory = tmp_path / "run.jsonl"
    trajectory.write_text(REAL_RUN.read_text())
    done = _cli("view", str(trajectory))
    assert done.returncode == 0 and done.stdout.strip() == str(tmp_path / "run.html"), done.stderr
    assert (tmp_path / "run.html").read_text().count("<section class='turn'") == 9
    done = _cli("view", str(trajectory), "-o", str(tmp_path / "pages" / "x.html"))
    assert done.returncode == 0 and (tmp_path / "pages" / "x.html").is_file()
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    for path, message in ((tmp_path / "x.jsonl", "trajectory file not found"), (tmp_path / "bad.jsonl", "bad.jsonl:1")):
        failed = _cli("view", str(path))
        assert failed.returncode == 2 and "Traceback" not in failed.stderr
        assert failed.stderr.startswith("rlm-local: error:") and message in failed.stderr


class _FakeServer(BaseHTTPRequestHandler):
    """An OpenAI-compatible server scripted for one run: the root asks one sub-call, then answers from its output."""

    def do_GET(self) -> None:
        self._send("application/json", json.dumps({"data": [{"id": "fake", "max_model_len": 8192}]}).encode())

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        messages = body["messages"]
        if messages[0]["role"] != "system":
            text = "The code is 4417."  # a sub-call
        elif not any(m["role"] == "assistant" for m in messages):
            text = "```repl\nprint(llm_query('What is the code in: ' + str(context)[:200]))\n```"
        else:
            text = "FINAL(4417)"
        usage = {"prompt_tokens": 50, "completion_tokens": 5, "total_tokens": 55}
        chunks = [{"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": "stop"}]}]
        chunks.append({"choices": [], "usage": usage})
        stream = b"".join(f"data: {json.dumps(c)}\n\n".encode() for c in chunks) + b"data: [DONE]\n\n"
        self._send("text/event-stream", stream)

    def _send(self, kind: str, data: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


def test_run_view_writes_the_trajectory_and_the_page_under_runs(tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    (tmp_path / "context.txt").write_text("The access code is 4417.\n" * 20)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        args = ["--context", "context.txt", "--query", "What is the code?", "--base-url", url, "--model", "fake"]
        done = _cli("run", *args, "--sandbox", "process", "--quiet", "--view", cwd=tmp_path)
    finally:
        server.shutdown()
    assert done.returncode == 0, done.stderr[-3000:]
    (trajectory,) = (tmp_path / "runs").glob("run-*.jsonl")
    page = trajectory.with_suffix(".html")
    assert f"[trajectory: runs/{trajectory.name}]" in done.stderr and page.is_file()
    assert f"[view: runs/{page.name}]" in done.stderr
    calls = sum(json.loads(line)["event"] == "subcall" for line in trajectory.read_text().splitlines())
    assert calls >= 1 and page.read_text().count("<details class='subcall'") == calls
