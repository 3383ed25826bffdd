"""The server's request size limit, on a small app behind the same middleware: declared and chunked bodies."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI, Request, UploadFile

from rlm_local.server.app import SizeLimit

LIMIT = 10_000


def limited_app() -> tuple[SizeLimit, list[int]]:
    app, bodies = FastAPI(), []

    @app.post("/echo")
    async def echo(request: Request) -> dict[str, int]:
        bodies.append(len(await request.body()))
        return {"bytes": bodies[-1]}

    @app.post("/upload")
    async def upload(file: UploadFile) -> dict[str, int]:
        bodies.append(len(await file.read()))
        return {"bytes": bodies[-1]}

    return SizeLimit(app, LIMIT), bodies


async def chunks(total: int, size: int = 1024) -> AsyncIterator[bytes]:
    for start in range(0, total, size):
        yield b"x" * min(size, total - start)


async def post(path: str, **kwargs) -> httpx.Response:
    app, _ = limited_app()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        return await client.post(path, **kwargs)


@pytest.mark.parametrize(
    ("body", "expected"),
    [(b"x" * 500, 200), (b"x" * (LIMIT + 1), 413), (chunks(5_000), 200), (chunks(LIMIT * 30), 413)],
    ids=["declared, small", "declared, over", "chunked, small", "chunked, over"],
)
async def test_bodies_over_the_limit_get_413_whether_declared_or_chunked(body, expected: int):
    app, bodies = limited_app()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        response = await client.post("/echo", content=body)
    assert response.status_code == expected
    if expected == 413:
        assert response.json()["error"]["message"] == f"request over {LIMIT:,} bytes"
        assert bodies == []  # the route never got a body to work on
    else:
        assert response.json()["bytes"] == bodies[0] > 0


async def test_a_declared_length_that_is_not_a_number_is_refused():
    response = await post("/echo", content=b"{}", headers={"content-length": "12abc"})
    assert response.status_code == 413


async def test_a_chunked_multipart_upload_over_the_limit_is_refused():
    boundary = "rlm-local-test-boundary"
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.txt"\r\n\r\n'.encode()
    headers = {"content-type": f"multipart/form-data; boundary={boundary}"}  # no content-length: sent chunked

    async def stream() -> AsyncIterator[bytes]:
        yield head
        async for part in chunks(LIMIT * 3):
            yield part
        yield f"\r\n--{boundary}--\r\n".encode()

    app, bodies = limited_app()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        response = await client.post("/upload", content=stream(), headers=headers)
    assert response.status_code == 413 and bodies == []
