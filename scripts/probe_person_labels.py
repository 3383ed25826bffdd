"""What the per-person program sees on listing tasks ("Which users wrote about X at least twice?"), record by record.

For development listing tasks (never the report seeds) it runs the program's own steps with the sub-model:
`categories()` for the question, P(asked-for category) for every record (`label_scores`), and a second look at the
likeliest fifth of the records (categories named from those records alone, then labelled again). Each record's
true label comes from the generator's templates. Prints, per task: the categories, where the true records rank
(AUC), the ten likeliest records' true labels, and for each way of deciding which records count: records flagged
(true ones), people kept, F1 and whether the answer is exact. Results on stdout only.

Usage: .venv/bin/python scripts/probe_person_labels.py [--model ALIAS] [--seeds 3,4]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from collections import Counter, defaultdict
from itertools import combinations
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sandbox"))

import rlm_helpers
from probe_record_questions import auc

from rlm_local.config import EngineConfig
from rlm_local.engines.base import GenerationRequest, SamplingOptions
from rlm_local.engines.engine_log import new_log_path
from rlm_local.engines.vllm_engine import VLLMEngine
from rlm_local.eval.families.records import SLOTS, TEMPLATES
from rlm_local.eval.scoring import score_answer
from rlm_local.eval.tasks import make_task
from rlm_local.runtime.choose import TOP_LOGPROBS, choice_probabilities
from rlm_local.runtime.structured import CATEGORY_QUESTION, CLEAREST_SHARE, PersonRule, person_rule

TOPICS = ("billing", "shipping", "account", "product question")


def _template_patterns() -> list[tuple[re.Pattern[str], str]]:
    """Every template as a pattern over its slot values: a record's text names its label."""
    patterns = []
    for label, templates in TEMPLATES.items():
        for template in templates:
            parts = re.split(r"(\{\w+\})", template)
            slot = lambda p: "(?:" + "|".join(re.escape(v) for v in SLOTS[p[1:-1]]) + ")"  # noqa: E731
            text = "".join(slot(p) if p.startswith("{") else re.escape(p) for p in parts)
            patterns.append((re.compile(text, re.IGNORECASE), label))
    return patterns


PATTERNS = _template_patterns()


def true_label(record: str) -> str:
    text = record.split(" | ", 2)[-1].strip()
    return next((label for pattern, label in PATTERNS if pattern.fullmatch(text)), "?")


def kept_people(flags: list[bool], who: list[str], rule: PersonRule) -> list[str]:
    tally: dict[str, Counter[str]] = defaultdict(Counter)
    for person, flag in zip(who, flags, strict=True):
        tally[person]["yes" if flag else "no"] += 1
    return sorted(person for person, c in tally.items() if rule.keeps(c["yes"], c["no"]))


def answer(kept: list[str], rule: PersonRule) -> str:
    """The answer as the per-person program writes it, for the evaluation's own scoring."""
    return "\n".join(f"{a} & {b}" for a, b in combinations(kept, 2)) if rule.pairs else ", ".join(kept)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="qwen2.5-coder-1.5b-instruct")
    parser.add_argument("--seeds", default="3,4", help="development seeds (below 1000)")
    parser.add_argument("--variants", default="repeat_label,pairs")
    parser.add_argument(
        "--labels",
        default="",
        help="comma-separated categories to label with instead of those `categories()` names (an oracle: e.g. the "
        "generator's own topics), to tell the naming of categories from the labelling of records",
    )
    args = parser.parse_args()
    engine = await VLLMEngine.start(EngineConfig(model=args.model, max_model_len=4096, log_file=new_log_path()))
    loop = asyncio.get_running_loop()

    async def replies(prompts: list[str], max_tokens: int, logprobs: int) -> list:
        options = SamplingOptions(max_tokens=max_tokens, top_logprobs=logprobs)
        requests = [GenerationRequest([{"role": "user", "content": p}], options) for p in prompts]
        return list(await asyncio.gather(*(engine.generate(r) for r in requests)))

    def batched(prompts: list[str], **_: object) -> list[str]:
        return [r.text for r in asyncio.run_coroutine_threadsafe(replies(prompts, 256, 0), loop).result()]

    def choose(prompts: list[str], choices: list[str]) -> list[dict[str, float]]:
        done = asyncio.run_coroutine_threadsafe(replies(prompts, 1, TOP_LOGPROBS), loop).result()
        probs = [choice_probabilities(r.first_token_logprobs, choices, r.text) for r in done]
        return [dict(zip(choices, p, strict=True)) for p in probs]

    def helpers(data: object) -> rlm_helpers.Strategies:
        return rlm_helpers.Strategies(batched, {"context": data}, choose)

    try:
        print(f"model: {engine.model}")
        for seed in (int(s) for s in args.seeds.split(",")):
            for variant in args.variants.split(","):
                task = make_task("listing", seed, 36_000, variant=variant)
                rule, about_one = person_rule(task.query)
                records, who = rlm_helpers.items(task.context), rlm_helpers.writers(task.context)
                target = next(t for t in TOPICS if t.split()[0] in about_one.lower())
                truth = [true_label(r) == target for r in records]
                given = [label.strip() for label in args.labels.split(",") if label.strip()]
                labels = rlm_helpers.asked_first(given, about_one) if given else None
                labels = labels or await asyncio.to_thread(helpers(task.context).categories, about_one)
                table = await asyncio.to_thread(helpers(task.context).label_scores, CATEGORY_QUESTION, labels)
                scores = [row.get(labels[0], 0.0) for row in table]
                order = sorted(range(len(scores)), key=lambda i: -scores[i])
                closest = order[: max(20, len(order) // 5)]
                near = [records[i] for i in closest]
                again = await asyncio.to_thread(helpers(near).categories, about_one)
                relabelled = await asyncio.to_thread(helpers(near).label_each, CATEGORY_QUESTION, again, None, False)
                second = [False] * len(records)
                for i, label in zip(closest, relabelled, strict=True):
                    second[i] = label == again[0]
                bars = (CLEAREST_SHARE, CLEAREST_SHARE / 2)
                shares = [[s >= bar * max(scores) for s in scores] for bar in bars]
                ways = {
                    "share of the clearest": next((f for f in shares if kept_people(f, who, rule)), shares[-1]),
                    "likeliest label": [max(row, key=row.get) == labels[0] for row in table],
                    "second look": second,
                }
                pos = [s for s, t in zip(scores, truth, strict=True) if t]
                neg = [s for s, t in zip(scores, truth, strict=True) if not t]
                print(f"\n{task.task_id}: {task.query}\n  categories {labels}; second look {again}")
                ranked = auc([(s, True) for s in pos] + [(s, False) for s in neg])
                print(f"  {len(records)} records, {sum(truth)} about {target}: AUC {ranked:.3f}")
                print(f"  ten likeliest: {[(round(scores[i], 3), true_label(records[i])) for i in order[:10]]}")
                for name, chosen in ways.items():
                    kept = kept_people(chosen, who, rule)
                    got = score_answer(task, answer(kept, rule))
                    right = sum(c and t for c, t in zip(chosen, truth, strict=True))
                    found = f"flagged {sum(chosen):3d} ({right} true), kept {len(kept)}"
                    print(f"  {name:<22} {found}: F1 {got.score:.2f}, exact {got.exact}")
    finally:
        await engine.close()


if __name__ == "__main__":
    asyncio.run(main())
