"""Length-prefixed JSON frames over an asyncio stream: the host side of the worker protocol.

The worker is untrusted: a frame is size-checked, its element count is bounded before it is parsed (so that host
memory and time stay within a small multiple of the frame's size), numbers are short and finite, nesting is shallow,
lone surrogates become U+FFFD, and it must decode to a JSON object; otherwise `ProtocolError` is raised and the
caller replaces the worker. Large frames are counted in slices and decoded in a thread, so that other runs on the
event loop keep going.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import struct
from typing import Any

HEADER = struct.Struct(">I")
MAX_FRAME_BYTES = 64 * 1024 * 1024
MAX_ELEMENTS = 200_000  # values and keys in one frame; a sub-call of 4,096 prompts needs about 4,100
MAX_DEPTH = 16  # the protocol's deepest frame is 3 levels
MAX_NUMBER_CHARS = 40
INLINE_BYTES = 1 << 20  # frames above this are counted in slices and decoded off the event loop
SLICE_BYTES = 4 << 20

_SEPARATORS = (b",", b"[", b"{", b":")  # every JSON value but the first one follows one of these
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_SURROGATE = re.compile("[\ud800-\udfff]")


class ProtocolError(Exception):
    """The worker sent something that is not a well-formed frame."""


async def read_frame(reader: asyncio.StreamReader, max_bytes: int = MAX_FRAME_BYTES) -> dict[str, Any]:
    try:
        header = await reader.readexactly(HEADER.size)
    except asyncio.IncompleteReadError as exc:
        raise EOFError("worker closed the channel") from exc
    (length,) = HEADER.unpack(header)
    if length > max_bytes:
        raise ProtocolError(f"frame of {length} bytes exceeds the {max_bytes}-byte limit")
    try:
        payload = await reader.readexactly(length)
    except asyncio.IncompleteReadError as exc:
        raise EOFError("worker closed the channel mid-frame") from exc
    return await decode_frame(payload)


async def decode_frame(payload: bytes) -> dict[str, Any]:
    """Check the element count, then decode; both bounded by the payload's size."""
    elements = await _count_elements(payload)
    if elements > MAX_ELEMENTS:
        raise ProtocolError(f"frame of {elements:,} JSON elements exceeds the {MAX_ELEMENTS:,}-element limit")
    if len(payload) > INLINE_BYTES:
        return await asyncio.to_thread(_decode, payload)
    return _decode(payload)


def _decode(payload: bytes) -> dict[str, Any]:
    try:
        text = payload.decode("utf-8", "surrogatepass")
        message = json.loads(text, parse_int=_parse_int, parse_float=_parse_float, parse_constant=_refuse_constant)
    except (UnicodeDecodeError, json.JSONDecodeError, ValueError) as exc:
        raise ProtocolError(f"frame is not JSON: {exc}") from exc
    except RecursionError as exc:
        raise ProtocolError("frame nests too deeply") from exc
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ProtocolError("frame is not a JSON object with a 'type'")
    return _clean(message, 0)


async def _count_elements(payload: bytes) -> int:
    """An upper bound on the values in `payload`: separators outside strings, plus one."""
    total = await _count_separators(payload, 0, len(payload))
    if total <= MAX_ELEMENTS:
        return total + 1
    # Over the limit counting every separator: subtract those inside strings (a prompt of JSON text has many).
    since_yield = 0
    for strings, match in enumerate(_STRING.finditer(payload), start=1):
        if strings > MAX_ELEMENTS:
            return strings
        start, end = match.span()
        total -= sum(payload.count(sep, start, end) for sep in _SEPARATORS)
        since_yield += end - start
        if since_yield > SLICE_BYTES or strings % 10_000 == 0:
            since_yield = 0
            await asyncio.sleep(0)
    return total + 1


async def _count_separators(payload: bytes, start: int, end: int) -> int:
    total = 0
    for left in range(start, end, SLICE_BYTES):
        right = min(end, left + SLICE_BYTES)
        total += sum(payload.count(sep, left, right) for sep in _SEPARATORS)
        if end - start > INLINE_BYTES:
            await asyncio.sleep(0)
    return total


def _parse_int(text: str) -> int:
    if len(text) > MAX_NUMBER_CHARS:
        raise ProtocolError(f"a number of {len(text)} digits")
    return int(text)


def _parse_float(text: str) -> float:
    value = float(text) if len(text) <= MAX_NUMBER_CHARS else math.inf
    if not math.isfinite(value):
        raise ProtocolError(f"a number out of range: {text[:MAX_NUMBER_CHARS]}")
    return value


def _refuse_constant(name: str) -> float:
    raise ProtocolError(f"{name} is not a number the protocol accepts")


def _clean(value: Any, depth: int) -> Any:
    """Lone surrogates (which fail every later encode: trajectory, tokenizer, HTTP) become U+FFFD; depth is bounded."""
    if depth > MAX_DEPTH:
        raise ProtocolError(f"frame nests deeper than {MAX_DEPTH} levels")
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, list):
        return [_clean(item, depth + 1) for item in value]
    if isinstance(value, dict):
        return {_SURROGATE.sub("\ufffd", key): _clean(item, depth + 1) for key, item in value.items()}
    return value


def encode_frame(message: dict[str, Any]) -> bytes:
    data = json.dumps(message, ensure_ascii=False).encode("utf-8", "surrogatepass")
    return HEADER.pack(len(data)) + data


async def write_frame(writer: asyncio.StreamWriter, message: dict[str, Any], timeout_s: float | None = None) -> None:
    """Send one frame; with `timeout_s`, a worker that does not read it (a full socket) raises `TimeoutError`."""
    writer.write(encode_frame(message))
    await asyncio.wait_for(writer.drain(), timeout_s)
