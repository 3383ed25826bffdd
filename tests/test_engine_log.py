"""The engine log: processes started inside `engine_output_to` write to the file; our own stderr is unchanged."""

from __future__ import annotations

import subprocess
import sys

from rlm_local.config import EngineConfig, RLMConfig
from rlm_local.engines.engine_log import (
    KEEP_LOGS,
    engine_output_to,
    last_error_lines,
    log_engines_to_file,
    new_log_path,
)


def test_a_process_started_inside_the_block_writes_its_stderr_to_the_log_and_keeps_it(tmp_path, capfd):
    log = tmp_path / "engine.log"
    with engine_output_to(log):
        late_writer = "import sys, time; time.sleep(0.5); print('late', file=sys.stderr)"
        child = subprocess.Popen([sys.executable, "-c", late_writer])
    print("ours", file=sys.stderr)
    child.wait(timeout=30)
    assert "late" in log.read_text()  # written after the block ended: the child keeps the file for its whole life
    assert "ours" in capfd.readouterr().err and "ours" not in log.read_text()


def test_without_a_path_nothing_is_redirected(capfd):
    with engine_output_to(None):
        subprocess.run([sys.executable, "-c", "import sys; print('seen', file=sys.stderr)"], check=True)
    assert "seen" in capfd.readouterr().err


def test_the_log_folder_keeps_only_the_latest_logs(tmp_path, monkeypatch):
    monkeypatch.setenv("RLM_LOCAL_LOG_DIR", str(tmp_path))
    for i in range(KEEP_LOGS + 5):
        (tmp_path / f"engine-20260101-0000{i:02d}-1.log").write_text("old")
    fresh = new_log_path()
    fresh.write_text("new")
    assert len(list(tmp_path.glob("engine-*.log"))) == KEEP_LOGS
    assert fresh.exists()


def test_an_error_message_quotes_the_lines_that_say_what_failed(tmp_path):
    log = tmp_path / "engine.log"
    log.write_text("INFO loading\nValueError: the model folder has no config.json\nINFO shutting down\n")
    assert "no config.json" in last_error_lines(log)
    assert last_error_lines(tmp_path / "missing.log") == ""


def test_only_in_process_engines_get_a_log_file(tmp_path):
    config = RLMConfig(sub=EngineConfig(backend="openai", base_url="http://127.0.0.1:1/v1"))
    log_engines_to_file(config, tmp_path / "engine.log")
    assert config.root.log_file == tmp_path / "engine.log"
    assert config.sub is not None and config.sub.log_file is None
