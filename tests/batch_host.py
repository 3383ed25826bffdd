"""A batch host for tests/test_batch.py: the real BatchRunner and process sandbox, a scripted LM that answers slowly."""

from __future__ import annotations

import asyncio
import sys
from functools import partial
from pathlib import Path

from fakes import ScriptedEngine, repl

from rlm_local.batch import BatchRunner, load_jobs, run_job
from rlm_local.config import RLMConfig
from rlm_local.repl.process_sandbox import ProcessSandbox
from rlm_local.rlm import RLM


def answer(messages: list[dict[str, str]]) -> str:
    """Print the context, then answer with the code it holds: each job's answer comes from its own data."""
    if len(messages) == 2:
        return repl("print(context)")
    return f"FINAL({messages[-1]['content'].split('code-')[1].split()[0]})"


async def main(jobs_path: Path, out: Path) -> None:
    config = RLMConfig(sandbox="process", mode="code", guards=False)
    engine = ScriptedEngine(answer, delay_s=0.01)
    async with RLM(config, root_engine=engine, sandbox=ProcessSandbox()) as rlm:
        await BatchRunner(partial(run_job, rlm), out, concurrency=8).run(load_jobs(jobs_path))


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), Path(sys.argv[2])))
