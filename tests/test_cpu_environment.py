"""The CPU engine's environment: tcmalloc preloaded for the engine processes unless the user chose otherwise."""

from __future__ import annotations

import glob
import os

import pytest

from rlm_local.engines.vllm_engine import preload_tcmalloc

TCMALLOC = sorted(glob.glob("/usr/lib/*/libtcmalloc_minimal.so.4"))


@pytest.mark.skipif(not TCMALLOC, reason="libtcmalloc-minimal4 is not installed (make setup installs it)")
def test_tcmalloc_goes_first_and_keeps_what_was_preloaded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RLM_LOCAL_NO_TCMALLOC", raising=False)
    monkeypatch.setenv("LD_PRELOAD", "/opt/lib/libgomp.so.1")
    preload_tcmalloc()
    assert os.environ["LD_PRELOAD"] == f"{TCMALLOC[0]}:/opt/lib/libgomp.so.1"
    preload_tcmalloc()  # once only
    assert os.environ["LD_PRELOAD"].count("libtcmalloc") == 1


@pytest.mark.parametrize(
    ("preload", "opt_out"), [("/home/me/libtcmalloc.so.4", None), ("", "1")], ids=["user's tcmalloc", "opted out"]
)
def test_a_users_choice_wins(monkeypatch: pytest.MonkeyPatch, preload: str, opt_out: str | None) -> None:
    monkeypatch.setenv("LD_PRELOAD", preload)
    if opt_out:
        monkeypatch.setenv("RLM_LOCAL_NO_TCMALLOC", opt_out)
    preload_tcmalloc()
    assert os.environ["LD_PRELOAD"] == preload
