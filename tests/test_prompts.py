"""Prompt profiles: `auto` picks one by the size a model's name states, and every profile formats."""

from __future__ import annotations

import pytest

from rlm_local.prompts import PROFILES, SMALL_CODER_EXAMPLES, choose_profile, parameter_billions


@pytest.mark.parametrize(
    ("model", "profile"),
    [
        ("Qwen/Qwen2.5-Coder-0.5B-Instruct", "small-coder"),
        ("HuggingFaceTB/SmolLM2-360M-Instruct", "small-coder"),
        ("qwen2.5-coder-1.5b-instruct", "small-coder-plus"),
        ("Qwen2.5-3B-Instruct", "small-coder-plus"),
        ("Qwen2.5-7B-Instruct", "general"),
        ("my-served-model", "general"),  # no size in the name: the prompt for capable models
    ],
)
def test_auto_picks_the_profile_by_the_size_in_the_models_name(model: str, profile: str) -> None:
    assert choose_profile("auto", model).name == profile


def test_a_served_name_without_a_size_is_sized_by_the_folder_the_server_loaded() -> None:
    assert choose_profile("auto", "prod", "/models/Qwen2.5-Coder-1.5B-Instruct/").name == "small-coder-plus"
    assert parameter_billions("SmolLM2-135M") == pytest.approx(0.135)


def test_only_models_from_1b_up_are_shown_the_category_examples() -> None:
    """The 0.5B copies example shapes it should not (it answered a document question with `items()[-1]` when shown
    the category comparison), so its prompt keeps the short list of shapes."""
    tiny, plus = PROFILES["small-coder"], PROFILES["small-coder-plus"]
    assert tiny.examples == SMALL_CODER_EXAMPLES
    assert "label_each" not in " ".join(code for _, _, code, _, _ in tiny.examples)
    assert "Give ALL the categories" in plus.system and "Give ALL the categories" not in tiny.system
    counts = {query: code for query, _, code, _, _ in plus.examples if query.startswith("How many")}
    assert len(counts) == 1 and "label_each" in next(iter(counts.values()))  # a count of one topic: all topics
    assert {q for q, *_ in tiny.examples} < {q for q, *_ in plus.examples}  # the same questions, and more


def test_from_1b_up_a_question_about_many_records_sees_labels_then_python() -> None:
    """Shown `where`, the 1.5B put conditions over several records into the yes/no question asked of each one ("did
    the user write about billing on two or more occasions?"); shown record examples for every question, it labelled
    the lines of a prose text to find who won a race. So a question whose form says it is about many records gets a
    variant without the yes/no record helpers, whose record examples label each record, then count or group the
    labels per writer in Python; any other question gets the profile itself."""
    plus = PROFILES["small-coder-plus"]
    records = plus.variant(about_records=True)
    assert plus.variant(about_records=False) is plus and records is not plus
    assert PROFILES["small-coder"].variant(about_records=True) is PROFILES["small-coder"]  # the 0.5B: one prompt
    assert "count_where" not in records.system and "`where(" not in records.system
    codes = [code for _, _, code, _, _ in records.examples]
    assert not any("where(" in code for code in codes)
    per_writer = [code for code in codes if "per_writer" in code and "label_each" in code]
    assert len(per_writer) == 3 and any("combinations" in code for code in per_writer)  # n times, every one, pairs
    assert records.examples[:3] == SMALL_CODER_EXAMPLES[:3]  # the fact examples stay


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_every_profile_formats_into_a_system_prompt_and_example_turns(name: str) -> None:
    opening = PROFILES[name].opening(
        context_hint="a str", sub_window=4096, output_chars=2000, allow_rlm_query=True, max_turns=12
    )
    assert opening[0]["role"] == "system" and "{" not in opening[0]["content"].replace("{}", "")
    assert len(opening) == 1 + 4 * len(PROFILES[name].examples)
    assert all(m["content"] for m in opening)
