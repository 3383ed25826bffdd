"""How well the sub-model does the two jobs the strategy helpers give it, without a root model in the way.

- reading: `ask_all(question)` (each piece scored with `llm_choose`, the likeliest read) over generated needle,
  multi-hop and code-QA tasks (development seeds), scored like the evaluation;
- labels: `label_each` / `count_where` on generated customer messages whose label is known, per record.

Usage: .venv/bin/python scripts/probe_sub_model.py [--model ALIAS] [--max-model-len 4096] [--seeds 6]
Results on stdout only. Development seeds: never the report seeds.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sandbox"))

import rlm_helpers

from rlm_local.config import EngineConfig
from rlm_local.engines.base import GenerationRequest, SamplingOptions
from rlm_local.engines.engine_log import new_log_path
from rlm_local.engines.vllm_engine import VLLMEngine
from rlm_local.eval.families.records import SCHEMES, record_text
from rlm_local.eval.scoring import score_answer
from rlm_local.eval.tasks import make_task
from rlm_local.runtime.choose import TOP_LOGPROBS, choice_probabilities

READING_FAMILIES = ("needle", "multihop", "codeqa")
LENGTHS = (8_000, 30_000)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--max-model-len", type=int, default=4096)
    parser.add_argument("--seeds", type=int, default=6, help="development seeds per family and length")
    parser.add_argument("--families", default=",".join(READING_FAMILIES), help="reading families, comma-separated")
    parser.add_argument("--lengths", default=",".join(map(str, LENGTHS)), help="context sizes in characters")
    parser.add_argument("--no-labels", action="store_true", help="skip the label probes")
    parser.add_argument("--no-reading", action="store_true", help="skip the reading probes")
    parser.add_argument(
        "--no-scores", action="store_true", help="helpers without llm_choose (BM25 order, labels from reply text)"
    )
    args = parser.parse_args()
    config = EngineConfig(model=args.model, max_model_len=args.max_model_len, log_file=new_log_path())
    engine = await VLLMEngine.start(config)  # its logs go to a file: stdout is the results alone
    loop = asyncio.get_running_loop()

    async def ask(prompt: str) -> str:
        request = GenerationRequest([{"role": "user", "content": prompt}], SamplingOptions(max_tokens=128))
        return (await engine.generate(request)).text

    async def ask_many(prompts: list[str]) -> list[str]:
        return list(await asyncio.gather(*(ask(p) for p in prompts)))

    def batched(prompts: list[str]) -> list[str]:  # the helpers are synchronous, as in the REPL
        return asyncio.run_coroutine_threadsafe(ask_many(prompts), loop).result()

    async def score(prompt: str, choices: list[str]) -> dict[str, float]:  # as the host serves llm_choose
        options = SamplingOptions(max_tokens=1, top_logprobs=TOP_LOGPROBS)
        generation = await engine.generate(GenerationRequest([{"role": "user", "content": prompt}], options))
        probabilities = choice_probabilities(generation.first_token_logprobs, choices, generation.text)
        return dict(zip(choices, probabilities, strict=True))

    async def score_many(prompts: list[str], choices: list[str]) -> list[dict[str, float]]:
        return list(await asyncio.gather(*(score(p, choices) for p in prompts)))

    def choose(prompts: list[str], choices: list[str]) -> list[dict[str, float]]:
        return asyncio.run_coroutine_threadsafe(score_many(prompts, choices), loop).result()

    def helpers(context: object) -> dict:
        namespace = {"context": context}
        namespace.update(rlm_helpers.Strategies(batched, namespace, None if args.no_scores else choose).helpers())
        return namespace

    try:
        print(f"model: {engine.model}")
        for chars in [] if args.no_reading else [int(n) for n in args.lengths.split(",")]:
            for family in args.families.split(","):
                scores = []
                for seed in range(args.seeds):
                    task = make_task(family, seed, chars)
                    answer = await loop.run_in_executor(None, helpers(task.context)["ask_all"], task.query)
                    scores.append(score_answer(task, answer).score)
                    print(f"  seed {seed}: {task.query!r} -> {answer!r} (gold {task.gold!r})", file=sys.stderr)
                print(f"reading  ask_all  {family:<9} {chars:>7,} chars  mean score {sum(scores) / len(scores):.2f}")
        rng = random.Random(7)
        for scheme, labels in [] if args.no_labels else SCHEMES.items():
            sizes = rng.sample([4 + 4 * i for i in range(len(labels))], len(labels))  # skewed, as real logs are
            records = [
                (label, record_text(rng, label)) for label, n in zip(labels, sizes, strict=True) for _ in range(n)
            ]
            texts = [text for _, text in records]
            found = await loop.run_in_executor(
                None, helpers(texts)["label_each"], f"What is the {scheme} of this message?", list(labels)
            )
            right = sum(f == label for f, (label, _) in zip(found, records, strict=True))
            print(f"labels   label_each {scheme:<9} accuracy {right / len(records):.2f}  given {dict(Counter(found))}")
            label_counts = Counter(found)
            errors: Counter[str] = Counter()
            for chosen in labels:  # "how many are <label>?": one yes/no question, or the label_each count
                flags = await loop.run_in_executor(
                    None, helpers(texts)["count_where"], f"Is the {scheme} of this message {chosen}? Answer yes or no."
                )
                true = sum(label == chosen for label, _ in records)
                counts = {"yes/no": flags, "label_each": label_counts[chosen]}
                errors.update({name: abs(n - true) for name, n in counts.items()})
                print(f"  {scheme} {chosen!r}: true {true}, {counts}", flush=True)
            summary = ", ".join(f"{name} {n / len(labels):.1f}" for name, n in errors.items())
            print(f"labels   count of one label  {scheme:<9} mean error: {summary} (of {len(records)} records)")
    finally:
        await engine.close()


if __name__ == "__main__":
    asyncio.run(main())
