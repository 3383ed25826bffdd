"""A deployment: models, engines, replicas, memory split and scheduler limits in one TOML file.

Why one file: which model answers root turns and which answers sub-calls, how many replicas of each, how a GPU's
memory is split between two in-process engines, and how much each engine may hold at once belong together, and the
`rlm-local engines` table shows exactly that file next to live figures. See docs/scheduling.md and
docs/examples/*.toml.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from rlm_local.config import EngineConfig, RLMConfig
from rlm_local.engines.base import Engine
from rlm_local.errors import ConfigError, EngineError
from rlm_local.models import DEFAULT_MODEL
from rlm_local.scheduler import LimitOverrides, Scheduler, is_root_class
from rlm_local.scheduler.metrics import summarize

log = logging.getLogger(__name__)

DEFAULT_PATHS = (Path("rlm-local.toml"), Path("~/.config/rlm-local/deployment.toml"))
MAX_GPU_SHARE = 0.95  # in-process engines sharing a GPU may claim at most this fraction of it together


class ModelSpec(BaseModel):
    """A model by name, so that several engines (or a root and a sub engine) can refer to it."""

    model_config = ConfigDict(extra="forbid")

    model: str  # catalog alias, local Hugging Face folder, or Hugging Face id
    served_model_name: str | None = None  # remote servers: the name they serve it under
    max_model_len: int | None = None
    dtype: str = "auto"


class EngineSpec(EngineConfig):
    """A group of identical replicas: in-process vLLM engines (`replicas`), or remote servers (one per URL).

    Every `EngineConfig` field applies to each replica; `model` may also name a [models] entry, which fills what the
    engine leaves unset. What only a deployment has is added here.
    """

    name: str
    replicas: int = Field(1, ge=1)
    urls: list[str] = Field(default_factory=list)  # backend 'openai': e.g. ["http://10.0.0.5:8000/v1"]
    gpus: list[str] | None = None  # backend 'vllm': CUDA_VISIBLE_DEVICES per replica, e.g. ["0", "1"]
    api_key_env: str | None = None  # read the key from this environment variable instead of the file
    max_in_flight: int | None = None  # scheduler limits for these replicas (override [scheduler])
    reserved_for_roots: int | None = None
    max_prompt_tokens: int | None = None

    @classmethod
    def of(cls, config: EngineConfig, name: str) -> EngineSpec:
        """One engine of an `RLMConfig` as a one-replica spec; a remote engine's base_url becomes its one URL."""
        remote = config.backend == "openai"
        if remote and not config.base_url:
            raise ConfigError(
                f"the {name} engine is remote (backend 'openai') and needs base_url, e.g. http://127.0.0.1:8000/v1"
            )
        urls = [config.base_url] if remote and config.base_url else []
        return cls(name=name, urls=urls, **config.model_dump(exclude={"base_url"}))

    @model_validator(mode="after")
    def _check(self) -> EngineSpec:
        if self.base_url:
            raise ValueError(f"engine {self.name!r}: list remote servers in urls = [...], not base_url")
        if self.backend == "openai":
            if not self.urls:
                raise ValueError(f"engine {self.name!r}: a remote engine needs urls = ['http://HOST:PORT/v1', ...]")
            if self.gpus:
                raise ValueError(f"engine {self.name!r}: gpus applies to in-process engines only")
        elif self.urls:
            raise ValueError(f"engine {self.name!r}: urls applies to backend 'openai' only")
        if self.gpus is not None and len(self.gpus) != self.replicas:
            raise ValueError(f"engine {self.name!r}: {len(self.gpus)} gpus listed for {self.replicas} replicas")
        return self

    @property
    def replica_count(self) -> int:
        return len(self.urls) if self.backend == "openai" else self.replicas

    def replica_names(self) -> list[str]:
        n = self.replica_count
        return [self.name] if n == 1 else [f"{self.name}#{i}" for i in range(1, n + 1)]


class SchedulerSpec(BaseModel):
    """Admission limits for every engine (per-engine settings win); None derives them from the engine."""

    model_config = ConfigDict(extra="forbid")

    max_in_flight: int | None = Field(None, ge=1)
    reserved_for_roots: int | None = Field(None, ge=0)
    max_prompt_tokens: int | None = Field(None, ge=1)
    kv_fraction: float = Field(1.0, gt=0)
    metrics_port: int | None = Field(None, ge=0, le=65535)  # Prometheus exposition on 127.0.0.1


class Roles(BaseModel):
    model_config = ConfigDict(extra="forbid")

    root: str
    sub: str | None = None  # None: the root engines answer sub-calls too


class Deployment(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: dict[str, ModelSpec] = Field(default_factory=dict)
    engines: list[EngineSpec] = Field(min_length=1)
    roles: Roles | None = None  # None: the first engine is root; a second one, if any, answers sub-calls
    scheduler: SchedulerSpec = Field(default_factory=SchedulerSpec)

    @model_validator(mode="after")
    def _check(self) -> Deployment:
        names = [e.name for e in self.engines]
        if len(set(names)) != len(names):
            raise ValueError(f"engine names must be unique: {names}")
        roles = self.resolved_roles()
        for role, name in (("root", roles.root), ("sub", roles.sub)):
            if name not in names:
                raise ValueError(f"roles.{role} = {name!r} names no engine (engines: {', '.join(names)})")
        return self

    def resolved_roles(self) -> Roles:
        if self.roles is not None:
            return Roles(root=self.roles.root, sub=self.roles.sub or self.roles.root)
        first = self.engines[0].name
        return Roles(root=first, sub=self.engines[1].name if len(self.engines) > 1 else first)

    def engine(self, name: str) -> EngineSpec:
        return next(e for e in self.engines if e.name == name)

    def model_of(self, spec: EngineSpec) -> ModelSpec:
        if spec.model and spec.model in self.models:
            return self.models[spec.model]
        return ModelSpec(model=spec.model or DEFAULT_MODEL)

    def roles_of(self, name: str) -> list[str]:
        roles = self.resolved_roles()
        return [role for role, engine in (("root", roles.root), ("sub", roles.sub)) if engine == name]

    def replica_configs(self, spec: EngineSpec) -> list[EngineConfig]:
        """One `EngineConfig` per replica (the lead's engines start from these): the spec's own fields, with its
        [models] entry (when `model` names one) filling what the spec leaves unset."""
        fields = spec.model_dump(include=set(EngineConfig.model_fields) - {"base_url"})
        named = self.models.get(spec.model) if spec.model else None
        if named is not None:
            fields["model"] = named.model
            for key in ("served_model_name", "max_model_len", "dtype"):
                if key not in spec.model_fields_set or fields[key] is None:
                    fields[key] = getattr(named, key)
        if spec.api_key_env:
            fields["api_key"] = os.environ.get(spec.api_key_env)
        if spec.backend == "openai":
            return [EngineConfig(**fields, base_url=url) for url in spec.urls]
        return [EngineConfig(**fields) for _ in range(spec.replicas)]

    def limit_overrides(self) -> dict[str, LimitOverrides]:
        """Scheduler limits per replica name."""
        s = self.scheduler
        limits: dict[str, LimitOverrides] = {}
        for spec in self.engines:
            reserved = spec.reserved_for_roots
            override = LimitOverrides(
                max_in_flight=spec.max_in_flight or s.max_in_flight,
                max_prompt_tokens=spec.max_prompt_tokens or s.max_prompt_tokens,
                reserved_for_roots=reserved if reserved is not None else s.reserved_for_roots,
                kv_fraction=s.kv_fraction,
            )
            for name in spec.replica_names():
                limits[name] = override
        return limits

    def gpu_shares(self) -> dict[str, tuple[float, int]]:
        """GPU memory claimed by in-process engines, and how many claim it, per GPU set ('default': the visible
        GPUs, shared)."""
        shares: dict[str, tuple[float, int]] = {}
        for spec in self.engines:
            if spec.backend != "vllm":
                continue
            for gpu in spec.gpus or ["default"] * spec.replicas:
                share, engines = shares.get(gpu, (0.0, 0))
                shares[gpu] = (share + spec.gpu_memory_utilization, engines + 1)
        return shares


def parse_deployment(data: dict[str, Any], source: str = "deployment") -> Deployment:
    try:
        return Deployment.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{source} is not a valid deployment: {problems}") from None


def load_deployment(path: str | Path) -> Deployment:
    """Read and validate a deployment TOML file; problems become a `ConfigError` naming the file and the field."""
    path = Path(path).expanduser()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"deployment file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"deployment file {path} is not valid TOML: {exc}") from None
    return parse_deployment(data, str(path))


def deployment_of(config: RLMConfig) -> Deployment:
    """The engines a run config asks for: its deployment file, else its root engine (and sub engine, when it has
    one) as a deployment of one (or two) engines, so that every engine starts through `build_engines`."""
    if config.deployment is not None:
        return load_deployment(config.deployment)
    engines = [EngineSpec.of(config.root, "root")]
    if config.sub is not None:
        engines.append(EngineSpec.of(config.sub, "sub"))
    return Deployment(engines=engines, roles=Roles(root="root", sub="sub" if config.sub is not None else None))


def default_deployment() -> Deployment:
    """One in-process engine with the default model answering root turns and sub-calls."""
    return Deployment(engines=[EngineSpec(name="local")])


def check_memory_split(deployment: Deployment) -> None:
    """On a GPU, in-process engines sharing it must split its memory explicitly (vLLM's gpu_memory_utilization
    is a share of the whole GPU per engine, so two engines at the default 0.85 cannot both start)."""
    for gpu, (share, engines) in deployment.gpu_shares().items():
        if engines > 1 and share > MAX_GPU_SHARE:
            where = "the visible GPU(s)" if gpu == "default" else f"GPU {gpu}"
            raise ConfigError(
                f"in-process engines on {where} claim {share:.2f} of its memory together (at most {MAX_GPU_SHARE}): "
                "set gpu_memory_utilization on each engine, e.g. 0.55 for the root model and 0.30 for the sub-model"
            )


# ---- starting ----------------------------------------------------------------------------------------------------


async def build_engines(deployment: Deployment, *, log_file: Path | None = None) -> Scheduler:
    """Start every replica and return a scheduler owning them: hand `scheduler.root_engine` and
    `scheduler.sub_engine` to the run loop, and `await scheduler.close()` at the end. In-process engines log to
    `log_file` (None: the terminal).

    In-process engines start one after the other (each measures free memory when it starts); remote ones are probed
    together. A failure closes what was started and raises.
    """
    from rlm_local.hardware import has_nvidia_gpu

    if has_nvidia_gpu():
        check_memory_split(deployment)
    started: dict[str, list[Engine]] = {}
    try:
        for spec in deployment.engines:
            if not deployment.roles_of(spec.name):
                log.warning("engine %r has no role (roles.root / roles.sub): not started", spec.name)
                continue
            configs = deployment.replica_configs(spec)
            names = spec.replica_names()
            if spec.backend == "openai":
                engines = await asyncio.gather(*(_start_remote(c) for c in configs), return_exceptions=True)
                failures = [e for e in engines if isinstance(e, BaseException)]
                started[spec.name] = [e for e in engines if isinstance(e, Engine)]
                if failures:
                    raise failures[0]
            else:
                started[spec.name] = []
                for i, config in enumerate(configs):
                    gpu = spec.gpus[i] if spec.gpus else None
                    config.log_file = config.log_file or log_file
                    started[spec.name].append(await _start_in_process(config, gpu))
            for engine, name in zip(started[spec.name], names, strict=True):
                engine.name = name
    except BaseException:
        for engines in started.values():
            for engine in engines:
                try:
                    await engine.close()
                except Exception as exc:  # the start's own error is the one raised
                    log.warning("closing engine %s after a failed start: %s", engine.name, exc)
        raise
    roles = deployment.resolved_roles()
    scheduler = Scheduler(
        started[roles.root],
        started[roles.sub or roles.root],
        limits=deployment.limit_overrides(),
        owns_engines=True,
    )
    if deployment.scheduler.metrics_port is not None:
        from rlm_local.scheduler.metrics import start_metrics_server

        scheduler.metrics_server = start_metrics_server(deployment.scheduler.metrics_port)
    return scheduler


async def _start_remote(config: EngineConfig) -> Engine:
    from rlm_local.engines.openai_engine import OpenAIEngine

    return await OpenAIEngine.start(config)


async def _start_in_process(config: EngineConfig, gpu: str | None) -> Engine:
    """Start a `VLLMEngine`; its worker processes inherit CUDA_VISIBLE_DEVICES set here, so each replica gets its
    own GPU (the engine sets its own KV-cache size the same way while it starts)."""
    from rlm_local.engines.vllm_engine import VLLMEngine

    saved = os.environ.get("CUDA_VISIBLE_DEVICES")
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    try:
        return await VLLMEngine.start(config)
    finally:
        if saved is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = saved


# ---- visibility --------------------------------------------------------------------------------------------------


async def probe_remote(deployment: Deployment) -> dict[str, dict[str, Any]]:
    """For each remote replica: whether it answers, what it serves, and its live vLLM figures (when it has any)."""
    from rlm_local.engines.openai_engine import OpenAIEngine

    async def probe(name: str, config: EngineConfig) -> tuple[str, dict[str, Any]]:
        quick = {"request_timeout_s": 5.0, "extra_engine_args": {**config.extra_engine_args, "max_retries": 0}}
        engine = OpenAIEngine(config.model_copy(update=quick))
        try:
            models = await engine.list_models()
            load = await engine.server_load()
            return name, {"answering": True, "models": [m.get("id") for m in models], **(load or {})}
        except EngineError as exc:
            return name, {"answering": False, "error": str(exc)}
        finally:
            await engine.close()

    jobs = [
        probe(name, config)
        for spec in deployment.engines
        if spec.backend == "openai"
        for name, config in zip(spec.replica_names(), deployment.replica_configs(spec), strict=True)
    ]
    return dict(await asyncio.gather(*jobs))


def render_engines(
    deployment: Deployment,
    scheduler: Scheduler | None = None,
    remote: dict[str, dict[str, Any]] | None = None,
) -> Any:
    """A rich table, one row per replica: what is configured, and live figures from the scheduler (engines running
    in this process) or from remote servers' own metrics (`probe_remote`)."""
    from rich.table import Table

    from rlm_local.hardware import has_nvidia_gpu

    on_gpu = has_nvidia_gpu()
    table = Table(title="rlm-local engines", header_style="bold", show_lines=True)
    for column in ("engine", "role", "model", "where", "configured", "live"):
        table.add_column(column, overflow="fold")
    slots = {slot.name: slot for slot in scheduler.slots} if scheduler else {}
    samples = scheduler.metrics.samples() if scheduler else []
    for spec in deployment.engines:
        model = deployment.model_of(spec).model
        role = "+".join(deployment.roles_of(spec.name)) or "(unused)"
        for i, (name, config) in enumerate(zip(spec.replica_names(), deployment.replica_configs(spec), strict=True)):
            if spec.backend == "openai":
                where, memory = config.base_url or "-", None
            else:
                where = f"in-process, GPU {spec.gpus[i]}" if spec.gpus else "in-process"
                memory = (
                    f"GPU share {config.gpu_memory_utilization:g}" if on_gpu else f"KV {config.cpu_kv_cache_gib:g} GiB"
                )
            slot = slots.get(name)
            window = (slot.engine.max_model_len if slot else None) or config.max_model_len
            configured = [f"window {window or 'auto'}", memory]
            if slot is not None:
                lim = slot.limits
                configured.append(f"in flight <= {lim.max_in_flight} ({lim.reserved_for_roots} for roots)")
                configured.append(f"prompt tokens <= {lim.max_prompt_tokens:,}")
                live = _scheduler_live(slot, [s for s in samples if s.engine == name])
            else:
                configured.append(f"{config.max_num_seqs or 'auto'} seqs")
                live = _remote_live(remote.get(name) if remote else None, spec.backend)
            text = "\n".join(line for line in configured if line)
            table.add_row(name, role, model, where, text, live)
    return table


def _scheduler_live(slot: Any, samples: list[Any]) -> str:
    stats = summarize(samples, slot.in_flight, slot.queued)
    root = summarize([s for s in samples if is_root_class(s.priority)]).queue_wait_p99_s
    sub = summarize([s for s in samples if not is_root_class(s.priority)]).queue_wait_p99_s
    return "\n".join(
        (
            f"{stats.in_flight} in flight, {stats.queued} queued",
            f"{stats.requests} done, {stats.tokens_per_s:.1f} tok/s",
            f"prefix hit {_pct(stats.prefix_hit_rate)}",
            f"p99 wait root {_secs(root)}, sub {_secs(sub)}",
        )
    )


def _remote_live(figures: dict[str, Any] | None, backend: str) -> str:
    if backend != "openai":
        return "not started (starts with a run)"
    if figures is None:
        return "not probed"
    if not figures.get("answering"):
        return "DOWN"
    lines = ["answering"]
    if "running" in figures or "waiting" in figures:
        lines.append(f"{figures.get('running', 0):g} running, {figures.get('waiting', 0):g} waiting")
    queries = figures.get("prefix_queries") or 0
    if queries and "prefix_hits" in figures:
        lines.append(f"prefix hit {_pct(figures['prefix_hits'] / queries)}")
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}s"


def find_deployment(path: Path | None) -> tuple[Deployment, str]:
    """The deployment a command uses: the given file, else ./rlm-local.toml or ~/.config/rlm-local/deployment.toml,
    else one local engine with the default model."""
    if path is not None:
        return load_deployment(path), str(path)
    for candidate in DEFAULT_PATHS:
        candidate = candidate.expanduser()
        if candidate.is_file():
            return load_deployment(candidate), str(candidate)
    return default_deployment(), "(default: one local engine)"


def engines_command(path: Path | None) -> int:
    """`rlm-local engines [--config FILE]`: the configured engines, probing remote servers for live figures."""
    from rich.console import Console

    deployment, source = find_deployment(path)
    remote = asyncio.run(probe_remote(deployment)) if any(e.backend == "openai" for e in deployment.engines) else {}
    console = Console()
    console.print(f"deployment: {source}")
    console.print(render_engines(deployment, None, remote))
    down = [name for name, figures in remote.items() if not figures.get("answering")]
    for name in down:
        console.print(f"[red]{name}[/red]: {remote[name].get('error')}")
    return 1 if down else 0
