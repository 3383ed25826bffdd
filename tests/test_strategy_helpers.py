"""The REPL's strategy helpers on str, list and dict contexts, with a scripted sub-model."""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sandbox"))

import rlm_helpers
from rlm_helpers import Strategies, items, pieces, rank, search

RECORDS = [
    "2024-01-02 | ana | The parcel came two weeks late and the box was crushed.",
    "2024-01-03 | bo | Thanks, the new blender works perfectly!",
    "2024-01-04 | ana | Still waiting for my delivery, nobody answers the phone.",
    "2024-01-05 | cy | Why was I charged twice this month?",
]


def sub_model(prompt: str) -> str:
    """Answers like a careful small model: 'yes' for delivery trouble, a topic label, or a reading."""
    record = prompt.rsplit("Record:\n", 1)[-1]
    if "(one of: yes, no)" in prompt:
        return "Yes." if any(w in record for w in ("late", "delivery")) else "no"
    if "(one of:" in prompt:
        return "shipping" if "late" in record or "delivery" in record else "billing"
    if "Several parts" in prompt:  # choosing among equally supported findings
        return "Mira Kessel"
    piece = prompt.split("Text:\n", 1)[-1].split("\n\nQuestion:", 1)[0]
    if "Kessel" in piece:
        return "Mira Kessel."
    return "a meeting" if "meeting" in piece else "Olaf Brandt"  # words of the piece, or made up


def strategies(context):
    calls: list[list[str]] = []

    def batched(prompts: list[str]) -> list[str]:
        calls.append(prompts)
        return [sub_model(p) for p in prompts]

    namespace = {"context": context}
    namespace.update(Strategies(batched, namespace).helpers())
    return namespace, calls


def test_items_and_pieces_take_every_context_shape():
    text = "\n".join(RECORDS)
    assert items(text) == RECORDS == items(RECORDS)
    assert items({"r1": "x", "r2": "y"}) == ["r1: x", "r2: y"]
    long_text = "word " * 10_000
    parts = pieces(long_text, 2_000)
    assert all(len(p) <= 2_000 for p in parts) and "".join(parts) == long_text
    assert pieces(RECORDS, 1_000) == ["\n".join(RECORDS)]  # short records are packed into one piece


def test_search_finds_words_in_any_shape_with_keys():
    hits = search(["late", "CHARGED"], "\n".join(RECORDS))  # the sentence or line that holds each match
    assert hits == ["2024-01-02 | ana | The parcel came two weeks late and the box was crushed.", RECORDS[3]]
    prose = "Filler words here. Remember this: the code is QX-1. More filler follows."
    assert search("the code", prose) == ["Remember this: the code is QX-1."]
    hits = search("charged", {"a.txt": "nothing here", "b.txt": "you were charged twice"})
    assert hits == ["[b.txt] you were charged twice"]
    assert search([], RECORDS) == []
    notes = "One of the access codes is UIT-43. KX-9 is also a valid access\ncode. Parties went on."
    assert search("access codes", notes) == ["One of the access codes is UIT-43.", "KX-9 is also a valid access code."]
    assert search("parties", notes) == ["Parties went on."] and search("boxes", RECORDS)[0].endswith("crushed.")


def test_search_for_a_whole_question_falls_back_to_its_words_best_match_first():
    notes = {
        "a.txt": "The token bus left at noon.",
        "b.txt": "Remember this: the session token is 33cb-77.",
        "c.txt": "A long session of the council.",
    }
    hits = search("What is the session token?", notes)
    assert hits[0] == "[b.txt] Remember this: the session token is 33cb-77." and len(hits) == 3
    assert search("What is the recovery key?", notes) == []  # none of its words is there
    assert search(["refund"], RECORDS) == []  # one word that is not there: nothing to fall back to


def test_count_where_and_where_read_every_record_in_one_batch():
    ns, calls = strategies(RECORDS)
    assert ns["count_where"]("Is this about a late delivery? Answer yes or no.") == 2
    assert len(calls) == 1 and len(calls[0]) == len(RECORDS)
    assert [r.split(" | ")[1] for r in ns["where"]("Late delivery?")] == ["ana", "ana"]


def test_label_each_maps_answers_to_the_given_labels():
    ns, _ = strategies({f"k{i}": r for i, r in enumerate(RECORDS)})
    labels = ns["label_each"]("Which topic?", ["shipping", "billing"])
    assert Counter(labels) == Counter({"shipping": 2, "billing": 2})
    assert rlm_helpers._to_label("I think it is Billing.", ["shipping", "billing"]) == "billing"
    assert rlm_helpers._to_label("no idea", ["shipping", "billing"]) == "other"


def scored_strategies(context, likely: str):
    """Helpers whose sub-model gives P(yes) 0.9 to the pieces containing `likely` and 0.1 to the rest."""
    ns, calls = strategies(context)
    scored: list[list[str]] = []

    def choose(prompts: list[str], choices: list[str]) -> list[dict[str, float]]:
        assert choices == ["yes", "no"]
        scored.append(prompts)
        return [{"yes": 0.9, "no": 0.1} if likely in p else {"yes": 0.1, "no": 0.9} for p in prompts]

    namespace = {"context": context}
    batched = ns["ask_all"].__self__._batched
    namespace.update(Strategies(batched, namespace, choose).helpers())
    return namespace, calls, scored


def test_ask_all_scores_every_piece_then_reads_only_the_likeliest():
    docs = {f"doc{i}.md": "Boring minutes of a meeting. " * 50 for i in range(30)}
    docs["doc17.md"] = "Mira Kessel crossed first at the regatta."  # shares no word with the question
    ns, calls, scored = scored_strategies(docs, "regatta")
    assert ns["ask_all"]("Who won the boat contest?") == "Mira Kessel"
    assert [len(s) for s in scored] == [len(pieces(docs, rlm_helpers.CLOSE_CHARS))]  # every piece scored once
    assert len(calls) == 1 and len(calls[0]) == rlm_helpers.READ_FIRST and "regatta" in calls[0][0]


def test_in_a_long_context_only_the_pieces_bm25_ranks_highest_are_scored():
    docs = {f"doc{i}.md": f"Minutes of meeting {i}: nothing was decided. " * 25 for i in range(100)}
    docs["doc71.md"] = "The regatta was held in a storm. Mira Kessel won the regatta by a length."
    ns, calls, scored = scored_strategies(docs, "Mira Kessel")
    assert ns["ask_all"]("Who won the regatta?") == "Mira Kessel"
    assert len(pieces(docs, rlm_helpers.CLOSE_CHARS)) > rlm_helpers.MAX_SCORED
    assert [len(s) for s in scored] == [rlm_helpers.MAX_SCORED]
    assert "Mira Kessel" in calls[0][0]  # BM25 let the piece into the scored set, P(yes) put it first


def test_ask_all_reads_further_pieces_when_the_likeliest_hold_no_answer_written_there():
    docs = {f"doc{i}.md": f"Filler text {i} without a clue. " * 50 for i in range(12)}  # answers made up: dropped
    docs["doc9.md"] = "Mira Kessel crossed first at a regatta."
    ns, calls, _ = scored_strategies(docs, "Filler text 3 ")  # the likeliest piece says nothing
    assert ns["ask_all"]("Who won the boat contest?") == "Mira Kessel"
    assert [len(c) for c in calls][:2] == [rlm_helpers.READ_FIRST, 2 * rlm_helpers.READ_FIRST]
    none_ns, _, _ = scored_strategies({"a": "nothing relevant"}, "x")
    assert none_ns["ask_all"]("Who won?") == "NONE"


def test_ask_all_keeps_an_answer_given_after_the_question_s_own_words():
    """The sub-model restated the question ("The voucher code is TUI-8001.") where the text words it otherwise:
    the part after the restatement is what is written there; a lead-in of other words is not cut."""
    piece = "Boring notes. The voucher code, in case it gets lost again, is TUI-8001. More notes."
    question = "Somewhere in these notes is the voucher code; what is it?"
    assert rlm_helpers._as_copied(question, "The voucher code is TUI-8001", piece) == "TUI-8001"
    assert rlm_helpers._as_copied(question, "voucher code: TUI-8001", piece) == "TUI-8001"
    assert rlm_helpers._as_copied(question, "TUI-8001", piece) == "TUI-8001"
    assert rlm_helpers._as_copied(question, "The parking permit is TUI-8001", piece) == "The parking permit is TUI-8001"

    def reader(prompts: list[str]) -> list[str]:
        return ["The voucher code is TUI-8001." if "TUI" in p else "Boring notes" for p in prompts]

    docs = {f"day{i}.txt": "Boring notes about the weather. " * 40 for i in range(6)}
    docs["day4.txt"] = piece
    namespace = {"context": docs}
    namespace.update(Strategies(reader, namespace).helpers())
    assert namespace["ask_all"](question) == "TUI-8001"


def test_ask_all_keeps_the_items_of_a_list_reply_written_in_the_piece_and_no_cut_codes():
    """A 0.5B read "IZO-2339" and replied "IZO-2339, OZI-2339", and replied "RV-3100, RRV-3101" for "RRV-3100":
    the written item counts, a code copied with one character wrong is the piece's; a code cut from a longer one
    does not count."""
    piece = "Day 3: the access code IZO-2339 opens the shed. Day 4: the code RRV-3100 is for the gate."
    question = "Which access codes appear in these notes?"
    assert rlm_helpers._copied_values(question, "IZO-2339, OZI-2339", piece) == ["IZO-2339"]
    assert rlm_helpers._copied_values(question, "RV-3100, RRV-3101", piece) == ["RRV-3100"]  # one character off
    assert rlm_helpers._copied_values(question, "RRV-3111", piece) == ["RRV-3111"]  # two: not the piece's code
    assert rlm_helpers._copied_values(question, "the shed", piece) == ["the shed"]
    assert rlm_helpers.support(question, "RV-3100", piece) == -1 and rlm_helpers.support(question, "3100", piece) == -1
    assert rlm_helpers.support(question, "RRV-3100", piece) >= 0
    assert rlm_helpers.support("Who opens it?", "shed", piece) >= 0  # a word needs no boundary: plurals, stems

    def reader(prompts: list[str]) -> list[str]:
        return ["IZO-2339, OZI-2339" if "IZO" in p else "NONE" for p in prompts]

    docs = [f"Day {i}: " + "the weather was mild. " * 60 for i in range(6)]
    docs[3] = piece
    namespace = {"context": docs}
    namespace.update(Strategies(reader, namespace).helpers())
    assert namespace["ask_all"](question) == "IZO-2339"


def test_ask_all_gives_every_likely_value_for_a_question_that_asks_for_several():
    docs = [f"Note {i}: " + ("the weather was mild. " * 60) for i in range(8)]
    docs[2] = "Note 2: Mira Kessel wrote the garage code down."
    docs[6] = "Note 6: the other garage code came up at a meeting."
    assert rlm_helpers.asks_for_several("What are all the garage codes?")
    assert rlm_helpers.asks_for_several("Which names are mentioned with garage codes?")
    assert not rlm_helpers.asks_for_several("What is the garage code?")
    ns, _, _ = scored_strategies(docs, "garage code")
    assert ns["ask_all"]("Which names are mentioned with garage codes?") == "Mira Kessel, a meeting"
    assert ns["ask_all"]("Who wrote down the garage code?") == "Mira Kessel"  # one answer: the likeliest piece's


def test_for_several_things_ask_all_reads_every_piece_that_names_them_when_no_piece_looks_likely():
    """A 0.5B's P(yes) stays under 0.5 everywhere: the pieces that name what is asked for are read all the same."""
    docs = [f"Note {i}: " + ("the weather was mild and the river was calm. " * 30) for i in range(12)]
    for i, code in ((1, "KQX-1234"), (5, "ZOI-2156"), (8, "RRV-3100"), (10, "DUG-3175")):
        docs[i] = f"Note {i}: nothing much. Remember the access code {code} for the side door. " * 3
    calls: list[list[str]] = []

    def read(prompts: list[str]) -> list[str]:  # copies a code when the piece has one
        calls.append(prompts)
        return [(re.findall(r"[A-Z]{3}-\d{4}", p.split("Question:")[0]) or ["NONE"])[0] for p in prompts]

    def unsure(prompts: list[str], choices: list[str]) -> list[dict[str, float]]:
        return [{"yes": 0.1, "no": 0.9} for _ in prompts]

    ask_all = Strategies(read, {"context": docs}, unsure).helpers()["ask_all"]
    assert sorted(ask_all("Which access codes appear in these notes?").split(", ")) == [
        "DUG-3175", "KQX-1234", "RRV-3100", "ZOI-2156"
    ]  # fmt: skip
    assert len(calls) == 1  # one batch: the BM25 matches and the three likeliest pieces


def test_of_several_answers_ask_all_takes_the_literal_match_or_else_the_likeliest_piece():
    docs = {f"doc{i}.md": "Notes on the weather, nothing more. " * 40 for i in range(6)}
    docs["doc2.md"] = "The 2021 regatta at Port Elling went to Mira Kessel. Fishing boats lined the quay."
    docs["doc4.md"] = "Olaf Brandt won the 2021 chess open in Kelby."
    ns, calls, _ = scored_strategies(docs, "regatta")  # the sub-model finds the regatta report the likeliest
    # asked in other words than the report's: the likeliest piece's answer, not the decoy's shared 'won' and '2021'
    assert ns["ask_all"]("Who won the sailing race held in the harbour town in 2021?") == "Mira Kessel"
    # asked in the data's own words: the answer with the question's words around it, whatever the scores say
    assert ns["ask_all"]("Who won the chess open in Kelby in 2021?") == "Olaf Brandt"
    assert all(any("Olaf Brandt" in p for p in c) and any("Kessel" in p for p in c) for c in calls)  # both read


def test_without_scores_ask_all_orders_pieces_by_bm25():
    docs = {f"doc{i}.md": "Boring minutes of a meeting. " * 50 for i in range(30)}
    docs["doc17.md"] = "At the sailing race Mira Kessel was first across the line."
    ns, calls = strategies(docs)
    assert ns["ask_all"]("Who won the sailing race?") == "Mira Kessel"
    assert len(calls) == 1 and "sailing race" in calls[0][0]  # the best BM25 piece is read first


def test_label_each_takes_the_likeliest_label_when_scores_are_given():
    namespace = {"context": RECORDS}

    def choose(prompts, choices):
        return [
            {"shipping": 0.6, "billing": 0.4} if "late" in p else {"shipping": 0.3, "billing": 0.7} for p in prompts
        ]

    helpers = Strategies(lambda prompts: ["unused"] * len(prompts), namespace, choose).helpers()
    assert helpers["label_each"]("What is this about?", ["shipping", "billing"]) == [
        "shipping", "billing", "billing", "billing"
    ]  # fmt: skip


def test_label_each_divides_out_the_sub_models_lean_towards_a_label_but_not_for_yes_no():
    kinds = ["late parcel", "double charge", "kind words"] * 10
    namespace = {"context": [f"2024-01-{i % 28 + 1:02d} | u{i} | {k}" for i, k in enumerate(kinds)]}
    lean = {"shipping": 0.5, "billing": 0.3, "praise": 0.2}  # the sub-model's preference, whatever the record
    truth = {"late parcel": "shipping", "double charge": "billing", "kind words": "praise"}

    def choose(prompts, choices):
        if choices == ["yes", "no"]:  # 3 of 30 records meet the condition: they stay the only yes
            return [{"yes": 0.6, "no": 0.4} if "u0 " in p or "u1 " in p or "u2 " in p else {"yes": 0.1, "no": 0.9}
                    for p in prompts]  # fmt: skip
        out = []
        for p in prompts:
            right = next(label for kind, label in truth.items() if kind in p)
            raw = {n: lean[n] * (1.6 if n == right else 1.0) for n in choices}
            out.append({n: v / sum(raw.values()) for n, v in raw.items()})
        return out  # raw argmax: "shipping" for every record

    helpers = Strategies(lambda prompts: ["unused"] * len(prompts), namespace, choose).helpers()
    labels = helpers["label_each"]("What is this message about?", ["shipping", "billing", "praise"])
    assert labels == [truth[k] for k in kinds]
    assert helpers["count_where"]("Is this about a late parcel? Answer yes or no.") == 3
    few = Strategies(lambda prompts: ["unused"] * len(prompts), {"context": namespace["context"][:6]}, choose)
    assert few.helpers()["label_each"]("About?", ["shipping", "billing", "praise"]).count("shipping") == 6


def test_label_each_without_calibration_keeps_a_rare_label_rare():
    """One record of thirty is about billing: calibrated, every record leaning a little towards billing gets it."""
    namespace = {"context": [f"2024-01-{i + 1:02d} | u{i} | {'double charge' if i == 0 else 'late parcel'}"
                             for i in range(30)]}  # fmt: skip

    def choose(prompts, choices):
        bills = [0.15 + 0.02 * (i % 5) for i in range(len(prompts))]
        leaning = [{"shipping": 0.9 - b, "billing": b, "praise": 0.1} for b in bills]
        leaning[0] = {"shipping": 0.2, "billing": 0.7, "praise": 0.1}
        return leaning

    helpers = Strategies(lambda prompts: ["unused"] * len(prompts), namespace, choose).helpers()
    labels = ["shipping", "billing", "praise"]
    assert helpers["label_each"]("About?", labels).count("billing") > 1
    assert helpers["label_each"]("About?", labels, calibrate=False) == ["billing"] + ["shipping"] * 29


def test_the_per_person_program_counts_records_against_the_one_most_clearly_about_the_label():
    """The asked-for topic is rare and a broad category ('support') is every record's likeliest label: a record
    counts when its P(topic) is at least half that of the record most clearly about the topic."""
    from itertools import combinations

    from rlm_local.runtime.guards import PREIMPORT_CODE
    from rlm_local.runtime.structured import Plan as StructuredPlan
    from rlm_local.runtime.structured import person_rule, program

    users = ["ana", "bo", "cy", "dee", "eli", "fay"]
    context = [f"2024-02-{i + 1:02d} | {users[i % 6]} | message {i}" for i in range(30)]
    billing = {0: 0.40, 7: 0.30, 13: 0.22}  # ana, bo and bo again; everyone else under 0.1

    def choose(prompts, choices):
        if choices == ["yes", "no"]:
            return [{"yes": 0.0, "no": 1.0} for _ in prompts]
        tables = []
        for prompt in prompts:
            i = int(prompt.rsplit("message ", 1)[1].split()[0])
            p = billing.get(i, 0.02 + 0.002 * i)
            tables.append({"billing": p, "support": 0.9 - p, "praise": 0.1, "other": 0.0})
        return tables

    def batched(prompts, **_):
        return ["billing, support, praise" for _ in prompts]  # categories()

    namespace = {"context": context}
    namespace.update(Strategies(batched, namespace, choose).helpers())
    exec(PREIMPORT_CODE, namespace)
    finals: list[str] = []
    namespace["FINAL"] = finals.append
    for query, expected in (
        ("Which users wrote about billing at least twice?", "bo"),
        (
            "Which pairs of users both wrote about billing?",
            "\n".join(f"{a} & {b}" for a, b in combinations(["ana", "bo"], 2)),
        ),
    ):
        people, about_one = person_rule(query)
        plan = StructuredPlan("LIST", "Is this about billing? Answer yes or no.", people=people, about_one=about_one)
        exec(program(plan, query), namespace)
        assert finals.pop() == expected
    assert (
        namespace["label_each"]("About?", ["billing", "support", "praise", "other"], calibrate=False).count("billing")
        == 0
    )  # the likeliest label never picks the topic here


def test_the_per_person_program_halves_the_share_when_the_clearest_record_stands_alone():
    """One record far clearer than the rest sets a bar no one's second record reaches: "at least twice" would
    keep nobody and the run would end without an answer, so half the share is tried."""
    from rlm_local.runtime.guards import PREIMPORT_CODE
    from rlm_local.runtime.structured import Plan as StructuredPlan
    from rlm_local.runtime.structured import person_rule, program

    users = ["ana", "bo", "cy", "dee", "eli", "fay"]
    context = [f"2024-02-{i + 1:02d} | {users[i % 6]} | message {i}" for i in range(30)]
    account = {0: 0.80, 6: 0.30, 7: 0.30, 13: 0.25}  # ana twice, bo twice; everyone else under 0.1

    def choose(prompts, choices):
        tables = []
        for prompt in prompts:
            i = int(prompt.rsplit("message ", 1)[1].split()[0])
            p = account.get(i, 0.02 + 0.002 * i)
            tables.append({"account": p, "complaints": 0.9 - p, "other": 0.1})
        return tables

    namespace = {"context": context}
    namespace.update(
        Strategies(lambda prompts, **_: ["account, complaints"] * len(prompts), namespace, choose).helpers()
    )
    exec(PREIMPORT_CODE, namespace)
    finals: list[str] = []
    namespace["FINAL"] = finals.append
    for query, expected in (
        ("Which users wrote about their account at least twice?", ["ana, bo"]),
        ("Which users never wrote about their account?", ["bo, cy, dee, eli, fay"]),  # "never": one bar only
    ):
        people, about_one = person_rule(query)
        plan = StructuredPlan("LIST", "Is this about an account? Answer yes or no.", people=people, about_one=about_one)
        exec(program(plan, query), namespace)
        assert finals == expected
        finals.clear()


CODE = '''import json


def archive_buffer(entries):
    """Archive the entries."""
    return [e for e in entries if e]


class Store:
    def flush(self, records):
        if records:
            archive_buffer(records)
        return len(records)


def main():
    log("archive_buffer is not called here")
'''


def test_search_in_code_says_which_function_a_match_is_in():
    hits = search(["archive_buffer("], {"store.py": CODE})
    assert "[store.py] (in def flush(self, records)) archive_buffer(records)" in hits
    assert "[store.py] def archive_buffer(entries):" in hits  # a definition at the top level: no owner
    assert any(h.startswith("[store.py] (in def main())") for h in search(["not called"], {"store.py": CODE}))
    assert search(["parcel"], "\n".join(RECORDS)) == [RECORDS[0].replace("  ", " ")]  # prose: unchanged


def test_an_answer_counts_only_where_it_is_written_and_does_not_repeat_the_question():
    piece = "Remember this: the session token is 33cb-77. The weather was mild."
    assert rlm_helpers.support("What is the session token?", "33cb-77.", piece) == 2
    assert rlm_helpers.support("What is the session token?", "The answer is: mild", piece) == 2
    assert rlm_helpers.support("What is the session token?", "9f00-11", piece) == -1  # made up
    assert rlm_helpers.support("What is the session token?", "session token", piece) == -1  # the question's words
    ns, _ = strategies(["The parcel came late. " * 200, "Mira Kessel won."])  # two pieces
    assert ns["ask_each"]("Who won?") == ["NONE", "Mira Kessel."]


def test_rank_puts_the_relevant_piece_first():
    docs = {f"d{i}": "the weather was mild and the market was busy " * 20 for i in range(10)}
    docs["d7"] = "the regatta winner sailed a blue boat; regatta results were announced"
    assert "regatta" in rank("who won the regatta", docs, k=1, max_chars=600)[0]


def test_helpers_are_in_the_real_worker_and_fan_out_through_the_host():
    import asyncio

    from fakes import ScriptedEngine, repl

    from rlm_local.config import RLMConfig
    from rlm_local.repl.process_sandbox import ProcessSandbox
    from rlm_local.rlm import RLM

    code = 'n = count_where("Is this about a late delivery? Answer yes or no.")\nprint("count", n)'
    engine = ScriptedEngine([repl(code), "FINAL(n)"], sub=sub_model)

    async def go():
        async with RLM(RLMConfig(sandbox="process"), root_engine=engine, sandbox=ProcessSandbox()) as rlm:
            return await rlm.acompletion("How many messages are about late deliveries?", RECORDS)

    result = asyncio.run(go())
    assert result.answer == "2" and result.usage.sub_calls == len(RECORDS) + 1  # + the answer check
    assert "count 2" in engine.root_prompts[1][-1]["content"]


def test_callers_finds_real_calls_only_in_any_shape():
    code = (
        "def archive_buffer(entries):\n    return entries\n\n\n"
        "def mentions(x):\n    # TODO: call archive_buffer() later\n"
        '    log.debug("skipping archive_buffer for %s", x)\n    return _archive_buffer(x) + archive_buffers(x)\n\n\n'
        "def caller(attempts=3):\n    return archive_buffer(attempts)\n\n\n"
        "class Store:\n    def flush(self):\n        self.archive_buffer(1)\n"
    )
    assert rlm_helpers.callers("archive_buffer", code) == ["caller", "flush"]
    broken = "def broken(:\n    archive_buffer(3)  # archive_buffer\n\n\ndef fine():\n    return 1\n"
    files = {"a.py": code, "b.py": broken}
    assert rlm_helpers.callers("`archive_buffer()`", files) == ["caller", "flush", "broken"]
    ns, _ = strategies(["def f():\n    g()\n", "def h():\n    return 'g()'\n"])
    assert ns["callers"]("g") == ["f"]


def test_definitions_lists_every_function_with_its_source_in_any_language():
    python = "class Store:\n    def flush(self):\n        return 1\n\n\ndef km_to_mi(value):\n    return value * 0.62\n"
    found = rlm_helpers.definitions({"a.py": python, "b.js": "function add(a, b) {\n  return a + b;\n}\n"})
    assert [name for name, _ in found] == ["flush", "km_to_mi", "add"]
    assert found[1][1] == "def km_to_mi(value):\n    return value * 0.62"
    assert found[2][1] == "function add(a, b) {\n  return a + b;\n}"
    assert rlm_helpers.definitions("No code here, only prose.") == []


def test_every_worked_example_runs_on_the_real_helpers():
    """The worked examples teach the model its first code: each must run as shown on a context of its shape."""
    from contextlib import redirect_stdout
    from io import StringIO

    from rlm_local.prompts import SMALL_CODER_PLUS_EXAMPLES, SMALL_CODER_RECORDS_EXAMPLES
    from rlm_local.runtime.guards import PREIMPORT_CODE

    shapes = {"str": "\n".join(RECORDS), "list": RECORDS, "dict": {f"r{i}": r for i, r in enumerate(RECORDS)}}
    for query, description, code, _, _ in {*SMALL_CODER_PLUS_EXAMPLES, *SMALL_CODER_RECORDS_EXAMPLES}:
        shape = description.split("`context` is a ", 1)[1].split()[0]
        namespace, calls = strategies(shapes[shape])
        exec(PREIMPORT_CODE, namespace)  # what the runtime imports before the first cell
        printed = StringIO()
        with redirect_stdout(printed):
            exec(code.format(chunk_chars=1_000, sub_chars=5_000), namespace)  # as the prompt shows it
        assert printed.getvalue().strip(), query
        assert calls or "search(" in code, query  # every example but the plain search asks the sub-model


def test_writers_finds_the_person_field_of_delimited_dict_and_json_records():
    people = ["ana", "bo", "ana", "cy"]
    assert rlm_helpers.writers("\n".join(RECORDS)) == people == rlm_helpers.writers(RECORDS)
    keyed = {f"msg-{i}": record for i, record in enumerate(RECORDS)}  # unique keys are not people
    assert rlm_helpers.writers(keyed) == people
    tickets = [
        {"id": f"T{i}", "customer": c, "topic": t, "text": "see notes"}
        for i, (c, t) in enumerate(
            [("acme-7", "billing"), ("zen-2", "billing"), ("acme-7", "login"), ("orb-1", "login"), ("zen-2", "billing")]
        )
    ]
    assert rlm_helpers.writers(tickets) == ["acme-7", "zen-2", "acme-7", "orb-1", "zen-2"]  # not the topic
    json_lines = "\n".join(json.dumps({"from": who, "body": "hello there"}) for who in ("kim", "lee", "kim"))
    assert rlm_helpers.writers(json_lines) == ["kim", "lee", "kim"]
    assert rlm_helpers.writers("Once upon a time.\nThe end of the story.") == []  # prose names no field
    assert rlm_helpers.writers([f"{i} | order-{i} | shipped" for i in range(5)]) == []  # every value unique


def test_categories_are_named_by_the_sub_model_from_a_sample_spread_over_the_records():
    namespace = {"context": [f"2024-01-{i % 28 + 1:02d} | u{i} | message {i}" for i in range(100)]}
    prompts: list[str] = []

    def batched(batch):
        prompts.extend(batch)
        return ["1. Billing\n2. Account", "billing, shipping and praise", "Praise"][: len(batch)]

    helpers = Strategies(batched, namespace).helpers()
    assert helpers["categories"]("Who wrote about their account?") == [
        "account", "billing", "shipping", "praise", "other"
    ]  # fmt: skip
    assert len(prompts) == rlm_helpers.CATEGORY_SAMPLES  # samples read at once, their names pooled
    shown = [p.split("Question:")[0] for p in prompts]
    assert all(s.count("| u") == rlm_helpers.CATEGORY_SAMPLE for s in shown)
    assert len({line for s in shown for line in s.splitlines() if "| u" in line}) == 3 * rlm_helpers.CATEGORY_SAMPLE
    assert "| message 0\n" in shown[0] and any("| message 9" in s for s in shown)  # spread to the end
    assert "Who wrote about their account?" in prompts[0]
    assert helpers["categories"]("Which users wrote about shipping?")[0] == "shipping"  # named in the question


def test_category_names_keep_short_distinct_names_and_leave_a_choice():
    names = rlm_helpers.category_names
    assert names("Product Questions, product question, General") == ["product questions", "general", "other"]
    assert names("Positive") == ["positive", "other"]
    assert names("NONE") == [] and names("") == []
    assert names("positive, this is a sentence about the records, Other") == ["positive", "other"]
    assert len(names(", ".join(f"kind {c}" for c in "abcdefghij"))) == rlm_helpers.MAX_CATEGORIES + 1
    first = rlm_helpers.asked_first
    assert first(["negative", "positive"], "Which users wrote positive messages?") == ["positive", "negative"]
    assert first(["support", "account"], "Who contacted support about their account?")[0] == "account"
    asked = "Which pairs of customers contacted support about shipping?"
    assert first(["customer support", "support", "shipping"], asked)[0] == "shipping"  # what it is about
    assert first(["general questions", "product questions"], "Who sent product questions?")[0] == "product questions"
    assert first(["support", "billing"], "Who wrote about invoices?") == ["invoices", "support", "billing"]
    assert first(["support", "billing"], "Which clients complained?") == ["support", "billing"]  # nothing named
    assert first(["billing", "praise", "other"], "Who wrote nothing other than praise?")[0] == "praise"


CONVERTERS = """
def adjust_data(value):
    return value * 1.609344


def transform_data(value):
    return value * 0.621371


def spin(value):
    while True:
        value += 1


def save_value(value):
    with open("/tmp/saved", "w") as fh:
        fh.write(str(value))
    return value * 0.621371
"""

KM_TO_MILES = "```python\ndef f(km):\n    return km * 0.6214\n\nprint(f(10))\nprint(f(2.5))\n```"


def test_find_function_runs_every_function_on_the_sub_models_examples_before_scoring_any():
    """P(yes) would favour the inverse (miles to kilometres); the sub-model's own version agrees with the right one
    alone, so no function is scored."""
    scored: list[str] = []

    def choose(prompts, choices):
        scored.extend(prompts)
        return [{"yes": 0.9 if "1.609" in p else 0.5, "no": 0.1} for p in prompts]

    asked: list[str] = []

    def batched(prompts):
        asked.extend(prompts)
        return [KM_TO_MILES for _ in prompts]

    helpers = Strategies(batched, {"context": CONVERTERS}, choose).helpers()
    question = "Which function converts a distance in kilometres to miles?"
    assert helpers["find_function"](question) == "transform_data"
    assert len(asked) == 1 and question in asked[0]
    assert scored == []


def test_find_function_scores_only_the_functions_that_agree_equally_often():
    twins = CONVERTERS + "\n\ndef km_to_miles(value):\n    return value * 0.621371\n"
    scored: list[str] = []

    def choose(prompts, choices):
        scored.extend(prompts)
        return [{"yes": 0.8 if "km_to_miles" in p else 0.3, "no": 0.2} for p in prompts]

    helpers = Strategies(lambda prompts: [KM_TO_MILES] * len(prompts), {"context": twins}, choose).helpers()
    assert helpers["find_function"]("Which function converts kilometres to miles?") == "km_to_miles"
    assert len(scored) == 2 and all("0.621371" in p for p in scored)


def test_without_a_usable_version_from_the_sub_model_find_function_keeps_the_likeliest():
    def choose(prompts, choices):
        return [{"yes": 0.9 if "1.609" in p else 0.5, "no": 0.1} for p in prompts]

    for reply in ("I cannot write that.", "```python\ndef f(km):\n    return km *\n```", "def f(x):\n    return x\n"):
        helpers = Strategies(lambda prompts, r=reply: [r] * len(prompts), {"context": CONVERTERS}, choose).helpers()
        assert helpers["find_function"]("Which function converts kilometres to miles?") == "adjust_data"


def test_functions_from_the_data_run_without_files_and_within_a_time_limit():
    reference, examples = rlm_helpers.reference_examples(KM_TO_MILES)
    assert examples == [[10], [2.5]]
    functions = rlm_helpers.definitions(CONVERTERS)
    assert [name for name, _ in functions] == ["adjust_data", "transform_data", "spin", "save_value"]
    # the inverse agrees with none; `spin` is stopped in time; `save_value` cannot open a file
    assert rlm_helpers.agreements(reference, examples, functions) == [0, 6, 0, 0]  # 2 examples, 4 derived
    assert not Path("/tmp/saved").exists()
    assert rlm_helpers.agreements(None, [], functions) == [0, 0, 0, 0]


def test_examples_compare_floats_closely_and_other_values_exactly():
    same = rlm_helpers._same
    assert same(6.2137, 6.214) and not same(6.2137, 16.09)
    assert same([[1, 2], [3]], ([1, 2], [3])) and not same([1, 2], [2, 1])
    assert same({"a": 1.0}, {"a": 1}) and not same(True, 1) and not same("1", 1)


def test_inputs_derived_from_the_sub_models_examples_tell_apart_what_its_own_did_not():
    """Keeping first occurrences and sorting the distinct items agree on [1, 2, 2, 3]; reversed, they do not."""
    code = """
def keep_order(items):
    seen = set()
    return [x for x in items if not (x in seen or seen.add(x))]


def sorted_unique(items):
    return sorted(set(items))
"""
    reply = "```python\ndef f(lst):\n    out = []\n    for x in lst:\n        if x not in out:\n"
    reply += "            out.append(x)\n    return out\n\nprint(f([1, 2, 2, 3]))\n```"
    reference, examples = rlm_helpers.reference_examples(reply)
    assert rlm_helpers.derived_examples(examples) == [[[3, 2, 2, 1]], [[1, 2, 2, 3, 1]]]
    assert rlm_helpers.agreements(reference, examples, rlm_helpers.definitions(code)) == [3, 2]
