"""The root model's first cell for generated tasks, without running it: a quick check of what code a prompt profile
leads a model to write, before a full evaluation (which spends most of its time in the sub-calls).

Usage: .venv/bin/python scripts/probe_root.py [--model ALIAS] [--profile auto] [--families listing,aggregation]
       [--seeds 0-5] [--chars 36000] [--query "a question of your own"]
Results (query, then the code) on stdout only. Development seeds by default: never the report seeds.
"""

from __future__ import annotations

import argparse
import asyncio

from rlm_local import prompts
from rlm_local.config import EngineConfig, RLMConfig
from rlm_local.context import PreparedContext, prepare_context
from rlm_local.engines.base import GenerationRequest, SamplingOptions
from rlm_local.engines.engine_log import new_log_path
from rlm_local.engines.vllm_engine import VLLMEngine
from rlm_local.eval.tasks import make_task
from rlm_local.parsing import extract_code_blocks
from rlm_local.runtime.structured import question_form


def seed_range(text: str) -> list[int]:
    low, _, high = text.partition("-")
    return list(range(int(low), int(high or low) + 1))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--max-model-len", type=int, default=4096)
    parser.add_argument("--profile", default="auto")
    parser.add_argument("--families", default="listing,aggregation")
    parser.add_argument("--seeds", default="0-5", help="development seeds, e.g. 0-5")
    parser.add_argument("--chars", type=int, default=36_000)
    parser.add_argument("--query", action="append", default=[], help="ask this of each task's data instead")
    args = parser.parse_args()
    engine = await VLLMEngine.start(
        EngineConfig(model=args.model, max_model_len=args.max_model_len, log_file=new_log_path())
    )
    defaults = RLMConfig()
    profile = prompts.choose_profile(args.profile, engine.model, engine.source)
    print(f"model: {engine.model}  profile: {profile.name}")
    try:
        jobs = []
        for family in args.families.split(","):
            for seed in seed_range(args.seeds):
                task = make_task(family, seed, args.chars)
                context = prepare_context(task.context)
                for query in args.query or [task.query]:
                    jobs.append((task.task_id, query, context))
        options = SamplingOptions(max_tokens=defaults.root_max_tokens, temperature=0.0)

        async def first_cell(query: str, context: PreparedContext) -> str:
            opening = profile.variant(about_records=question_form(query) is not None).opening(
                context_hint=f"a {context.type_name}",
                sub_window=engine.max_model_len,
                output_chars=defaults.output_chars,
                allow_rlm_query=False,
                max_turns=defaults.budgets.max_iterations,
                preview=True,
            )
            first = prompts.FIRST_USER_PREVIEW.format(query=query, context_description=context.preview())
            reply = await engine.generate(GenerationRequest([*opening, {"role": "user", "content": first}], options))
            return "\n".join(extract_code_blocks(reply.text)) or reply.text

        cells = await asyncio.gather(*(first_cell(query, context) for _, query, context in jobs))
        for (task_id, query, _), cell in zip(jobs, cells, strict=True):
            print(f"\n### {task_id}: {query}\n{cell}")
    finally:
        await engine.close()


if __name__ == "__main__":
    asyncio.run(main())
