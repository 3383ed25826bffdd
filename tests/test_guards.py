"""The loop guards, with the scripted LM and the real process worker: preview, data first, non-answers,
pre-imports, error hints, re-sampling of repeated turns, and `guards=False` keeping the old loop."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import pytest
from fakes import ScriptedEngine, repl
from test_run_loop import CONTEXT, run

from rlm_local import prompts
from rlm_local.context import PREVIEW_CHARS, prepare_context
from rlm_local.parsing import extract_code_blocks
from rlm_local.runtime.guards import asked_thing, echoes_query, error_hint, non_answer, wrong_kind

LOOK = repl("print(context[:60])")  # a cell that prints from the data


def shown(engine: ScriptedEngine, turn: int) -> str:
    """What the model was shown before root turn `turn` (1-based): the last user message of that prompt."""
    return engine.root_prompts[turn - 1][-1]["content"]


# ---- 1. preview of the data in the first message -------------------------------------------------------------------
def test_preview_of_a_str_shows_first_and_last_lines(tmp_path: Path):
    lines = [f"record {i}: value {i * 7}" for i in range(50_000)]
    path = tmp_path / "big.txt"
    path.write_text("\n".join(lines) + "\n")  # over 1 MB: read from both ends, not whole
    preview = prepare_context(path).preview()
    assert "in 50,000 lines" in preview and f"{path.stat().st_size:,} characters" in preview
    assert "1| record 0: value 0" in preview and "3| record 2: value 14" in preview
    assert "50000| record 49999: value 349993" in preview and "record 25000" not in preview
    assert len(preview) <= PREVIEW_CHARS


def test_preview_of_a_list_cuts_items_and_stays_bounded():
    docs = [f"document {i} " + "word " * 400 for i in range(40)]
    preview = prepare_context(docs).preview()
    assert "list of str with 40 items" in preview
    assert "context[0] = 'document 0 word" in preview and "context[39] = ..." in preview
    assert "context[20]" not in preview and "(2,011 characters)" in preview
    assert len(preview) <= PREVIEW_CHARS


def test_preview_of_a_dict_samples_keys():
    docs = {f"notes/file{i:02}.txt": f"notes number {i}\n" * 30 for i in range(25)}
    preview = prepare_context(docs).preview()
    assert "Keys (10 of 25): 'notes/file00.txt', 'notes/file01.txt'" in preview and "'notes/file10.txt'" not in preview
    assert "context['notes/file00.txt'] = 'notes number 0\\n" in preview
    assert len(preview) <= PREVIEW_CHARS


def test_preview_never_shows_the_whole_of_a_small_context():
    assert "abcdef" not in prepare_context("abcdef").preview()
    preview = prepare_context("alpha line\nbeta line\n" * 20).preview()
    assert preview.count("alpha") + preview.count("beta") <= 5


def test_first_message_carries_the_preview_but_not_the_middle():
    engine = ScriptedEngine([LOOK, "FINAL(4217)"])
    run(engine)
    first = engine.root_prompts[0][-1]["content"]
    assert "First and last lines" in first and "1| filler text." in first and "4217" not in first


# ---- 2. no answer before code printed from the data ----------------------------------------------------------------
def test_answer_before_looking_is_refused_then_taken_after_printing_from_context():
    engine = ScriptedEngine(["FINAL(4217)", LOOK, "FINAL(4217)"])
    result = run(engine)
    assert result.answer == "4217" and result.turns == 3
    assert prompts.NO_DATA_NOTE in shown(engine, 2) and "filler text" in shown(engine, 3)


def test_a_name_bound_from_context_counts_and_a_cell_without_output_does_not():
    code_final = repl("x = 5\nFINAL(x)")  # a FINAL in code is refused too
    engine = ScriptedEngine([code_final, repl("parts = context.split('. ')"), repl("print(parts[0])"), "FINAL(ok)"])
    result = run(engine)
    assert result.answer == "ok" and result.turns == 4
    assert prompts.NO_DATA_NOTE in shown(engine, 2)


def test_a_cell_that_printed_an_empty_result_has_not_seen_the_data():
    empty_search = repl("print([line for line in context.splitlines() if 'kilometre' in line])")
    engine = ScriptedEngine([empty_search, "FINAL(4217)", LOOK, "FINAL(4217)"])
    result = run(engine)
    assert result.answer == "4217" and result.turns == 4
    assert "[]" in shown(engine, 2) and prompts.NO_DATA_NOTE in shown(engine, 3)


def test_a_model_that_insists_is_believed_after_two_refusals():
    engine = ScriptedEngine(["FINAL(7)", "FINAL(7)", "FINAL(7)"])
    result = run(engine)
    assert result.answer == "7" and result.turns == 3


def test_the_forced_final_turn_takes_any_answer():
    engine = ScriptedEngine(["FINAL(guess)", "FINAL(guess)"])
    result = run(engine, budgets={"max_iterations": 1})
    assert result.answer == "guess" and result.stop_reason == "max_iterations"


# ---- 3. non-answers ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("reply", "kind"),
    [
        ("FINAL(None)", "none"),
        ("FINAL(null)", "none"),
        ("FINAL()", "empty"),
        ("FINAL(Error: the sub-model failed)", "error"),
        ("FINAL(Traceback (most recent call last):\n  line 1\nZeroDivisionError: division by zero)", "traceback"),
        (repl("found = None\nFINAL(found)"), "none"),
        ("```repl\nhits = []\n```\nFINAL_VAR(hits)", "empty"),
        ('FINAL("no output: use print() to see values")', "runtime"),  # a 0.5B copied the runtime's note
    ],
)
def test_non_answers_are_refused_with_the_reason(reply: str, kind: str):
    engine = ScriptedEngine([LOOK, reply, "FINAL(4217)"])
    result = run(engine)
    assert result.answer == "4217" and result.turns == 3
    assert prompts.NON_ANSWER_NOTES[kind] in shown(engine, 3)


def test_non_answer_forms():
    for text in ("None", "null", "", "  ", "[]", "{}", "Error: not run", "x\nTraceback (most recent call last):\n"):
        assert non_answer(text), text
    for text in ("your answer", "Your Answer", "(answer)", "<answer>", "..."):
        assert non_answer(text) == prompts.NON_ANSWER_NOTES["placeholder"], text
    for text in (prompts.NO_OUTPUT, prompts.NO_CODE_RUN, "no code was run"):
        assert non_answer(text) == prompts.NON_ANSWER_NOTES["runtime"], text
    for text in ("4217", "none of them", "0", "False", "Errors were found in 3 files", "no output was logged"):
        assert non_answer(text) is None, text


def test_an_answer_that_only_repeats_the_question_is_refused_once():
    engine = ScriptedEngine([LOOK, "FINAL(2019)", "FINAL(2019)"])
    result = run(engine, query="Which race was held in 2019?")
    assert result.answer == "2019" and result.turns == 3  # refused once, then believed
    assert prompts.ECHO_NOTE in shown(engine, 3)


def test_echo_rules():
    assert echoes_query("2019", "Who won the race held in 2019?")
    assert echoes_query(" The Race ", "Who won the race held in 2019?")
    assert not echoes_query("Ada Moss", "Who won the race held in 2019?")
    query = "I'm looking for the function that converts a distance in kilometres to miles. What is it called?"
    assert echoes_query("convert distance kilometres miles", query)  # the question's words, reordered
    assert not echoes_query("normalize_entry", query)
    assert not echoes_query("billing", "Is billing or shipping more common?")  # options are answers
    assert not echoes_query("no", "Did the team win? Answer yes or no.")


def test_an_answer_of_the_wrong_kind_is_refused_once():
    engine = ScriptedEngine([LOOK, "FINAL(0)", "FINAL(Ada Moss)"])
    result = run(engine, query="Who won the race?")
    assert result.answer == "Ada Moss" and prompts.WRONG_KIND_NOTES["name"] in shown(engine, 3)
    assert "how many" not in prompts.WRONG_KIND_NOTES["name"]  # only what this question asks (a 0.5B copied them)
    assert wrong_kind("several", "How many tickets are open?") == "number" and not wrong_kind("3", "How many open?")
    assert not wrong_kind("12 tickets", "How many tickets are open?") and not wrong_kind("0", "Which year?")
    assert wrong_kind("42", "Who sent it?") and not wrong_kind("user_42", "Who sent it?")
    assert wrong_kind("7", "In 2004, who came out on top at the fair?")  # "who" need not come first
    assert not wrong_kind("7", "How many people who signed up came?")  # a "who" clause in a "how many" question
    assert (
        wrong_kind("2", "Which garage codes appear in these notes?") == "values" == wrong_kind("3", "What are the ids?")
    )
    assert not wrong_kind("PLA-5704, RYV-4725", "Which garage codes appear in these notes?")
    engine = ScriptedEngine([LOOK, "FINAL(2)", "FINAL(PLA-5704)"])  # the note names what this question asks for
    assert run(engine, query="Which garage codes appear in these notes?").answer == "PLA-5704"
    assert "the garage codes themselves" in shown(engine, 3) and "values" not in shown(engine, 3)
    assert asked_thing("What project codes are mentioned?") == "project codes"
    assert asked_thing("What is the code?") == asked_thing("List the codes.") == "things it names"
    assert not wrong_kind("4821", "What is the PIN for the side door?")  # one thing, which may be a number
    least = "Which topic comes up least often (billing, shipping, account or praise)?"
    assert wrong_kind("P, l, V, A, T", least) == "options" and wrong_kind("the topic with the fewest messages", least)
    assert wrong_kind("reports/summary.md", "Who wrote the report?") == "file"
    assert not wrong_kind("Shipping", least) and not wrong_kind("shipping (4 messages)", least)
    assert wrong_kind("dataflow/reports/handler_tasks.py", "Which function returns the median? Which one is it?")
    assert wrong_kind("notes.txt", "Who signed the lease?") and not wrong_kind("notes.txt", "Which file says so?")
    assert not wrong_kind("J. R. Smith", "Who signed?") and not wrong_kind("v1.2", "Which version shipped?")
    assert not wrong_kind("archive_buffer", "Which function calls flush?")
    assert wrong_kind("io/rows.py, reports/tasks.py", "Which function sorts the rows?")
    assert not wrong_kind("io/rows.py, sort_rows", "Which function sorts the rows?")


def test_a_refusal_after_a_final_is_shown_without_an_output_section():
    engine = ScriptedEngine([LOOK, "FINAL(None)", "FINAL(4217)"])
    run(engine)
    assert shown(engine, 3).startswith(prompts.NON_ANSWER_NOTES["none"]) and "Output:" not in shown(engine, 3)


# ---- 4. pre-imported modules ---------------------------------------------------------------------------------------
def test_common_modules_are_there_without_import_and_hidden_from_show_vars():
    code = (
        "print(re.findall(r'number is (\\d+)', context), json.dumps([1]), math.isqrt(16), Counter('aab')['a'],\n"
        "      defaultdict(int)['k'], list(itertools.islice(range(9), 2)), collections.deque([3]))\n"
        "mine = 1\nSHOW_VARS()"
    )
    engine = ScriptedEngine([repl(code), "FINAL(4217)"])
    run(engine)
    out = shown(engine, 2)
    assert "['4217'] [1] 4 2 0 [0, 1] deque([3])" in out and "mine: int" in out
    assert "Counter" not in out.split("deque([3])")[1] and "defaultdict" not in out.split("deque([3])")[1]


# ---- 5. hints after a traceback ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("context", "code", "hint"),
    [
        ({"a.txt": "alpha " * 50, "b.txt": "beta " * 50}, "print(context.lower())", "context.values()"),
        ({"a.txt": "alpha " * 50}, "print(re.findall('alpha', context))", "context.values()"),
        (["alpha " * 50, "beta " * 50], "print(context.split('\\n'))", "'\\n'.join(context)"),
        (CONTEXT, "print(os.getcwd())", "Hint: add `import os`"),
        (CONTEXT, "print(llm_query('a', 'b'))", "llm_query(prompt: str"),
        (CONTEXT, "print(split_text())", "split_text(data: str | list | dict, max_chars"),
        (CONTEXT, "print(llm_query_batched())", "llm_query_batched(prompts: list[str]"),
    ],
)
def test_error_hints(context, code: str, hint: str):
    engine = ScriptedEngine([repl(code), "FINAL(x)"])
    run(engine, context=context, query="q?")
    out = shown(engine, 2)
    assert "Traceback" in out and hint in out


def test_hints_follow_the_real_context_type():
    error = "Traceback (most recent call last):\nAttributeError: 'dict' object has no attribute 'lower'"
    assert "dict" in error_hint(error, "dict")
    assert error_hint(error, "str") is None  # a dict the model made itself: no advice about `context`
    assert error_hint("NameError: name 'foo' is not defined", "str") is None


# ---- 6. re-sampling a repeated turn --------------------------------------------------------------------------------
def test_a_repeated_cell_is_resampled_and_not_appended():
    repeated = repl("print(context[:40])")

    def sampled(options) -> str:  # the first candidate repeats too, the second fails, the others try something new
        if options.seed % 1000 == 2:
            raise RuntimeError("engine hiccup")
        return repeated if options.seed % 1000 == 1 else repl(f"print('seed', {options.seed}, len(context))")

    engine = ScriptedEngine([repeated, repeated, "FINAL(4217)"], sampled=sampled)
    result = run(engine)
    assert result.answer == "4217" and result.turns == 3
    assert [o.temperature for o in engine.sampled_options] == [0.7] * 4
    assert len({o.seed for o in engine.sampled_options}) == 4
    last = engine.root_prompts[2]
    assert sum(m["content"] == repeated for m in last) == 1  # the repeat was never appended
    assert f"seed 2003 {len(CONTEXT)}" in last[-1]["content"]
    assert all(later[: len(earlier)] == earlier for earlier, later in pairwise(engine.root_prompts))
    assert result.usage.root_calls == 3 + 3  # every candidate that came back is paid for
    turn = [e for e in result.trajectory if e["event"] == "turn"][1]
    assert turn["resampled"] == 4 and turn["replaced"] == repeated


def test_a_repeated_non_answer_is_resampled():
    engine = ScriptedEngine([LOOK, "FINAL(None)", "FINAL(None)"], sampled=lambda options: "FINAL(4217)")
    result = run(engine)
    assert result.answer == "4217" and result.turns == 3 and len(engine.sampled_options) == 4


def test_when_every_candidate_repeats_the_reply_stays_with_a_note():
    engine = ScriptedEngine([LOOK, LOOK, "FINAL(4217)"])  # sampled replies default to the same reply
    result = run(engine)
    assert result.answer == "4217" and len(engine.sampled_options) == 4
    assert prompts.REPEATED_CODE_NOTE in shown(engine, 3)
    assert [e.get("resampled") for e in result.trajectory if e["event"] == "turn"] == [None, 4, None]


# ---- 7. a copied worked example -------------------------------------------------------------------------------------
EXAMPLE_COUNT = repl(next(e[2] for e in prompts.SMALL_CODER_EXAMPLES if "count_where" in e[2]))  # counts tickets
EXAMPLE_SEARCH = repl(prompts.SMALL_CODER_EXAMPLES[0][2])  # the one that searches for a guest's name


def test_a_copied_worked_example_is_resampled_and_never_run():
    fresh = repl("print(re.findall(r'secret number is (\\d+)', context))")
    engine = ScriptedEngine([EXAMPLE_COUNT, "FINAL(4217)"], sampled=lambda options: fresh)
    result = run(engine, profile="small-coder")
    assert result.answer == "4217"
    asked = [e["prompt_preview"] for e in result.trajectory if e["event"] == "subcall"]
    assert not any("signing in" in p for p in asked), asked  # count_where over every record never ran
    turn = next(e for e in result.trajectory if e["event"] == "turn")
    assert turn["replaced"] == EXAMPLE_COUNT and turn["code"] == extract_code_blocks(fresh)
    assert "['4217']" in shown(engine, 2)


def test_a_copied_example_that_every_candidate_repeats_is_not_run_and_the_model_is_told():
    engine = ScriptedEngine([EXAMPLE_SEARCH, LOOK, "FINAL(4217)"])  # sampled replies copy it too
    result = run(engine, profile="small-coder")
    assert result.answer == "4217" and len(engine.sampled_options) == 4
    note = prompts.COPIED_EXAMPLE_NOTE.format(query="What is the secret number?")
    assert note in shown(engine, 2) and "Output:" not in shown(engine, 2)  # nothing ran, so nothing to show
    assert next(e["outputs"] for e in result.trajectory if e["event"] == "turn") == []


def test_asking_a_helper_an_example_question_is_a_copy_too():
    hotel = prompts.SMALL_CODER_EXAMPLES[0][0]  # the example's question, not its code
    copied = [repl(f"print(ask_all({hotel!r}))"), repl('print(search("Amara Osei"))')]
    for cell in copied:
        engine = ScriptedEngine([cell, LOOK, "FINAL(4217)"])
        result = run(engine, profile="small-coder")
        assert result.answer == "4217" and len(engine.sampled_options) == 4, cell
        assert next(e["outputs"] for e in result.trajectory if e["event"] == "turn") == []


def test_a_worked_examples_answer_is_refused_and_never_taken_from_a_resample():
    hotel = prompts.SMALL_CODER_EXAMPLES[0][4]  # "Hotel Meridian"
    engine = ScriptedEngine([LOOK, f"FINAL({hotel})", "FINAL(4217)"], sampled=lambda options: f"FINAL({hotel})")
    result = run(engine, profile="small-coder")
    assert result.answer == "4217" and prompts.EXAMPLE_ANSWER_NOTE in shown(engine, 3)
    repeated = ScriptedEngine([LOOK, "FINAL(cust_17, cust_88, cust_17, cust_88)", "FINAL(4217)"])
    assert prompts.SMALL_CODER_EXAMPLES[4][-1] == "cust_17, cust_88"  # the example's list, given twice over
    assert run(repeated, profile="small-coder").answer == "4217"
    insisted = ScriptedEngine([LOOK, *[f"FINAL({hotel})"] * 3])  # every reply, re-sampled or not
    assert run(insisted, profile="small-coder").answer == hotel  # believed after two refusals: no deadlock


def test_plain_words_and_the_questions_own_words_are_not_copies():
    cells = [repl('print(search("context"))'), repl('print(count_where("Is this about the secret number?"))')]
    for cell in cells:
        engine = ScriptedEngine([cell, "FINAL(4217)"])
        run(engine, profile="small-coder")
        assert engine.sampled_options == [], cell


def test_an_example_word_that_the_question_itself_uses_is_not_a_copy():
    engine = ScriptedEngine([EXAMPLE_SEARCH, "FINAL(Hotel Meridian)"])
    context = "Travel note: Dr. Amara Osei checked into the Hotel Meridian. " + CONTEXT
    result = run(engine, context=context, query="Where did Osei stay?", profile="small-coder")
    assert result.answer == "Hotel Meridian" and engine.sampled_options == []
    assert "Hotel Meridian" in shown(engine, 2)


def test_guards_off_do_not_look_for_copied_examples():
    engine = ScriptedEngine([EXAMPLE_SEARCH, "FINAL(4217)"])
    result = run(engine, profile="small-coder", guards=False)
    assert engine.sampled_options == [] and prompts.COPIED_EXAMPLE_NOTE[:20] not in shown(engine, 2)
    assert result.answer == "4217"


# ---- guards=False: the loop as it was ------------------------------------------------------------------------------
def test_guards_off_keeps_the_old_loop():
    code = "print(re.findall('x', 'x'))"
    replies = [repl(code), repl(code), "FINAL(None)", "FINAL(None)"]  # the first FINAL is sent back: code failed
    engine = ScriptedEngine(replies, sampled=lambda options: "FINAL(4217)")
    result = run(engine, guards=False)
    assert result.answer == "None" and result.turns == 4  # taken though nothing was printed from `context`
    first = engine.root_prompts[0][-1]["content"]
    assert "First and last" not in first and f"is a str of {len(CONTEXT):,} characters. Write code" in first
    assert "NameError: name 're' is not defined" in shown(engine, 2) and "Hint" not in shown(engine, 2)
    assert engine.sampled_options == [] and prompts.REPEATED_CODE_NOTE in shown(engine, 3)


# ---- answer check: the final answer against the output it was read from --------------------------------------------
CHECKED = {"search": repl("print([k + ': ' + v for k, v in context.items() if 'code' in v])")}
NOTES = {"notes/day-0005.txt": "If anyone asks for the garage code, tell them it is LTR-1412.", "notes/a.txt": "rain"}


def _checker(reply: str):
    return lambda prompt: reply if prompt.startswith("What a program printed") else "no"


def test_the_check_replaces_a_label_copied_from_the_output_with_the_answer_in_it():
    engine = ScriptedEngine([CHECKED["search"], "FINAL([notes/day-0005.txt])"], sub=_checker("LTR-1412"))
    result = run(engine, context=NOTES, query="What is the garage code?")
    assert result.answer == "LTR-1412"


def test_the_check_keeps_a_printed_number_and_never_takes_a_part_of_another_number():
    counted = repl("hail = context.count('hail')\nprint('records: 16')\nprint(hail)")
    engine = ScriptedEngine([counted, "FINAL(0)"], sub=_checker("1"))  # '1' is only a part of the printed '16'
    assert run(engine, query="How many records mention hail?").answer == "0"
    engine = ScriptedEngine([counted, "FINAL(0)"], sub=_checker("16"))  # another printed number: the model's stays
    assert run(engine, query="How many records mention hail?").answer == "0"


def test_the_check_does_not_shrink_an_answer_that_names_several_things():
    found = repl("print([v for v in context.values() if 'code' in v])")
    notes = {"a.txt": "One voucher code is VAP-5460.", "b.txt": "Add OIP-4411 to the list of voucher codes."}
    engine = ScriptedEngine([found, "FINAL(VAP-5460, OIP-4411)"], sub=_checker("VAP-5460"))
    assert run(engine, context=notes, query="Which voucher codes appear in these notes?").answer == "VAP-5460, OIP-4411"


def test_the_check_keeps_a_choice_between_printed_values():
    """Measured: a 1.5B root read `[('shipping', 104), ('billing', 86), ...]` and answered shipping; the check's
    sub-call answered billing and replaced it."""
    topics = "\n".join(["shipping"] * 3 + ["billing"] * 2 + ["account"])
    counted = repl("print(Counter(context.split()).most_common())")
    query = "Which topic comes up most often (billing, shipping or account)?"
    engine = ScriptedEngine([counted, "FINAL(shipping)"], sub=_checker("billing"))
    assert run(engine, context=topics, query=query).answer == "shipping"  # one of the question's own options
    engine = ScriptedEngine([counted, "FINAL(shipping)"], sub=_checker("billing"))
    assert run(engine, context=topics, query="Which topic is the most common?").answer == "shipping"  # printed value
    listed = repl("print([w for w, n in Counter(context.split()).items() if n > 1])")
    engine = ScriptedEngine([listed, "FINAL(shipping, billing)"], sub=_checker("shipping"))
    assert run(engine, context=topics, query="Which topics come up twice?").answer == "shipping, billing"
