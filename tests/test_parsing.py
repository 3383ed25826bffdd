from rlm_local.parsing import extract_code_blocks, find_final, strip_think
from rlm_local.truncation import WORKER_CUT_MARKER, truncate_output


def test_repl_and_python_fences_several_blocks():
    text = "a\n```repl\nx = 1\n```\nthen\n```python\nprint(x)\n```\n"
    assert extract_code_blocks(text) == ["x = 1", "print(x)"]


def test_unclosed_last_fence_is_code():
    assert extract_code_blocks("```repl\nprint(len(context))\n") == ["print(len(context))"]


def test_untagged_fence_only_when_python():
    assert extract_code_blocks("```\nprint(1)\n```") == ["print(1)"]
    assert extract_code_blocks("```\nthis is : not python (\n```") == []


def test_other_languages_are_not_run():
    assert extract_code_blocks("```bash\nrm -rf /\n```\n```json\n{}\n```") == []


def test_final_outside_code():
    final = find_final("I found it.\nFINAL(7731-ALPHA)")
    assert final is not None and final.value == "7731-ALPHA" and not final.is_variable


def test_final_with_nested_parentheses_and_quotes():
    assert find_final('FINAL("f(x) = 2")').value == "f(x) = 2"
    assert find_final("FINAL(the sum (of all) is 3)").value == "the sum (of all) is 3"


def test_final_var():
    final = find_final("Done.\nFINAL_VAR(result)")
    assert final is not None and final.is_variable and final.value == "result"
    assert find_final("FINAL_VAR('answer')").value == "answer"


def test_final_inside_a_fence_is_not_an_answer():
    text = "```repl\nprint('FINAL(42)')\n# FINAL(42)\n```"
    assert find_final(text) is None


def test_final_inside_unclosed_fence_is_not_an_answer():
    assert find_final("```python\nx = 1\nFINAL(x)") is None


def test_final_at_line_start_wins_over_prose():
    text = "I will call FINAL(x) later.\nFINAL(real answer)"
    assert find_final(text).value == "real answer"


def test_unclosed_final_takes_the_rest():
    assert find_final("FINAL(Paris").value == "Paris"


def test_think_is_stripped():
    assert strip_think("<think>FINAL(wrong)</think>FINAL(right)") == "FINAL(right)"
    assert strip_think("reasoning FINAL(no)</think>\nFINAL(yes)") == "FINAL(yes)"
    assert strip_think("<think>never closed FINAL(x)") == ""


def test_truncation_keeps_head_and_tail_and_true_length():
    text = "".join(f"line {i}\n" for i in range(10_000))
    shown = truncate_output(text, 1000)
    assert shown.startswith("line 0\n")
    assert shown.rstrip().endswith("line 9999")
    assert f"{len(text):,} characters" in shown
    assert len(shown) < 1200


def test_truncation_leaves_short_output_alone():
    assert truncate_output("hello", 1000) == "hello"


def test_truncation_of_worker_cut_output_reports_true_length():
    text = "H" * 500 + WORKER_CUT_MARKER + "T" * 500
    shown = truncate_output(text, 400, true_chars=100_000_000)
    assert shown.startswith("H" * 240) and shown.endswith("T" * 160)
    assert "100,000,000 characters" in shown
