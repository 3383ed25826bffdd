"""How well the sub-model judges ONE record against a condition, by how the condition is asked.

Per-record judgements are the leaves of every record plan (`count_where`, `where`, `label_each`, the per-person
program). Generated customer messages with known labels (development generator, not the report seeds), each
target label asked four ways:
- `yes/no`: "Is this message about billing?" (or "... negative?"), P(yes);
- `question`: the per-person question itself, "Does this record help answer: Which users wrote ... ?", P(yes);
- `2 labels`: the target or "other", P(target);
- `all labels`: every label of the scheme, calibrated over the batch as `label_each` does, P(target).
Prints, per target and form: the share of target records ranked above other records (AUC: 0.5 is chance) and the
records taken at P > 0.5. Results on stdout only.

Usage: .venv/bin/python scripts/probe_record_questions.py [--model ALIAS] [--per-label 10]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sandbox"))

import rlm_helpers

from rlm_local.config import EngineConfig
from rlm_local.engines.base import GenerationRequest, SamplingOptions
from rlm_local.engines.engine_log import new_log_path
from rlm_local.engines.vllm_engine import VLLMEngine
from rlm_local.eval.families.records import SCHEMES, record_text
from rlm_local.runtime.choose import TOP_LOGPROBS, choice_probabilities

TARGETS = (("billing", "topic"), ("shipping", "topic"), ("account", "topic"), ("negative", "sentiment"))
PERSON_QUESTION = "Which users wrote to us {about}? Give their user ids."


def auc(scored: list[tuple[float, bool]]) -> float:
    """P(a target record scores above a non-target one), ties counted half."""
    hits = [p for p, is_target in scored if is_target]
    misses = [p for p, is_target in scored if not is_target]
    pairs = [(a > b) + 0.5 * (a == b) for a in hits for b in misses]
    return sum(pairs) / len(pairs)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--max-model-len", type=int, default=4096)
    parser.add_argument("--per-label", type=int, default=10, help="generated messages per label")
    args = parser.parse_args()
    engine = await VLLMEngine.start(
        EngineConfig(model=args.model, max_model_len=args.max_model_len, log_file=new_log_path())
    )

    async def probabilities(prompt: str, choices: list[str]) -> dict[str, float]:
        options = SamplingOptions(max_tokens=1, top_logprobs=TOP_LOGPROBS)
        reply = await engine.generate(GenerationRequest([{"role": "user", "content": prompt}], options))
        return dict(zip(choices, choice_probabilities(reply.first_token_logprobs, choices, reply.text), strict=True))

    async def ask(question: str, choices: list[str], records: list[str]) -> list[dict[str, float]]:
        listed = f" (one of: {', '.join(choices)})"
        prompts = [rlm_helpers.LABEL_PROMPT.format(question=question, choices=listed, item=r) for r in records]
        return list(await asyncio.gather(*(probabilities(p, choices) for p in prompts)))

    try:
        print(f"model: {engine.model}")
        rng = random.Random(11)
        for target, scheme in TARGETS:
            labels = list(SCHEMES[scheme])
            truth = [label for label in labels for _ in range(args.per_label)]
            records = [
                f"2023-03-{rng.randint(10, 28)} | user_{rng.randint(1000, 9999)} | {record_text(rng, t)}" for t in truth
            ]
            about = f"about {target}" if scheme == "topic" else f"{target} messages"
            direct = f"Is this message about {target}?" if scheme == "topic" else f"Is this message {target}?"
            forms = {
                "yes/no": (direct, ["yes", "no"], "yes"),
                "question": (
                    f"Does this record help answer: {PERSON_QUESTION.format(about=about)}",
                    ["yes", "no"],
                    "yes",
                ),
                "2 labels": (f"What is the {scheme} of this message?", [target, "other"], target),
                "all labels": (f"What is the {scheme} of this message?", labels, target),
            }
            for name, (question, choices, wanted) in forms.items():
                table = await ask(question, choices, records)
                if name == "all labels":
                    table = rlm_helpers._batch_calibrated(table, choices)
                    total = [sum(row.values()) or 1.0 for row in table]
                    table = [{k: v / t for k, v in row.items()} for row, t in zip(table, total, strict=True)]
                scored = [(row.get(wanted, 0.0), t == target) for row, t in zip(table, truth, strict=True)]
                taken = sum(1 for p, is_target in scored if p > 0.5 and is_target)
                wrong = sum(1 for p, is_target in scored if p > 0.5 and not is_target)
                print(
                    f"{target:<9} {name:<10} AUC {auc(scored):.2f}  taken at P>0.5: {taken}/{args.per_label} targets,"
                    f" {wrong}/{len(truth) - args.per_label} others",
                    flush=True,
                )
    finally:
        await engine.close()


if __name__ == "__main__":
    asyncio.run(main())
