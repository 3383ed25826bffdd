"""The HTTP routes: OpenAI-compatible chat completions and models, jobs, documents, health and metrics."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Request, UploadFile
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict

from rlm_local.server.auth import ApiKeys, Tenant
from rlm_local.server.documents import DocumentStore
from rlm_local.server.jobs import Job, JobManager, documents_context

DISCONNECT_POLL_S = 0.5


class SizeLimit:
    """413 for a request body over the limit: before it is read when its length is declared, and as soon as the
    limit is passed for a chunked body (the route then sees a client that went away). A pure ASGI middleware:
    Starlette's `BaseHTTPMiddleware` would hide a client's disconnect from the routes."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            return await self._refuse(scope, receive, send)
        received, refused, started = 0, False, False

        async def counted_receive() -> dict[str, Any]:
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request" and not refused:
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    refused = True
                    if not started:
                        await self._refuse(scope, receive, send)
                    return {"type": "http.disconnect"}
            return message

        async def tracked_send(message: dict[str, Any]) -> None:
            nonlocal started
            if refused:
                return  # the 413 is the answer; what the route makes of the cut body is not sent
            started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except Exception:
            if not refused:
                raise

    async def _refuse(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        message = {"error": {"message": f"request over {self.max_bytes:,} bytes", "code": 413}}
        await JSONResponse(message, status_code=413)(scope, receive, send)


def _tenant(request: Request) -> Tenant:
    return request.app.state.keys.tenant_of(request)


Caller = Annotated[Tenant, Depends(_tenant)]  # every route but /health needs a key


class Message(BaseModel):
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):  # content parts: the text ones
            return "\n".join(str(p.get("text", "")) for p in self.content if p.get("type") == "text")
        return self.content or ""


class ChatRequest(BaseModel):
    """OpenAI's chat request, plus where the long context is: `context` (text) or `documents` (ids), else the
    conversation before the last user message."""

    model_config = ConfigDict(extra="ignore")  # temperature, max_tokens...: the RLM's budgets rule instead

    model: str
    messages: list[Message]
    stream: bool = False
    context: str | None = None
    documents: list[str] | None = None


class JobRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str
    model: str = "rlm"
    context: str | None = None
    documents: list[str] | None = None


def create_app(jobs: JobManager, documents: DocumentStore, keys: ApiKeys, *, max_request_bytes: int) -> FastAPI:
    app = FastAPI(title="rlm-local", docs_url=None, redoc_url=None)

    app.state.keys = keys

    app.add_middleware(SizeLimit, max_bytes=max_request_bytes)

    @app.exception_handler(HTTPException)
    async def openai_error(request: Request, exc: HTTPException) -> JSONResponse:
        """Errors in OpenAI's shape, which its clients turn into readable exceptions."""
        return JSONResponse({"error": {"message": exc.detail, "code": exc.status_code}}, status_code=exc.status_code)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics")
    async def metrics(_: Caller) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/status")
    async def status(_: Caller) -> dict[str, int]:
        engine = jobs.rlm.root_engine
        return {"jobs_running": jobs.running(), "engine_requests": engine.in_flight() if engine else 0}

    @app.get("/v1/models")
    async def models(_: Caller) -> dict[str, Any]:
        data = [{"id": name, "object": "model", "created": 0, "owned_by": "rlm-local"} for name in jobs.profiles]
        return {"object": "list", "data": data}

    # ---- documents -----------------------------------------------------------------------------------------------
    @app.post("/v1/files")
    async def upload(file: UploadFile, who: Caller) -> dict[str, Any]:
        data = await file.read(documents.max_bytes + 1)
        return await asyncio.to_thread(documents.save, who, file.filename or "document.txt", data)

    @app.get("/v1/files")
    async def list_files(who: Caller) -> dict[str, Any]:
        return {"object": "list", "data": documents.list(who)}

    @app.delete("/v1/files/{doc_id}")
    async def delete_file(doc_id: str, who: Caller) -> dict[str, Any]:
        documents.delete(who, doc_id)
        return {"id": doc_id, "object": "file", "deleted": True}

    def context_of(who: Tenant, text: str | None, doc_ids: list[str] | None) -> tuple[Any, Path | None]:
        if doc_ids:
            return documents_context([documents.path(who, d) for d in doc_ids])
        return text, None

    # ---- jobs ----------------------------------------------------------------------------------------------------
    @app.post("/v1/jobs", status_code=202)
    async def submit(body: JobRequest, who: Caller) -> dict[str, Any]:
        if (body.context is None) == (not body.documents):
            raise HTTPException(400, "give exactly one of 'context' (text) and 'documents' (ids)")
        context, cleanup = context_of(who, body.context, body.documents)
        return jobs.submit(who, body.model, body.query, context, cleanup).public()

    @app.get("/v1/jobs")
    async def list_jobs(who: Caller) -> dict[str, Any]:
        return {"object": "list", "data": [j.public() for j in jobs.list(who)]}

    @app.get("/v1/jobs/{job_id}")
    async def get_job(job_id: str, who: Caller, events: bool = False) -> dict[str, Any]:
        return jobs.get(who, job_id).public(with_events=events)

    @app.get("/v1/jobs/{job_id}/events")
    async def job_events(job_id: str, who: Caller) -> StreamingResponse:
        job = jobs.get(who, job_id)

        async def stream() -> AsyncIterator[str]:
            async for event in jobs.follow(job):
                yield _sse(event)
            yield _sse({"event": "job_end", **job.public()})

        return StreamingResponse(stream(), media_type="text/event-stream")

    @app.post("/v1/jobs/{job_id}/cancel")
    async def cancel_job(job_id: str, who: Caller) -> dict[str, Any]:
        job = jobs.get(who, job_id)
        await jobs.cancel(job)
        return job.public()

    # ---- OpenAI-compatible chat completions ----------------------------------------------------------------------
    @app.post("/v1/chat/completions", response_model=None)
    async def chat(body: ChatRequest, request: Request, who: Caller) -> Any:
        query, text = _query_and_context(body)
        context, cleanup = context_of(who, text, body.documents)
        job = jobs.submit(who, body.model, query, context, cleanup)
        if body.stream:
            return StreamingResponse(_chat_stream(jobs, job), media_type="text/event-stream")
        waiter = asyncio.create_task(jobs.wait(job))
        while not waiter.done():  # a client that goes away takes its run with it
            await asyncio.wait([waiter], timeout=DISCONNECT_POLL_S)
            if not waiter.done() and await request.is_disconnected():
                await jobs.cancel(job)
                return Response(status_code=499)
        if job.status != "done" or job.result is None:
            raise HTTPException(500, f"the run {job.status}: {job.error or ''}".strip())
        return _completion(job)

    return app


def _query_and_context(body: ChatRequest) -> tuple[str, str | None]:
    users = [i for i, m in enumerate(body.messages) if m.role == "user"]
    if not users:
        raise HTTPException(400, "the messages hold no user message (the question)")
    query = body.messages[users[-1]].text()
    if body.context is not None or body.documents:
        return query, body.context
    earlier = "\n\n".join(m.text() for m in body.messages[: users[-1]] if m.role in ("user", "system", "developer"))
    if not earlier.strip():
        raise HTTPException(
            400,
            "no context: put the long text in an earlier message, or send 'context' (text) or 'documents' (ids)",
        )
    return query, earlier


def _usage(job: Job) -> dict[str, Any]:
    usage = (job.result or {}).get("usage", {})
    return {
        "prompt_tokens": usage.get("prompt_tokens", 0),
        "completion_tokens": usage.get("completion_tokens", 0),
        "total_tokens": usage.get("total_tokens", 0),
        "prompt_tokens_details": {"cached_tokens": usage.get("cached_tokens", 0)},
    }


def _completion(job: Job) -> dict[str, Any]:
    result = job.result or {}
    return {
        "id": job.id,
        "object": "chat.completion",
        "created": int(job.created_at),
        "model": job.model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": result.get("answer") or ""},
                "finish_reason": "stop" if result.get("answer") is not None else "length",
            }
        ],
        "usage": _usage(job),
        "rlm": {k: result.get(k) for k in ("stop_reason", "stop_detail", "turns", "elapsed_s")},
    }


async def _chat_stream(jobs: JobManager, job: Job) -> AsyncIterator[str]:
    """Progress as chunks with an empty delta and an `rlm_event` field (clients ignore it), then the answer."""

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        body = {"id": job.id, "object": "chat.completion.chunk", "created": int(time.time()), "model": job.model}
        return _sse({**body, "choices": [choice], **extra})

    finished = False
    try:
        yield chunk({"role": "assistant"})
        async for event in jobs.follow(job):
            yield chunk({}, rlm_event=_brief(event))
        finished = True
        if job.status != "done" or job.result is None:
            yield _sse({"error": {"message": f"the run {job.status}: {job.error or ''}".strip()}})
        else:
            yield chunk({"content": job.result.get("answer") or ""})
            yield chunk({}, "stop", usage=_usage(job))
        yield "data: [DONE]\n\n"
    finally:
        if not finished:  # the client went away mid-stream
            await jobs.cancel(job)


def _brief(event: dict[str, Any]) -> dict[str, Any]:
    """An event without the bulky fields (prompts, code output): what a progress display needs."""
    keep = ("event", "time", "run", "depth", "turn", "kind", "prompt_tokens", "cached_tokens", "completion_tokens")
    return {k: event[k] for k in keep if k in event}


def _sse(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False, default=str)}\n\n"
