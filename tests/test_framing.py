"""Frames from the worker are untrusted input: bounded before they are parsed, cleaned after."""

from __future__ import annotations

import asyncio
import json

import pytest

from rlm_local.repl.framing import MAX_ELEMENTS, ProtocolError, decode_frame


def decode(payload: bytes) -> dict:
    return asyncio.run(decode_frame(payload))


def test_a_prompt_full_of_json_text_is_not_mistaken_for_many_elements():
    records = json.dumps([{"id": i, "tags": ["a", "b"]} for i in range(60_000)])  # 420,000 separators, in a string
    message = decode(json.dumps({"type": "subcall", "prompts": [records]}).encode())
    assert message["prompts"] == [records]


def test_too_many_elements_are_refused_before_parsing():
    with pytest.raises(ProtocolError, match="element"):
        decode(b'{"type": "x", "pad": [' + b"[]," * MAX_ELEMENTS + b"[]]}")
    with pytest.raises(ProtocolError, match="element"):
        decode(b'{"type": "x", "pad": [' + b'"",' * (MAX_ELEMENTS + 1) + b'""]}')


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b'{"type": "x", "n": ' + b"[" * 5000 + b"]" * 5000 + b"}", "nests"),
        (b'{"type": "x", "n": ' + b"[" * 20 + b"]" * 20 + b"}", "deeper"),
        (b'{"type": "x", "n": ' + b"7" * 5000 + b"}", "digits"),
        (b'{"type": "x", "n": -Infinity}', "not a number"),
        (b'{"type": "x", "n": 1e400}', "out of range"),
        (b'["type"]', "JSON object"),
    ],
)
def test_numbers_nesting_and_shapes_the_protocol_never_uses_are_protocol_errors(payload, expected):
    with pytest.raises(ProtocolError, match=expected):
        decode(payload)


def test_lone_surrogates_become_replacement_characters():
    message = decode(b'{"type": "x", "s": "a\\ud800b", "\\udfff": ["\\ud83d\\ude00"]}')
    assert message == {"type": "x", "s": "a\ufffdb", "\ufffd": ["\U0001f600"]}  # a valid pair stays one character
