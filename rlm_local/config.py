"""Configuration of engines, budgets and runs (pydantic, so a TOML file and the CLI validate the same way)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from rlm_local.hardware import has_nvidia_gpu


class EngineConfig(BaseModel):
    """One served model. Unset limits get defaults for the machine (CPU or GPU) when the engine starts."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = None  # a catalog alias, a local Hugging Face folder, or a Hugging Face id; None: default
    backend: Literal["vllm", "openai"] = "vllm"  # in-process vLLM, or a remote OpenAI-compatible server
    base_url: str | None = None  # remote backend: e.g. http://127.0.0.1:8000/v1
    api_key: str | None = None
    served_model_name: str | None = None  # remote backend: the name the server knows the model by
    max_model_len: int | None = Field(None, ge=16)  # the window in tokens
    max_num_seqs: int | None = Field(None, ge=1)
    max_num_batched_tokens: int | None = Field(None, ge=16)
    gpu_memory_utilization: float = Field(0.85, gt=0, le=1)  # on a GPU: this engine's share of its memory
    dtype: str = "auto"
    cpu_kv_cache_gib: float = Field(4.0, gt=0)  # on CPU: this engine's KV cache (VLLM_CPU_KVCACHE_SPACE)
    enforce_eager: bool | None = None
    enable_prefix_caching: bool = True
    scheduling_policy: Literal["priority", "fcfs"] = "priority"
    seed: int = 0
    request_timeout_s: float = Field(600.0, gt=0)
    extra_engine_args: dict[str, Any] = Field(default_factory=dict)
    log_file: Path | None = None  # in-process vLLM: its logs, and its engine processes' stderr, go here; None: stderr

    def on_gpu(self) -> bool:
        return has_nvidia_gpu()


class Budgets(BaseModel):
    """Limits the host enforces for a whole run, sub-RLMs included (they share their parent's budget)."""

    model_config = ConfigDict(extra="forbid")

    max_iterations: int = Field(12, ge=1)  # root turns; the last one is asked for a final answer
    max_subcalls: int = Field(1000, ge=0)
    max_total_tokens: int = Field(5_000_000, ge=1)  # prompt + completion, every model call of the run
    deadline_s: float = Field(1800.0, gt=0)
    max_depth: int = Field(1, ge=1)  # 1: sub-calls are plain LM calls; 2+: rlm_query starts sub-RLMs
    max_concurrent_sub_rlms: int = Field(4, ge=1)  # sub-RLMs of one run alive at once (each has a container)


class RLMConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    root: EngineConfig = Field(default_factory=EngineConfig)
    sub: EngineConfig | None = None  # None: the root model also answers sub-calls
    deployment: Path | None = None  # a deployment TOML (engines, replicas, scheduler limits) instead of root/sub
    budgets: Budgets = Field(default_factory=Budgets)
    profile: Literal["auto", "general", "small-coder", "small-coder-plus", "small-coder-basic"] = "auto"
    sandbox: Literal["auto", "docker", "process"] = "auto"
    docker_image: str = "rlm-local-sandbox:latest"
    sandbox_pool_size: int = Field(1, ge=0)  # started containers kept ready, so a run or sub-RLM never waits
    sandbox_memory: str = "4g"  # per container, memory and memory+swap alike; the context lives in it
    sandbox_cpus: float = Field(1.0, gt=0)
    sandbox_runtime: str | None = None  # e.g. "runsc" for gVisor, where installed
    cell_timeout_s: float = Field(120.0, gt=0)  # compute time of one cell; time spent in sub-calls is not counted
    output_chars: int = Field(2000, ge=200)  # cell output shown to the root model (head and tail)
    root_max_tokens: int = Field(1024, ge=16)
    sub_max_tokens: int = Field(512, ge=16)
    temperature: float = Field(0.0, ge=0)
    # code: the root model writes the code; structured: one planning sub-call, then a fixed map/filter/reduce program
    # (rlm_local/runtime/structured.py); auto (default): code, and the structured program when the code found no
    # answer or got stuck.
    mode: Literal["code", "structured", "auto"] = "auto"
    samples: int = Field(1, ge=1, le=16)  # K root trajectories per query, answer by majority (runtime/voting.py)
    seed: int | None = 0
    trajectory_path: Path | None = None
    guards: bool = True  # loop guards (rlm_local/runtime/guards.py); False for an ablation without them

    def with_overrides(self, overrides: dict[str, Any]) -> RLMConfig:
        """This config with some fields changed (an eval system's, a batch job's), validated; budget fields may be
        named directly (`max_iterations`, `deadline_s`)."""
        data = self.model_dump()
        for key, value in overrides.items():
            if key in Budgets.model_fields:
                data["budgets"][key] = value
            else:
                data[key] = value
        return RLMConfig.model_validate(data)
