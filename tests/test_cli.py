"""Bad input through the CLI: a clear one-line error and exit code 2, never a traceback, before any engine starts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "rlm_local.cli", *args],
        input=stdin.decode() if stdin is not None else None,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def assert_clear_error(result: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("rlm-local: error:") and fragment in result.stderr


def test_missing_context_file():
    assert_clear_error(cli("run", "--context", "/no/such/file.txt", "--query", "q"), "not found")


def test_empty_context_file(tmp_path: Path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert_clear_error(cli("run", "--context", str(empty), "--query", "q"), "empty")


def test_binary_context_file(tmp_path: Path):
    blob = tmp_path / "blob.bin"
    blob.write_bytes(bytes(range(256)) * 64)
    assert_clear_error(cli("run", "--context", str(blob), "--query", "q"), "binary")


def test_non_utf8_context_file(tmp_path: Path):
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("café crème".encode("latin-1") * 100)
    assert_clear_error(cli("run", "--context", str(latin), "--query", "q"), "not UTF-8")


def test_empty_stdin():
    assert_clear_error(cli("run", "--context", "-", "--query", "q", stdin=b""), "empty")


def test_model_path_that_does_not_exist(tmp_path: Path):
    ctx = tmp_path / "c.txt"
    ctx.write_text("some text")
    assert_clear_error(cli("run", "--context", str(ctx), "--query", "q", "--model", "/no/such/model"), "does not exist")


def test_unknown_model_name(tmp_path: Path):
    ctx = tmp_path / "c.txt"
    ctx.write_text("some text")
    assert_clear_error(cli("run", "--context", str(ctx), "--query", "q", "--model", "not-a-model"), "not-a-model")


def test_empty_query(tmp_path: Path):
    ctx = tmp_path / "c.txt"
    ctx.write_text("some text")
    assert_clear_error(cli("run", "--context", str(ctx), "--query", "  "), "query is empty")


@pytest.mark.parametrize("flag", ["--max-iterations", "--max-subcalls"])
def test_invalid_budget(tmp_path: Path, flag: str):
    ctx = tmp_path / "c.txt"
    ctx.write_text("some text")
    result = cli("run", "--context", str(ctx), "--query", "q", flag, "-1")
    assert result.returncode == 2 and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [
        (["--cell-timeout", "-1"], "cell_timeout_s"),
        (["--cell-timeout", "0"], "cell_timeout_s"),
        (["--samples", "0"], "samples"),
        (["--max-model-len", "-5"], "max_model_len"),
    ],
)
def test_invalid_non_budget_flags_are_clear_errors(tmp_path: Path, flags: list[str], fragment: str):
    ctx = tmp_path / "c.txt"
    ctx.write_text("some text")
    assert_clear_error(cli("run", "--context", str(ctx), "--query", "q", *flags), fragment)


def test_models_lists_the_catalog(capsys):
    from rlm_local.cli import main
    from rlm_local.models import CATALOG, DEFAULT_MODEL

    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert all(alias in out for alias in CATALOG) and f"{DEFAULT_MODEL} (default)" in out
