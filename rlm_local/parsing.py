"""Reading a root-model reply: reasoning to drop, code blocks to run, and a final answer given outside code."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

CODE_LANGS = {"repl", "python", "py", "python3"}
_FENCE = re.compile(r"^[ \t]*```[ \t]*([\w+-]*)[^\n]*$", re.MULTILINE)
_THINK_BLOCK = re.compile(r"<think>.*?(?:</think>|$)", re.DOTALL)


def strip_think(text: str) -> str:
    """Drop `<think>` blocks (an unclosed one runs to the end) and anything before a stray `</think>`."""
    if "</think>" in text and "<think>" not in text.split("</think>", 1)[0]:
        text = text.split("</think>", 1)[1]
    return _THINK_BLOCK.sub("", text).strip()


@dataclass
class Fence:
    lang: str
    body: str
    start: int  # offset of the opening fence
    end: int  # offset just past the closing fence (the text's end when unclosed)


def find_fences(text: str) -> list[Fence]:
    """Fenced blocks in order; a last fence left open runs to the end of the text."""
    fences: list[Fence] = []
    markers = list(_FENCE.finditer(text))
    i = 0
    while i < len(markers):
        opening = markers[i]
        lang = opening.group(1).lower()
        closing = next((m for m in markers[i + 1 :] if not m.group(1)), None)
        if closing is None:
            fences.append(Fence(lang, text[opening.end() + 1 :], opening.start(), len(text)))
            break
        fences.append(Fence(lang, text[opening.end() + 1 : closing.start()], opening.start(), closing.end()))
        i = markers.index(closing) + 1
    return fences


def _is_python(code: str) -> bool:
    try:
        ast.parse(code)
    except SyntaxError:
        return False
    return bool(code.strip())


def extract_code_blocks(text: str) -> list[str]:
    """Code to run: ```repl / ```python blocks, and untagged blocks that parse as Python."""
    blocks = []
    for fence in find_fences(text):
        body = fence.body.rstrip()
        if not body.strip():
            continue
        if fence.lang in CODE_LANGS or (not fence.lang and _is_python(body)):
            blocks.append(body)
    return blocks


def outside_code(text: str) -> str:
    """The reply with every fenced block removed, so that FINAL written inside code is never an answer."""
    parts, last = [], 0
    for fence in find_fences(text):
        parts.append(text[last : fence.start])
        last = fence.end
    parts.append(text[last:])
    return "".join(parts)


@dataclass
class FinalAnswer:
    value: str
    is_variable: bool  # FINAL_VAR(name): the value of a REPL variable


_FINAL = re.compile(r"\bFINAL(_VAR)?\s*\(")
_FINAL_ANY_CASE = re.compile(r"\bFINAL(_VAR)?\s*\(", re.IGNORECASE)


def find_final(text: str, *, lenient: bool = False) -> FinalAnswer | None:
    """The first FINAL(...) or FINAL_VAR(...) outside code; one at the start of a line wins over one in prose.

    `lenient` (for the last, forced turn) also accepts `Final(...)` and a FINAL written inside a code block.
    """
    prose = text if lenient else outside_code(text)
    matches = list((_FINAL_ANY_CASE if lenient else _FINAL).finditer(prose))
    if not matches:
        return None
    at_line_start = [m for m in matches if _line_start(prose, m)]
    match = (at_line_start or matches)[0]
    body = _balanced(prose, match.end())
    if match.group(1):
        return FinalAnswer(_unquote(body).strip(), is_variable=True)
    return FinalAnswer(_unquote(body), is_variable=False)


def _line_start(text: str, match: re.Match[str]) -> bool:
    line_begin = text.rfind("\n", 0, match.start()) + 1
    return not text[line_begin : match.start()].strip(" \t*>-")


def _balanced(text: str, start: int) -> str:
    """Text up to the parenthesis that closes the one before `start`; the rest of the text if it never closes."""
    depth = 1
    for i in range(start, len(text)):
        ch = text[i]
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return text[start:i].strip()
    return text[start:].strip().rstrip(")").strip()


def _unquote(value: str) -> str:
    """FINAL("Paris") means Paris: one string literal is read as its value."""
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        try:
            literal = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return value.strip("'\"")
        return str(literal)
    return value.strip()
