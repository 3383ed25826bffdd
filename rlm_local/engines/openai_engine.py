"""An `Engine` over a remote OpenAI-compatible server (`vllm serve`, SGLang, any chat endpoint), on the `openai` SDK.

The SDK does the transport (pooled connections, timeouts, SSE, retries with backoff). Added here: vLLM's `priority`
and `cache_salt`, time to first token, aborting a run's requests (a closed stream makes vLLM abort). Token counts
come from the server's `usage`; `count_tokens` uses the model's tokenizer if any, else chars/4.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from typing import Any

import httpx
import openai

from rlm_local.config import EngineConfig
from rlm_local.engines.base import Engine, Generation, GenerationRequest
from rlm_local.engines.openai_errors import as_engine_error, server_message
from rlm_local.engines.token_count import estimate_tokens, load_tokenizer, reply_room
from rlm_local.engines.vllm_metrics import parse_vllm_metrics
from rlm_local.errors import ConfigError, EngineError

log = logging.getLogger(__name__)

DEFAULT_MAX_NUM_SEQS = 64  # what the scheduler may keep in flight on a server that does not say
ABORTED = "abort_run"  # the cancel message of a request its run aborted


class OpenAIEngine(Engine):
    """Streaming chat completions on one server; priority goes in the body (vLLM's `priority`) when enabled."""

    name = "openai"

    def __init__(self, config: EngineConfig, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        """A client for `config.base_url`; extra_engine_args may set max_retries, send_priority and tokenizer."""
        if not config.base_url:
            raise ConfigError("a remote engine (backend 'openai') needs base_url, e.g. http://127.0.0.1:8000/v1")
        extra = config.extra_engine_args
        self.base_url, self.model = config.base_url.rstrip("/"), config.served_model_name or ""
        self.max_model_len, self.timeout_s = config.max_model_len or 0, config.request_timeout_s
        self.max_num_seqs = config.max_num_seqs or DEFAULT_MAX_NUM_SEQS
        self.max_retries = int(extra.get("max_retries", 3))
        self.send_priority = bool(extra.get("send_priority", config.scheduling_policy == "priority"))
        self.tokenizer: Any = None
        limits = httpx.Limits(max_connections=4 * self.max_num_seqs, max_keepalive_connections=self.max_num_seqs)
        self._http = httpx.AsyncClient(limits=limits, transport=transport)
        self.client = openai.AsyncOpenAI(
            base_url=self.base_url,
            api_key=config.api_key or "none",  # servers started without --api-key accept any
            timeout=httpx.Timeout(self.timeout_s, connect=10.0),
            max_retries=self.max_retries,
            http_client=self._http,
        )
        self._runs: dict[str, set[asyncio.Task[Generation]]] = defaultdict(set)

    @classmethod
    async def start(cls, config: EngineConfig, *, transport: httpx.AsyncBaseTransport | None = None) -> OpenAIEngine:
        """Connect and learn the served model (and, from vLLM, its window and folder) and its tokenizer."""
        engine = cls(config, transport=transport)
        try:
            cards = await engine.list_models()
            card = next((c for c in cards if not engine.model or c.get("id") == engine.model), None)
            if card is None:
                served = ", ".join(str(c.get("id")) for c in cards) or "no model"
                raise ConfigError(f"the server at {engine.base_url} does not serve {engine.model!r} ({served})")
        except Exception:
            await engine.close()
            raise
        engine.model, engine.source = str(card["id"]), str(card.get("root") or "")  # root: the folder vLLM loaded
        engine.max_model_len = engine.max_model_len or int(card.get("max_model_len") or 0)
        for spec in (config.extra_engine_args.get("tokenizer") or config.model, engine.source):  # the first that loads
            engine.tokenizer = engine.tokenizer or await asyncio.to_thread(load_tokenizer, spec)
        return engine

    async def list_models(self) -> list[dict[str, Any]]:
        """`GET /models`: the model cards the server serves (vLLM's carry `max_model_len`)."""
        try:
            return [card.model_dump() async for card in self.client.models.list()]
        except (openai.APIError, httpx.HTTPError) as exc:
            raise as_engine_error(exc, self, []) from exc

    # ---- Engine --------------------------------------------------------------------------------------------------
    def count_tokens(self, messages: list[dict[str, str]]) -> int:
        if self.tokenizer is None:
            return estimate_tokens(messages)
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    async def generate(self, request: GenerationRequest) -> Generation:
        task = asyncio.create_task(self._generate(request))
        self._runs[request.run_id].add(task)
        try:
            return await task
        except asyncio.CancelledError as exc:
            current = asyncio.current_task()
            if exc.args == (ABORTED,) and not (current and current.cancelling()):
                raise EngineError(f"the request of run {request.run_id} was aborted (abort_run)") from None
            raise
        finally:
            self._runs[request.run_id].discard(task)
            if not self._runs[request.run_id]:
                del self._runs[request.run_id]

    async def abort_run(self, run_id: str) -> int:
        """Cancel the run's requests: their streams close, and the server aborts a request whose client went away."""
        tasks = list(self._runs.pop(run_id, ()))
        for task in tasks:
            task.cancel(ABORTED)
        if tasks:
            await asyncio.wait(tasks)
        return len(tasks)

    def in_flight(self) -> int:
        return sum(len(tasks) for tasks in self._runs.values())

    def requests_of(self, run_id: str) -> int:
        return len(self._runs.get(run_id, ()))

    def describe(self) -> dict[str, Any]:
        counts = "tokenizer" if self.tokenizer is not None else "estimate (chars/4)"
        extra = {"base_url": self.base_url, "in_flight": self.in_flight(), "max_num_seqs": self.max_num_seqs}
        return {**super().describe(), **extra, "token_counts": counts}

    async def close(self) -> None:
        try:
            await self.client.close()
        except Exception as exc:
            log.warning("closing the client of %s: %s", self.base_url, exc)

    async def server_load(self) -> dict[str, float] | None:
        """Running, waiting and prefix-cache figures from a vLLM server's Prometheus endpoint; None without one."""
        try:
            response = await self._http.get(f"{self.base_url.removesuffix('/v1')}/metrics", timeout=5.0)
        except httpx.HTTPError:
            return None
        return parse_vllm_metrics(response.text) if response.status_code == 200 else None

    # ---- one request ---------------------------------------------------------------------------------------------
    async def _generate(self, request: GenerationRequest) -> Generation:
        try:
            try:
                return await self._stream(request)
            except openai.BadRequestError as exc:
                if not (self.send_priority and request.priority and "priority" in server_message(exc).lower()):
                    raise
                log.warning("the server at %s does not schedule by priority; sending none from now on", self.base_url)
                self.send_priority = False
                return await self._stream(request)
        except (openai.APIError, httpx.HTTPError) as exc:
            raise as_engine_error(exc, self, request.messages) from exc

    async def _stream(self, request: GenerationRequest) -> Generation:
        options, omit = request.options, openai.omit
        extra = {"priority": request.priority} if self.send_priority and request.priority else {}
        extra |= {"cache_salt": request.cache_salt} if request.cache_salt else {}  # vLLM reads it; others ignore it
        max_tokens = reply_room(request.messages, options.max_tokens, self.max_model_len, self.count_tokens, self.model)
        started, first_token_s, parts, finish, usage = time.monotonic(), None, [], None, None
        first_logprobs: dict[str, float] = {}
        stream = await self.client.chat.completions.create(
            model=self.model,
            messages=request.messages,
            max_tokens=max_tokens,
            temperature=options.temperature,
            top_p=options.top_p,
            seed=options.seed if options.seed is not None else omit,
            stop=options.stop or omit,
            logprobs=True if options.top_logprobs else omit,
            top_logprobs=options.top_logprobs or omit,
            stream=True,
            stream_options={"include_usage": True},
            extra_body=extra or None,
        )
        async with stream:
            async for chunk in stream:
                for choice in chunk.choices:
                    if options.top_logprobs and not first_logprobs and choice.logprobs and choice.logprobs.content:
                        first_logprobs = {t.token: t.logprob for t in choice.logprobs.content[0].top_logprobs}
                    if choice.delta.content:
                        first_token_s = first_token_s or time.monotonic() - started
                        parts.append(choice.delta.content)
                    finish = choice.finish_reason or finish
                usage = chunk.usage or usage
        details = usage and usage.prompt_tokens_details
        return Generation(
            text="".join(parts),
            prompt_tokens=usage.prompt_tokens if usage else 0,
            cached_tokens=(details and details.cached_tokens) or 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            finish_reason=finish,
            latency_s=time.monotonic() - started,
            first_token_s=first_token_s,
            engine=self.name,
            first_token_logprobs=first_logprobs,
        )
