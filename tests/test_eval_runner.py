"""The evaluation runner, report and data set loaders, with a scripted LM and the real process worker."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from fakes import ScriptedEngine, repl

from rlm_local.config import RLMConfig
from rlm_local.errors import ConfigError, ContextError
from rlm_local.eval.baseline import CUT_MARK, fit_to_window, render_context
from rlm_local.eval.datasets import load_dataset, load_longbench, load_oolong
from rlm_local.eval.report import write_report
from rlm_local.eval.runner import EvalRunner, System, load_results
from rlm_local.eval.scoring import score_answer
from rlm_local.eval.seeds import REPORT_SEED_START, parse_seeds
from rlm_local.eval.tasks import make_task
from rlm_local.repl.process_sandbox import ProcessSandbox
from rlm_local.rlm import RLM


def test_system_parse_and_config_overrides():
    system = System.parse("rlm:guards=false,max_iterations=3,profile=general")
    config = system.config(RLMConfig())
    assert system.kind == "rlm" and config.budgets.max_iterations == 3 and config.profile == "general"
    assert System.parse("base").kind == "base"
    with pytest.raises(ConfigError):
        System.parse("gpt")
    with pytest.raises(ConfigError):
        System.parse("rlm:guards")


def test_seed_sets_are_disjoint():
    dev, report = parse_seeds("dev:5"), parse_seeds("report:5")
    assert dev == [0, 1, 2, 3, 4] and min(report) == REPORT_SEED_START
    assert not set(dev) & set(report)
    assert parse_seeds("3,1004") == [3, 1004]
    for bad in ("dev:0", "report:x", "", "a,b", "-1"):
        with pytest.raises(ConfigError):
            parse_seeds(bad)


def test_base_prompt_is_cut_in_the_middle_to_fit_the_window():
    engine = ScriptedEngine([], max_model_len=400)
    text = "head-marker " + "word " * 5000 + " tail-marker"
    prompt = fit_to_window(engine, text, "What?", answer_tokens=50)
    assert engine.count_tokens([{"role": "user", "content": prompt}]) <= 350
    assert "head-marker" in prompt and "tail-marker" in prompt and CUT_MARK.strip() in prompt
    short = fit_to_window(engine, "a short text", "What?", answer_tokens=50)
    assert "a short text" in short and CUT_MARK.strip() not in short


def test_render_context_keeps_document_names():
    assert render_context({"a.md": "alpha", "b.md": "beta"}) == "# a.md\nalpha\n\n# b.md\nbeta"
    assert render_context(["x", "y"]) == "x\n\ny"


def _gold_answer(task) -> str:
    return ", ".join(task.gold) if isinstance(task.gold, list) else str(task.gold)


def _run_eval(tmp_path: Path, tasks, systems, engine: ScriptedEngine) -> list[dict]:
    async def go():
        rlm = RLM(RLMConfig(sandbox="process"), root_engine=engine, sandbox=ProcessSandbox())
        async with rlm:
            return await EvalRunner(rlm, tmp_path, concurrency=2).run(tasks, systems)

    return asyncio.run(go())


def test_eval_run_scores_writes_trajectories_resumes_and_reports(tmp_path):
    tasks = [make_task("needle", seed, 9_000) for seed in (0, 1)]
    gold = {t.query: _gold_answer(t) for t in tasks}

    def root(messages):  # looks at the data first, then answers with its task's gold value
        if len(messages) == 1:  # the base model's single prompt
            return "I cannot tell."
        first = messages[1]["content"]
        query = next(line for line in first.splitlines() if line.startswith("Question: ")).removeprefix("Question: ")
        return repl("print(str(context)[:200])") if len(messages) == 2 else f"FINAL({gold[query]})"

    engine = ScriptedEngine(root)
    systems = [System.parse("rlm"), System.parse("base")]
    first = _run_eval(tmp_path, tasks, systems, engine)
    assert len(first) == 4 and len(load_results(tmp_path)) == 4
    base = [r for r in first if r["system"] == "base"]
    assert all(r["score"] == 0 and r["turns"] == 1 for r in base)
    rlm_rows = [r for r in first if r["system"] == "rlm"]
    assert all(r["trajectory"] and (tmp_path / r["trajectory"]).exists() for r in rlm_rows)
    assert {r["task_id"] for r in first} == {t.task_id for t in tasks}

    calls = len(engine.root_prompts)
    again = _run_eval(tmp_path, tasks, systems, engine)
    assert again == [] and len(engine.root_prompts) == calls  # every task was done: nothing ran twice
    assert len(load_results(tmp_path)) == 4

    report = write_report(tmp_path)
    text = report.read_text()
    assert "| rlm |" in text and "| base |" in text and "development seeds [0, 1]" in text
    assert list((tmp_path / "plots").glob("*.png"))
    version = first[0]["commit"]
    assert version and all(r["commit"] == version for r in first) and f"{version} (4 rows)" in text
    # the base model against the RLM on the same two tasks: the RLM answered both, the base model neither
    assert "| base | 2 | 0% | 0.00 | 100% | 1.00 |" in text


def test_a_task_that_fails_is_recorded_and_scored_zero(tmp_path):
    task = make_task("needle", 2, 9_000)

    def broken(messages):
        raise RuntimeError("engine fell over")

    records = _run_eval(tmp_path, [task], [System.parse("rlm")], ScriptedEngine(broken))
    assert records[0]["error"].startswith("RuntimeError") and records[0]["score"] == 0


def test_oolong_loader_reads_the_schema_and_scores_like_oolong(tmp_path):
    rows = [
        {
            "id": 7,
            "context_window_text": "Date: x || User: 1 || Instance: hi",
            "question": "How many?",
            "answer": "[5]",
        },
        {"context_window_text": "text", "question": "Most common label?", "answer": "['positive']"},
    ]
    path = tmp_path / "oolong.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    numeric, label = load_oolong(path)
    assert numeric.gold == 5 and numeric.metric == "numeric" and numeric.task_id == "oolong/7"
    assert score_answer(numeric, "There are 5.").exact and score_answer(numeric, "7").score == pytest.approx(0.75**2)
    assert label.gold == "positive" and score_answer(label, "positive").exact
    assert not score_answer(label, "negative").exact
    assert len(load_dataset(f"oolong:{path}", limit=1)) == 1


def test_dataset_loaders_give_clear_errors(tmp_path):
    with pytest.raises(ContextError, match="not found"):
        load_oolong(tmp_path / "missing.parquet")
    wrong = tmp_path / "wrong.jsonl"
    wrong.write_text(json.dumps({"text": "x", "q": "y"}))
    with pytest.raises(ContextError, match="missing column"):
        load_oolong(wrong)
    with pytest.raises(ContextError, match="oolong:PATH"):
        load_dataset("squad:x.json")


def test_longbench_loader_scores_the_chosen_letter(tmp_path):
    row = {"_id": "a1", "question": "Q?", "context": "ctx", "answer": "C", "domain": "single"}
    row |= {f"choice_{c}": f"option {c}" for c in "ABCD"}
    path = tmp_path / "longbench.json"
    path.write_text(json.dumps([row]))
    (task,) = load_longbench(path)
    assert "(C) option C" in task.query and task.gold == "C"
    assert score_answer(task, "The answer is (C).").exact and not score_answer(task, "B").exact
