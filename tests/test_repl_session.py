"""The host side of the REPL protocol against the real worker program, as a plain process."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from rlm_local.repl.process_sandbox import ProcessSandbox
from rlm_local.repl.session import ContextFile, ReplSession, StateLost


async def echo(kind: str, prompts: list[str], options: dict) -> list[str]:
    return [f"{kind}:{p}" for p in prompts]


@pytest.fixture
def context_file(tmp_path: Path) -> ContextFile:
    path = tmp_path / "context.txt"
    path.write_text("abc" * 1000)
    return ContextFile(path)


def session(context_file: ContextFile, **kwargs) -> ReplSession:
    return ReplSession(ProcessSandbox(), context_file, echo, **kwargs)


async def test_state_persists_and_trailing_expression_is_echoed(context_file):
    async with session(context_file) as repl:
        assert repl.context_chars == 3000
        await repl.execute("x = len(context)")
        result = await repl.execute("x * 2")
        assert result.stdout == "6000\n" and result.error is None


async def test_subcalls_travel_through_the_channel(context_file):
    async with session(context_file) as repl:
        result = await repl.execute("print(llm_query('a'), llm_query_batched(['b', 'c']), llm_query_batched([]))")
        assert result.stdout.strip() == "llm_query:a ['llm_query:b', 'llm_query:c'] []"


async def test_vars_list_types_and_sizes_without_values(context_file):
    async with session(context_file) as repl:
        await repl.execute("secret = 'x' * 10_000\nimport json\nn = 3")
        listed = {v["name"]: v for v in await repl.list_vars()}
        assert listed["secret"] == {"name": "secret", "type": "str", "size": 10_000}
        assert "json" not in listed and "llm_query" not in listed and listed["n"]["size"] is None
        assert await repl.get_var("n") == "3" and await repl.get_var("missing") is None


async def test_huge_output_is_bounded_with_true_length(context_file):
    async with session(context_file) as repl:
        result = await repl.execute("print('y' * 20_000_000)")
        assert result.stdout_chars == 20_000_001 and len(result.stdout) < 1_000_000


async def test_helpers_cannot_be_replaced_for_good(context_file):
    async with session(context_file) as repl:
        await repl.execute("llm_query = lambda p: 'forged'")
        result = await repl.execute("print(llm_query('q'))")
        assert result.stdout.strip() == "llm_query:q"


async def test_garbage_on_the_channel_replaces_the_worker(context_file):
    attack = (
        "import gc, socket\n"
        "s = next(o for o in gc.get_objects() if isinstance(o, socket.socket))\n"
        "s.sendall(b'\\xff\\xff\\xff\\xff' + b'junk')\n"
        "import time; time.sleep(1)"
    )
    async with session(context_file) as repl:
        await repl.execute("keep = 1")
        result = await repl.execute(attack)
        assert result.state_lost and "exceeds" in (result.fault or "")
        after = await repl.execute("print(len(context), 'keep' in dir())")
        assert after.stdout.strip() == "3000 False" and repl.restarts == 1


async def test_timeout_clock_stops_during_subcalls(context_file):
    async def slow(kind, prompts, options):
        await asyncio.sleep(1.5)
        return ["ok"] * len(prompts)

    async with ReplSession(ProcessSandbox(), context_file, slow, cell_timeout_s=1.0) as repl:
        result = await repl.execute("print(llm_query('a'))")
        assert result.stdout.strip() == "ok" and not result.timed_out


async def test_a_worker_that_ignores_interrupts_is_replaced(context_file):
    code = "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True: pass"
    async with session(context_file, cell_timeout_s=0.5, interrupt_grace_s=0.5) as repl:
        result = await repl.execute(code)
        assert result.timed_out and result.state_lost
        assert (await repl.execute("print(len(context))")).stdout.strip() == "3000"


async def test_a_worker_lost_while_reading_a_variable_says_the_variables_are_gone(context_file):
    async with session(context_file) as repl:
        bomb = "import os\nclass Bomb:\n    def __str__(self):\n        os._exit(3)\nkept, answer = 1, Bomb()"
        await repl.execute(bomb)
        with pytest.raises(StateLost, match="all variables were lost") as lost:
            await repl.get_var("answer")
        assert "exit code 3" in str(lost.value)
        assert repl.restarts == 1 and "NameError" in (await repl.execute("kept")).error
        assert (await repl.execute("print(len(context))")).stdout == "3000\n"  # a fresh worker, context back
