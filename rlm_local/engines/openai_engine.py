"""An `Engine` over a remote OpenAI-compatible server: `vllm serve` (one or many), SGLang, or any chat endpoint.

Why streaming chat completions over pooled httpx connections: the stream gives time to first token (the scheduler's
metrics), a server that dies mid-answer is noticed at once, and closing the stream is how a request is aborted (vLLM
aborts a request whose client disconnected). Connection failures and 5xx answers are retried with exponential
backoff; 4xx answers are not (the request itself is wrong). Every failure becomes an `EngineError` that names the
server.

Token counts: with a local tokenizer (the model's folder, or `extra_engine_args.tokenizer`) `count_tokens` applies
the chat template exactly as the server does; without one it estimates chars/4 plus a few tokens per message. The
counts reported in `Generation` always come from the server's `usage`; `cached_tokens` is
`usage.prompt_tokens_details.cached_tokens`, which vLLM sends only when started with `--enable-prompt-tokens-details`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx

from rlm_local.config import EngineConfig
from rlm_local.engines.base import Engine, Generation, GenerationRequest
from rlm_local.errors import ConfigError, EngineError, PromptTooLong

log = logging.getLogger(__name__)

DEFAULT_MAX_NUM_SEQS = 64  # what the scheduler may keep in flight on a server that does not say
CHARS_PER_TOKEN = 4
_RETRYABLE = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.ReadError,
    httpx.WriteError,
    httpx.RemoteProtocolError,
    httpx.PoolTimeout,
)
_CONTEXT_LIMIT = re.compile(r"maximum context length is (\d+) tokens.*?contains (?:at least )?(\d+) input tokens", re.S)
_CONTEXT_LIMIT_CHARS = re.compile(r"maximum context length is (\d+) tokens", re.S)


class _Retry(Exception):
    """A failure worth another attempt (connection trouble, 5xx)."""


class OpenAIEngine(Engine):
    """Chat completions on one server. Priority goes in the request body (vLLM's `priority` field) when enabled."""

    name = "openai"

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        max_model_len: int = 0,
        max_num_seqs: int = DEFAULT_MAX_NUM_SEQS,
        timeout_s: float = 600.0,
        connect_timeout_s: float = 10.0,
        max_retries: int = 3,
        backoff_s: float = 0.5,
        send_priority: bool = True,
        tokenizer: Any | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        name: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.max_model_len = max_model_len
        self.max_num_seqs = max_num_seqs
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.send_priority = send_priority
        self.timeout_s = timeout_s
        self.tokenizer = tokenizer
        if name:
            self.name = name
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s),
            limits=httpx.Limits(max_connections=max(64, 4 * max_num_seqs), max_keepalive_connections=max_num_seqs),
            transport=transport,
        )
        self._runs: dict[str, set[asyncio.Task[Generation]]] = defaultdict(set)
        self._aborted: set[asyncio.Task[Generation]] = set()

    # ---- start ---------------------------------------------------------------------------------------------------
    @classmethod
    async def start(cls, config: EngineConfig, *, transport: httpx.AsyncBaseTransport | None = None) -> OpenAIEngine:
        """Connect to `config.base_url`, learn the served model (and its window, from vLLM) from `GET /models`."""
        if not config.base_url:
            raise ConfigError("a remote engine (backend 'openai') needs base_url, e.g. http://127.0.0.1:8000/v1")
        extra = dict(config.extra_engine_args)
        engine = cls(
            config.base_url,
            config.served_model_name or "",
            api_key=config.api_key,
            max_model_len=config.max_model_len or 0,
            max_num_seqs=config.max_num_seqs or DEFAULT_MAX_NUM_SEQS,
            timeout_s=config.request_timeout_s,
            max_retries=int(extra.get("max_retries", 3)),
            backoff_s=float(extra.get("backoff_s", 0.5)),
            send_priority=bool(extra.get("send_priority", config.scheduling_policy == "priority")),
            tokenizer=load_tokenizer(extra.get("tokenizer") or config.model),
            transport=transport,
        )
        try:
            models = await engine.list_models()
        except EngineError:
            await engine.close()
            raise
        card = next((m for m in models if m.get("id") == engine.model), None)
        if card is None:
            if engine.model:
                await engine.close()
                known = ", ".join(str(m.get("id")) for m in models) or "none"
                raise ConfigError(
                    f"the server at {engine.base_url} does not serve {engine.model!r} (it serves {known})"
                )
            if not models:
                await engine.close()
                raise EngineError(f"the server at {engine.base_url} serves no model")
            card = models[0]
            engine.model = str(card.get("id"))
        if not engine.max_model_len and isinstance(card.get("max_model_len"), int):
            engine.max_model_len = card["max_model_len"]
        return engine

    async def list_models(self) -> list[dict[str, Any]]:
        """`GET /models`, with the same retries as a request."""

        async def once() -> list[dict[str, Any]]:
            response = await self._client.get("/models")
            if response.status_code >= 500:
                raise _Retry(f"HTTP {response.status_code}: {_snippet(response.text)}")
            if response.status_code >= 400:
                raise EngineError(f"the server at {self.base_url} refused GET /models: {_error_message(response)}")
            return list(response.json().get("data") or [])

        return await self._with_retries(once)

    # ---- Engine --------------------------------------------------------------------------------------------------
    def count_tokens(self, messages: list[dict[str, str]]) -> int:
        """Exact with a local tokenizer (same chat template as the server), else chars/4 + 4 per message."""
        if self.tokenizer is not None:
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            return len(self.tokenizer.encode(text, add_special_tokens=False))
        return estimate_tokens(messages)

    async def generate(self, request: GenerationRequest) -> Generation:
        task = asyncio.create_task(self._with_retries(lambda: self._complete_once(request)))
        self._runs[request.run_id].add(task)
        try:
            return await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if task in self._aborted and not (current and current.cancelling()):
                raise EngineError(f"the request of run {request.run_id} was aborted (abort_run)") from None
            raise
        finally:
            self._aborted.discard(task)
            tasks = self._runs.get(request.run_id)
            if tasks is not None:
                tasks.discard(task)
                if not tasks:
                    del self._runs[request.run_id]

    async def abort_run(self, run_id: str) -> int:
        """Close the run's open streams; the server aborts a request whose client went away."""
        tasks = list(self._runs.pop(run_id, ()))
        for task in tasks:
            self._aborted.add(task)
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        return len(tasks)

    def in_flight(self) -> int:
        return sum(len(tasks) for tasks in self._runs.values())

    def requests_of(self, run_id: str) -> int:
        return len(self._runs.get(run_id, ()))

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "base_url": self.base_url,
            "in_flight": self.in_flight(),
            "max_num_seqs": self.max_num_seqs,
            "token_counts": "tokenizer" if self.tokenizer is not None else "estimate (chars/4)",
        }

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._client.aclose()

    async def server_load(self) -> dict[str, float] | None:
        """Live figures from a vLLM server's Prometheus endpoint (running, waiting, prefix-cache hits); None when
        the server has none."""
        root = self.base_url.removesuffix("/v1")
        try:
            response = await self._client.get(f"{root}/metrics", timeout=5.0)
        except httpx.HTTPError:
            return None
        if response.status_code != 200:
            return None
        return parse_vllm_metrics(response.text)

    # ---- one request ---------------------------------------------------------------------------------------------
    def _body(self, request: GenerationRequest) -> dict[str, Any]:
        options = request.options
        body: dict[str, Any] = {
            "model": self.model,
            "messages": request.messages,
            "max_tokens": options.max_tokens,
            "temperature": options.temperature,
            "top_p": options.top_p,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if options.seed is not None:
            body["seed"] = options.seed
        if options.stop:
            body["stop"] = options.stop
        if self.send_priority and request.priority:
            body["priority"] = request.priority
        if request.cache_salt:
            body["cache_salt"] = request.cache_salt  # vLLM's server reads it; others ignore it
        return body

    async def _complete_once(self, request: GenerationRequest) -> Generation:
        body = self._body(request)
        started = time.monotonic()
        first_token_s: float | None = None
        parts: list[str] = []
        finish_reason: str | None = None
        usage: dict[str, Any] = {}
        async with self._client.stream("POST", "/chat/completions", json=body) as response:
            if response.status_code >= 400:
                await response.aread()
                self._raise_for_status(response, request, "priority" in body)
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                if chunk.get("error"):
                    raise EngineError(f"the server at {self.base_url} failed on a request: {_message(chunk['error'])}")
                for choice in chunk.get("choices") or ():
                    text = (choice.get("delta") or {}).get("content")
                    if text:
                        if first_token_s is None:
                            first_token_s = time.monotonic() - started
                        parts.append(text)
                    finish_reason = choice.get("finish_reason") or finish_reason
                if chunk.get("usage"):
                    usage = chunk["usage"]
        details = usage.get("prompt_tokens_details") or {}
        return Generation(
            text="".join(parts),
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            cached_tokens=int(details.get("cached_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            finish_reason=finish_reason,
            latency_s=time.monotonic() - started,
            first_token_s=first_token_s,
            engine=self.name,
        )

    def _raise_for_status(self, response: httpx.Response, request: GenerationRequest, sent_priority: bool) -> None:
        code, message = response.status_code, _error_message(response)
        if code >= 500:
            raise _Retry(f"HTTP {code}: {message}")
        if sent_priority and code == 400 and "priority" in message.lower():
            log.warning("the server at %s does not schedule by priority; sending none from now on", self.base_url)
            self.send_priority = False
            raise _Retry("retrying without priority")
        match = _CONTEXT_LIMIT.search(message)
        if match:
            raise PromptTooLong(int(match.group(2)), int(match.group(1)), self.model)
        match = _CONTEXT_LIMIT_CHARS.search(message)
        if match:
            raise PromptTooLong(self.count_tokens(request.messages), int(match.group(1)), self.model)
        raise EngineError(f"the server at {self.base_url} refused the request (HTTP {code}): {message}")

    async def _with_retries(self, attempt: Any) -> Any:
        """Retry connection failures and 5xx with exponential backoff; give up with a clear `EngineError`."""
        tries = 0
        while True:
            tries += 1
            try:
                return await attempt()
            except httpx.ReadTimeout as exc:
                raise EngineError(
                    f"the server at {self.base_url} is not answering: no reply within {self.timeout_s:g} s"
                ) from exc
            except (_Retry, *_RETRYABLE) as exc:
                reason = _describe(exc)
                if tries > self.max_retries:
                    raise EngineError(
                        f"the server at {self.base_url} went away / is not answering: {reason} "
                        f"(gave up after {tries} attempts)"
                    ) from exc
                delay = 0.0 if str(exc) == "retrying without priority" else self.backoff_s * 2 ** (tries - 1)
                log.info("%s: %s; retrying in %.1f s", self.base_url, reason, delay)
                await asyncio.sleep(delay)
            except httpx.HTTPError as exc:
                raise EngineError(f"the server at {self.base_url} failed: {_describe(exc)}") from exc


def estimate_tokens(messages: list[dict[str, str]]) -> int:
    """chars/4 plus 4 tokens of template per message (used without a local tokenizer)."""
    return sum(len(m.get("content") or "") // CHARS_PER_TOKEN + 4 for m in messages) + 2


def load_tokenizer(spec: str | None) -> Any | None:
    """A Hugging Face tokenizer from a local folder or a prepared catalog model; None (estimates) otherwise."""
    if not spec:
        return None
    path = Path(spec).expanduser()
    if not path.is_dir():
        try:
            from rlm_local.models import resolve_model

            path = Path(resolve_model(spec, prepare=False))
        except Exception:
            return None
        if not path.is_dir():
            return None  # a Hugging Face id: loading it would need the hub
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(path))
    except Exception as exc:
        log.warning("no tokenizer from %s (%s); token counts are estimates", path, exc)
        return None


def parse_vllm_metrics(text: str) -> dict[str, float]:
    """Sum the few vLLM Prometheus series the engines table shows."""
    wanted = {
        "vllm:num_requests_running": "running",
        "vllm:num_requests_waiting": "waiting",
        "vllm:prefix_cache_hits_total": "prefix_hits",
        "vllm:prefix_cache_queries_total": "prefix_queries",
        "vllm:generation_tokens_total": "generation_tokens",
    }
    figures: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in wanted:
            with contextlib.suppress(ValueError):
                figures[wanted[name]] = figures.get(wanted[name], 0.0) + float(line.rsplit(" ", 1)[1])
    return figures


def _error_message(response: httpx.Response) -> str:
    try:
        payload = response.json()
    except ValueError:
        return _snippet(response.text)
    if isinstance(payload, dict):
        return _message(payload.get("error", payload.get("message", payload)))
    return _snippet(str(payload))


def _message(error: Any) -> str:
    if isinstance(error, dict):
        return _snippet(str(error.get("message") or error))
    return _snippet(str(error))


def _snippet(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
