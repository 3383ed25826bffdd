"""Prompt profiles: what the root model is told about its REPL, and how each turn's output is shown to it.

The system prompt is the same for every run of a profile (the query arrives in the first user message), so the
prefix cache serves it across runs too. Small coder models need a worked example to write code at all (measured:
a 0.5B model given no example wrote only comments; with one short example it solved a needle query in one turn).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SMALL_CHUNK_CHARS = 20_000  # what a small sub-model reads well, and prefills quickly on a CPU
CHARS_PER_TOKEN = 3  # conservative, so that advice on chunk sizes leaves room for the sub-model's answer

GENERAL_SYSTEM = """You answer a query about a context that is far too large to read at once. The context is \
stored in a persistent Python REPL as the variable `context`; you see it only through the code you run.

In the REPL you have:
- `context`: the data ({context_hint}).
- `llm_query(prompt: str) -> str`: asks a sub-model. Its window is {sub_window:,} tokens (about {sub_chars:,} \
characters including your instructions), so give it one chunk of the context at a time, with a precise question.
- `llm_query_batched(prompts: list[str]) -> list[str]`: many independent sub-model calls at once, run in parallel. \
Much faster than calling `llm_query` in a loop: use it whenever you have several chunks.
- `llm_choose(prompts: list[str], choices: list[str]) -> list[dict[str, float]]`: for each prompt, the sub-model's \
probability of each choice (e.g. ["yes", "no"] or labels), from one token: the cheapest way to classify or score \
many chunks or records.
{rlm_query_line}- `split_text(data, max_chars)`: cuts a str, list or dict into a list of str pieces of at most \
`max_chars` characters, at line or sentence ends.
- Ready-made strategies (any context shape; each runs its sub-calls batched): `search(words)` (the sentences \
around matches), `ask_all(question)` (reads every piece; the best supported answer written in the data), \
`ask_each(question)` (one answer per piece), `relevance(question)` (every piece with its probability of \
answering the question, likeliest first), `count_where(yes_no_question)` and `where(yes_no_question)` (ask about \
every record: a line, list item or dict entry), `label_each(question, labels)` (one label per record; to compare \
or count categories, pass all of them), `rank(query, k)` (BM25: the pieces most related to the query), \
`callers(name)` (in source code, the functions that call `name`: parsed, so comments, strings and look-alike names \
are left out), `items()` (the records as a list). `re`, `json`, `math`, `Counter` are imported.
- `SHOW_VARS()`: lists the variables you have made.
- `print(...)`: the only way to see anything. Output longer than {output_chars:,} characters is cut in the middle.

To run code, write it in a ```repl block; you may write several blocks in one reply. Variables persist between \
turns. Work step by step: first look at the context's structure (its type, length, a few slices), then search or \
split it, use sub-model calls on the pieces that need reading, keep intermediate results in variables, and check \
your findings before answering. Do not guess: base the answer on what your code found.

When you are done, reply with FINAL(your answer) outside any code block, or FINAL_VAR(variable_name) to answer \
with the value of a REPL variable. Inside code you may also call FINAL(value) or FINAL_VAR("name")."""

_SMALL_CODER_TEMPLATE = """You are a Python programmer. The data for the user's question is stored in the Python \
variable `context` ({context_hint}). It is too long to read, so you write Python code that searches and reads it, \
and you answer the user's question from what your code prints.

Ready-made helpers (they work whether `context` is a str, a list or a dict). Choose by what the question asks:
A. A fact written somewhere in the data (a code, key, name, date, number, place, or all the values of one kind \
that are mentioned):
- `search(words)`: snippets of `context` around any of the words (a list of str, case-insensitive). Use the \
question's own words.
- `ask_all(question)`: a helper model reads ALL of `context`, piece by piece, and returns one answer (str). For a \
fact written in other words than the question's, or when `search` finds nothing useful.
B. A count or a selection of records (lines, items or entries) that meet a condition:
{count_helpers}
C. Source code: `callers(name)`: the functions that really call the function `name` (list of str; mentions in \
comments or strings and look-alike names left out).
Also: `items()`: the records of `context` as a list of str. `rank(query)`: the 5 pieces most related to `query`.
- `llm_query(prompt)`, `llm_query_batched(prompts)`: ask the helper model yourself (prompts under {sub_chars:,} \
characters).
{rlm_query_line}`re`, `json`, `math`, `Counter` and `defaultdict` are already imported.

Rules:
1. Reply with Python code in a ```repl block. Use print() to see results.
2. The helper model sees ONE record or piece at a time: ask it a short, complete question about that record.
3. When the output shows the answer, reply with FINAL(answer) on its own line, outside the code.
4. Never invent an answer: it must come from your code's output. Do not run the same code twice."""

# How the count helpers are told apart. The 0.5B copies every example's shape (shown the category examples it
# answered a document question with `items()[-1]`), so it keeps the short text; from 1B up a model tells categories
# apart better than it answers yes/no about one of them (probe: count error per label 1.3 vs 3.3 and 0.8 vs 9.4).
COUNT_HELPERS = """- `count_where(question)`: asks a yes/no question about EVERY record and returns how many got \
yes (int).
- `where(question)`: the records (list of str) that got yes.
- `label_each(question, labels)`: one answer per record, each one of `labels`. Count them with `Counter`."""
COUNT_HELPERS_BY_CATEGORY = """- `count_where(question)`: asks a yes/no question about EVERY record and returns how \
many got yes (int). To count the records in one category of a kind with few categories (one tone, one topic), use \
`label_each` with all the categories of that kind instead: it counts far more exactly.
- `where(question)`: the records (list of str) that got yes.
- `label_each(question, labels)`: one answer per record, each one of `labels`. Count them with `Counter`. Use it \
when the question is about categories of one kind (a tone, a topic, a type, a priority): which is the most or least \
common, or how many records are in one of them. Give ALL the categories of that kind as `labels`: the helper model \
tells categories apart better than it answers yes or no about one."""
SMALL_CODER_SYSTEM = _SMALL_CODER_TEMPLATE.replace("{count_helpers}", COUNT_HELPERS)
SMALL_CODER_PLUS_SYSTEM = _SMALL_CODER_TEMPLATE.replace("{count_helpers}", COUNT_HELPERS_BY_CATEGORY)
# For questions about many records (from 1B up), the one record helper is `label_each` with every kind of answer.
# Why (1.5B): a yes/no question about one category is answered far worse than a choice among all of them (see
# above), and shown `where`, the 1.5B put the condition over several records into the question asked of each one
# ("Did the user get in touch about billing on two or more occasions?"), which no record can answer.
LABEL_HELPERS = """- `label_each(question, labels)`: asks `question` about EVERY record (one line, list item or dict \
entry) and returns one label per record (list of str, in the order of `items()`). Ask about ONE record only (what it \
is about, its tone, yes or no), and give ALL the possible answers as `labels`: every topic, every tone, or a few \
kinds plus "other". Conditions over several records (how many times, every one, pairs) are Python's job: count the \
labels with `Counter`, or per writer over `zip(items(), labels)`."""
SMALL_CODER_RECORDS_SYSTEM = _SMALL_CODER_TEMPLATE.replace("{count_helpers}", LABEL_HELPERS)

# Worked examples for small models, as real chat turns in the exact format of a run (measured: a 0.5B model copies
# the shape of these turns; told the same thing in prose it only wrote comments). One per task shape: find a fact,
# read everything for a fact in other words, a fact about something the question only describes (two hops), count
# records, list who meets a condition.
SMALL_CODER_EXAMPLES = (
    (
        "Which hotel did Dr. Amara Osei stay at during the conference?",
        "`context` is a str of 1,204,332 characters in 1 line.\nFirst and last lines (each cut to 150 characters):\n"
        "1| The conference opened on a wet Monday. Queues stretched past the cloakroom while the organisers...\n...\n"
        "1| ...the closing dinner ended with thanks to the volunteers and the caterers.",
        'print(search(["Osei"]))',
        "['Travel note: on arrival Dr. Amara Osei checked into the Hotel Meridian, two streets from the venue.']",
        "Hotel Meridian",
    ),
    (
        "Who designed the bridge that replaced the old ferry crossing?",
        "`context` is a dict of str -> str (file path -> text) with 212 items, 803,517 characters in total.\n"
        "Keys (3 of 212): 'minutes/2019-03.md', 'minutes/2019-04.md', 'minutes/2019-05.md'\n"
        "First and last items (each cut to 150 characters):\ncontext['minutes/2019-03.md'] = 'The council met at "
        "seven. Apologies were received from...'...",
        'print(ask_all("Who designed the bridge that replaced the old ferry crossing?"))',
        "Lena Hartmann",
        "Lena Hartmann",
    ),
    (
        "What is the phone number of the firm that audited the museum?",
        "`context` is a list of str with 640 items, 58,210 characters in total.\n"
        "First and last items (each cut to 150 characters):\ncontext[0] = 'Board minutes, 3 March: the roof repair "
        "was approved...'\n...\ncontext[639] = 'Visitor survey: most guests came for the map room.'",
        'firm = ask_all("Which firm audited the museum?")\n'
        "print(firm)\n"
        'print(ask_all(f"What is the phone number of {{firm}}?"))',  # {{}}: the code is .format()ted
        "Holm & Berg\n0171 443 2290",
        "0171 443 2290",
    ),
    (
        "How many of the support tickets are about trouble signing in?",
        "`context` is a list of str with 1,830 items, 171,223 characters in total.\n"
        "First and last items (each cut to 150 characters):\ncontext[0] = '2024-03-01 | t-0012 | Password reset "
        "email never arrives'\n...\ncontext[1829] = '2024-06-30 | t-1841 | Parcel left at the wrong door'",
        "print(items()[:2])\n"
        'print(count_where("Is this ticket about trouble signing in to an account? Answer yes or no."))',
        "['2024-03-01 | t-0012 | Password reset email never arrives', '2024-03-01 | t-0013 | Invoice is wrong']\n214",
        "214",
    ),
    (
        "Which customers asked for their money back more than once?",
        "`context` is a str of 96,410 characters in 1,012 lines.\nFirst and last lines (each cut to 150 characters):"
        "\n1| 2023-05-01 | cust_03 | Do you ship to Norway?\n...\n1012| 2023-09-30 | cust_41 | Thanks, all sorted.",
        'hits = where("Does the writer of this message ask for their money back? Answer yes or no.")\n'
        "print(len(hits), hits[:3])\n"
        'writers = Counter(h.split(" | ")[1] for h in hits)\n'
        "print([name for name, n in writers.items() if n > 1])",
        "41 ['2023-05-02 | cust_17 | I want a refund for this', ...]\n['cust_17', 'cust_88']",
        "cust_17, cust_88",
    ),
)

# For models from 1B up: the count of one topic is read off labels over all the topics (a 1.5B copied the yes/no
# count for "how many are neutral" and counted 194 for 119), and two more shapes: a condition every record of a
# writer meets (labels grouped by the record's writer field), a comparison of categories (most and least common).
COUNT_BY_LABELS_EXAMPLE = (
    "How many of the support tickets are about trouble signing in?",
    SMALL_CODER_EXAMPLES[3][1],
    "print(items()[:2])\n"
    'topics = label_each("What is this ticket about?", ["signing in", "payment", "delivery", "other"])\n'
    "print(Counter(topics))",
    "['2024-03-01 | t-0012 | Password reset email never arrives', '2024-03-01 | t-0013 | Invoice is wrong']\n"
    "Counter({'other': 903, 'delivery': 512, 'signing in': 214, 'payment': 201})",
    "214",
)
SMALL_CODER_PLUS_EXAMPLES = (
    *SMALL_CODER_EXAMPLES[:3],
    COUNT_BY_LABELS_EXAMPLE,
    *SMALL_CODER_EXAMPLES[4:],
    (
        "Which drivers had every one of their deliveries arrive on time?",
        "`context` is a list of str with 3,115 items, 262,804 characters in total.\n"
        "First and last items (each cut to 150 characters):\ncontext[0] = '2022-11-01 | drv_204 | Dropped at the "
        "loading bay at 9:40, signed by the clerk'\n...\ncontext[3114] = '2023-02-28 | drv_119 | Customer away, "
        "left with the neighbour'",
        'status = label_each("Did this delivery arrive on time or late?", ["on time", "late"])\n'
        "per_driver = defaultdict(Counter)\n"
        "for record, s in zip(items(), status):\n"
        '    per_driver[record.split(" | ")[1]][s] += 1\n'
        'print([d for d, c in per_driver.items() if set(c) == {{"on time"}}])',  # {{}}: the code is .format()ted
        "['drv_204', 'drv_377', 'drv_512']",
        "drv_204, drv_377, drv_512",
    ),
    (
        "Which kind of fault do the machine logs report least often: overheating, jam or power loss?",
        "`context` is a dict of str -> str (entry id -> text) with 2,406 items, 230,118 characters in total.\n"
        "Keys (3 of 2,406): 'e-00001', 'e-00002', 'e-00003'\n"
        "First and last items (each cut to 150 characters):\ncontext['e-00001'] = 'Line 4 stopped at 06:12, "
        "paper stuck between rollers B and C'\n...\ncontext['e-02406'] = 'Fan alarm on press 2, cooled down "
        "and restarted'",
        'kinds = label_each("What kind of fault does this log entry report?", ["overheating", "jam", "power loss"])\n'
        "counts = Counter(kinds).most_common()\n"
        'print("most:", counts[0], "least:", counts[-1])',
        "most: ('jam', 1187) least: ('power loss', 413)",
        "power loss",
    ),
)

# Shown instead for questions about many records (from 1B up): the fact examples, then every record shape as labels
# over all the kinds of answer, then Python (OOLONG-Pairs' conditions over a writer's records: more than once, every
# one, pairs of writers; a count of one category; the most and least common). Only for such questions: shown these
# for every question, the 1.5B also labelled the lines of a prose text to find who won a race (probe_root.py).
_SUPPORT_LOG = (
    "`context` is a str of 96,410 characters in 1,012 lines.\nFirst and last lines (each cut to 150 characters):"
    "\n1| 2023-05-01 | cust_03 | Do you ship to Norway?\n...\n1012| 2023-09-30 | cust_41 | Thanks, all sorted."
)
_PER_WRITER = (
    "per_writer = defaultdict(Counter)\n"
    "for record, label in zip(items(), labels):\n"
    '    per_writer[record.split(" | ")[1]][label] += 1\n'
)
SMALL_CODER_RECORDS_EXAMPLES = (
    *SMALL_CODER_EXAMPLES[:3],
    (
        "How many of the support tickets are about trouble signing in?",
        SMALL_CODER_EXAMPLES[3][1],
        'labels = label_each("What is this ticket about?", ["signing in", "payment", "delivery", "other"])\n'
        "print(Counter(labels))",
        "Counter({'other': 903, 'delivery': 512, 'signing in': 214, 'payment': 201})",
        "214",
    ),
    (
        "Which customers asked for their money back more than once?",
        _SUPPORT_LOG,
        'labels = label_each("What does the writer of this message ask for?", ["money back", "delivery news", '
        '"login help", "other"])\n'
        + _PER_WRITER
        + 'print([name for name, c in per_writer.items() if c["money back"] > 1])',
        "['cust_17', 'cust_88']",
        "cust_17, cust_88",
    ),
    (
        "Which drivers had every one of their deliveries arrive on time?",
        "`context` is a list of str with 3,115 items, 262,804 characters in total.\n"
        "First and last items (each cut to 150 characters):\ncontext[0] = '2022-11-01 | drv_204 | Signed for at "
        "9:40'\n...\ncontext[3114] = '2023-02-28 | drv_119 | Customer away'",
        'labels = label_each("Did this delivery arrive on time or late?", ["on time", "late"])\n'
        + _PER_WRITER
        + 'print([name for name, c in per_writer.items() if set(c) == {{"on time"}}])',  # {{}}: .format()ted
        "['drv_204', 'drv_377', 'drv_512']",
        "drv_204, drv_377, drv_512",
    ),
    (
        "Which pairs of customers both complained about a broken item?",
        _SUPPORT_LOG,
        'labels = label_each("What is this message about?", ["broken item", "late parcel", "refund", "other"])\n'
        + _PER_WRITER
        + 'names = sorted(name for name, c in per_writer.items() if c["broken item"] >= 1)\n'
        "print(list(itertools.combinations(names, 2)))",
        "[('cust_05', 'cust_22'), ('cust_05', 'cust_61'), ('cust_22', 'cust_61')]",
        "cust_05 & cust_22, cust_05 & cust_61, cust_22 & cust_61",
    ),
    (
        "Which kind of fault do the machine logs report least often: overheating, jam or power loss?",
        "`context` is a dict of str -> str (entry id -> text) with 2,406 items, 230,118 characters in total.\n"
        "Keys (3 of 2,406): 'e-00001', 'e-00002', 'e-00003'\n"
        "First and last items (each cut to 150 characters):\ncontext['e-00001'] = 'Line 4 stopped, paper stuck'"
        "\n...\ncontext['e-02406'] = 'Fan alarm on press 2'",
        'labels = label_each("What kind of fault does this log entry report?", ["overheating", "jam", '
        '"power loss"])\n'
        "counts = Counter(labels).most_common()\n"
        'print("most:", counts[0], "least:", counts[-1])',
        "most: ('jam', 1187) least: ('power loss', 413)",
        "power loss",
    ),
)

# The small-coder profile before the strategy helpers (raw `re` and `llm_query_batched` only): kept as the
# "without helpers" row of the evaluation's ablations (`--profile small-coder-basic`).
BASIC_CODER_SYSTEM = """You are a Python programmer. A long text is stored in the Python variable `context` \
({context_hint}). It is too long to read, so you write Python code to search it, and you answer the user's \
question about it.

Tools inside the code:
- `context`: the data.
- `llm_query(prompt)`: returns a helper model's answer (string). Keep each prompt under {sub_chars:,} characters.
- `llm_query_batched(prompts)`: list of prompts -> list of answers, all at once (fast).
- `split_text(context, max_chars)`: the context cut into a list of str pieces (works for str, list and dict).
{rlm_query_line}
Rules:
1. Reply with Python code in a ```repl block. Use print() to see results.
2. When the output shows the answer, reply with FINAL(answer) on its own line, outside the code.
3. To find one fact, search `context` with `re` for words of the question. To answer from the whole text, split it
   into chunks and ask `llm_query_batched` about each chunk.
4. Never invent an answer: find it in `context` with code. Do not run the same code twice."""

BASIC_CODER_EXAMPLES = (
    (
        "Which cities are mentioned as hosting a festival?",
        "`context` is a str of 803,517 characters.",
        "chunks = split_text(context, {chunk_chars})\n"
        'answers = llm_query_batched(["List the cities hosting a festival in this text, or say NONE:\\n" + c '
        "for c in chunks])\n"
        'found = [a for a in answers if "NONE" not in a]\nprint(len(chunks), found)',
        "12 ['Lyon', 'Oslo']",
        "Lyon, Oslo",
    ),
    (
        "What is the launch code for the rocket?",
        "`context` is a str of 1,204,332 characters in 1 line.\nFirst and last lines (each cut to 150 characters):\n"
        "1| The conference opened on a wet Monday. Queues stretched past the cloakroom while the organisers...\n...\n"
        "1| ...the closing dinner ended with thanks to the volunteers and the caterers.",
        'import re\nfor m in re.finditer(r"launch code", context, re.IGNORECASE):\n'
        "    print(context[max(0, m.start() - 200): m.end() + 200])",
        "... the crew checked the fuel twice. The launch code for the rocket is 7731-ALPHA. The crew ...",
        "7731-ALPHA",
    ),
)

RLM_QUERY_LINE = (
    "- `rlm_query(query: str, context=None) -> str`: starts a sub-agent like you, with its own REPL over the "
    "context you pass; for a sub-task that itself needs code.\n"
)

FIRST_USER = """Question: {query}

{context_description} Write code in a ```repl block to look at the context and answer the question."""

# With the loop guards on, the first message shows a preview of the data (its first and last lines or items).
FIRST_USER_PREVIEW = """{context_description}

Question: {query}
Write code in a ```repl block to answer the question. Search for the words of the question, not for the \
sample lines above."""

NEXT_USER = """Output:
{output}

{reminder}"""

CONTINUE_REMINDER = (
    "Turn {turn} of {max_turns}. If the output above answers the question, reply FINAL(answer). "
    "Otherwise write different code."
)
REPEATED_CODE_NOTE = "You already ran exactly this code before; it gave the same output."
NO_CODE_REMINDER = (
    "Your reply had no ```repl code block and no FINAL(...). Write code in a ```repl block, or answer with "
    "FINAL(answer)."
)
FAILED_CODE_NOTE = (
    "Your last code failed (see the error above), so that answer is not based on the context. Fix the code and "
    "run it first."
)
FORCE_FINAL = (
    "You have no turns left. Reply now with FINAL(your answer), using what your code has found so far. "
    "Do not write code."
)
STATE_LOST_NOTE = "Note: {fault}."

ANSWER_CHECK = """What a program printed while searching some data:
{output}

Question: {query}
Answer the question from the printed text only: reply with the exact answer itself (for example the code, name, \
number or list), not the words around it. Reply with the answer only."""

# ---- loop guards (rlm_local/runtime/guards.py): why an answer was refused, and hints after a traceback ----------
TURN_REMINDER = "Turn {turn} of {max_turns}. Write code in a ```repl block."
NO_DATA_NOTE = (
    "Not accepted yet: no code has printed anything from `context`, so that answer is a guess. Look at the data "
    "first: print a slice of `context` or search it, then answer from what the output shows."
)
NON_ANSWER_NOTES = {
    "empty": "Not accepted: the answer is empty; put the answer itself in FINAL(...), and if your code found "
    "nothing, search again.",
    "none": "Not accepted: None is not an answer (a search that matches nothing gives None); print a slice of "
    "`context` to see its wording, then search for words that are really in it.",
    "error": "Not accepted: that is an error message, not an answer; fix the call that failed and run it again.",
    "traceback": "Not accepted: that is a Python traceback, not an answer; fix the code and run it again.",
    "placeholder": "Not accepted: that is a placeholder, not an answer; put the answer your code found in FINAL(...).",
    "runtime": "Not accepted: that is the runtime's note about your code, not an answer; print what your code finds "
    "in the data, then answer with it.",
}
# What the runtime shows for a cell that printed nothing, and for a turn without code. A 0.5B answered the first
# word for word after its FINAL("") was refused (session 20).
NO_OUTPUT = "(no output: use print() to see values)"
NO_CODE_RUN = "(no code was run)"
# What the question asks for, said for this question only: a note listing every kind ("a number for 'how many',
# a name for 'who', ...") had a 0.5B search for "how many", "who" and "which ... appear" (docs/eval/README.md,
# session 19).
WRONG_KIND_NOTES = {
    "options": "Not accepted: the question asks which of the options it names; answer with one of them.",
    "file": "Not accepted: the question does not ask for a file name; answer with what it asks for, found in the data.",
    "number": "Not accepted: the question asks how many; answer with a number your code counted in the data.",
    "name": "Not accepted: the question asks who; answer with the name or id found in the data, not a number.",
    "values": "Not accepted: the question asks for the {asked} themselves, not how many there are; print them from "
    "the data, then answer with them.",
}
COPIED_EXAMPLE_NOTE = (
    "Not run: that code is a worked example's, written for another question. Write code for this question: {query}"
)
EXAMPLE_ANSWER_NOTE = (
    "Not accepted: that is the answer of a worked example, not of this question. Find the answer to this question "
    "in the data."
)
ECHO_NOTE = (
    "Not accepted: that answer only repeats words of the question. Find what the question asks for in the data, "
    "then answer with it."
)
NOT_STR_HINTS = {
    "dict": "Hint: `context` is a dict (file path -> text), not a str: use '\\n'.join(context.values()) for one "
    "str, or loop over context.items().",
    "list": "Hint: `context` is a list of str, not a str: use '\\n'.join(context) for one str, or loop over its items.",
}
IMPORT_HINT = "Hint: add `{statement}` at the top of the cell."
SIGNATURE_HINT = "Hint: the signature is {signature}."
HELPER_SIGNATURES = {
    "llm_query": "llm_query(prompt: str, max_tokens: int = ..., temperature: float = ...) -> str",
    "llm_query_batched": "llm_query_batched(prompts: list[str], max_tokens: int = ..., temperature: float = ...) "
    "-> list[str]",
    "llm_choose": "llm_choose(prompts: list[str], choices: list[str]) -> list[dict[str, float]]",
    "rlm_query": "rlm_query(query: str, context=None) -> str",
    "split_text": "split_text(data: str | list | dict, max_chars: int = 20000) -> list[str]",
}


@dataclass(frozen=True)
class Profile:
    name: str
    system: str
    examples: tuple[tuple[str, str, str, str, str], ...] = ()  # (query, data description, code, output, answer)
    records: Profile | None = None  # shown instead for a question about many records (a count, a selection)

    def variant(self, about_records: bool) -> Profile:
        """The records variant for a question about many records (how many, which users, the most common of some
        options), else this profile: a small model copies the shapes it is shown, so a question sees its kind's."""
        return self.records if about_records and self.records is not None else self

    def opening(
        self,
        *,
        context_hint: str,
        sub_window: int,
        output_chars: int,
        allow_rlm_query: bool,
        max_turns: int,
        preview: bool = False,
    ) -> list[dict[str, str]]:
        """System prompt and worked examples: the same for every run with the same settings (prefix-cached)."""
        sub_chars = max(1000, (sub_window - 512) * CHARS_PER_TOKEN)  # room for instructions and the answer
        fields = {
            "context_hint": context_hint,
            "sub_window": sub_window,
            "sub_chars": sub_chars,
            "chunk_chars": min(sub_chars // 2, SMALL_CHUNK_CHARS),
            "output_chars": output_chars,
            "rlm_query_line": RLM_QUERY_LINE if allow_rlm_query else "",
        }
        messages = [{"role": "system", "content": self.system.format(**fields)}]
        first = FIRST_USER_PREVIEW if preview else FIRST_USER  # the examples look like the run's first message
        for query, description, code, output, answer in self.examples:
            reminder = CONTINUE_REMINDER.format(turn=2, max_turns=max_turns)
            messages += [
                {"role": "user", "content": first.format(query=query, context_description=description)},
                {"role": "assistant", "content": f"```repl\n{code.format(**fields)}\n```"},
                {"role": "user", "content": NEXT_USER.format(output=output, reminder=reminder)},
                {"role": "assistant", "content": f"FINAL({answer})"},
            ]
        return messages


PROFILES = {
    "general": Profile("general", GENERAL_SYSTEM),
    "small-coder": Profile("small-coder", SMALL_CODER_SYSTEM, SMALL_CODER_EXAMPLES),
    "small-coder-plus": Profile(
        "small-coder-plus",
        SMALL_CODER_PLUS_SYSTEM,
        SMALL_CODER_PLUS_EXAMPLES,
        records=Profile("small-coder-plus/records", SMALL_CODER_RECORDS_SYSTEM, SMALL_CODER_RECORDS_EXAMPLES),
    ),
    "small-coder-basic": Profile("small-coder-basic", BASIC_CODER_SYSTEM, BASIC_CODER_EXAMPLES),
}

_SIZE = re.compile(r"(?<![\d.])(\d+(?:\.\d+)?)\s*([bm])(?![a-z])", re.IGNORECASE)
SMALL_MODEL_MAX_BILLIONS = 4.0
TINY_MODEL_MAX_BILLIONS = 1.0  # below this a model copies example shapes it should not (see COUNT_HELPERS)


def parameter_billions(model: str) -> float | None:
    """The size a model's name states ('Qwen2.5-Coder-0.5B' -> 0.5, 'SmolLM2-135M' -> 0.135), if any."""
    sizes = [float(n) / (1000 if unit.lower() == "m" else 1) for n, unit in _SIZE.findall(model)]
    return max(sizes) if sizes else None


def choose_profile(name: str, model: str, source: str = "") -> Profile:
    """`auto` picks by the size a model's name (or, for a served name, the folder or hub id the server loaded)
    states: small-coder under 1B, small-coder-plus from 1B to 4B, the general profile otherwise."""
    if name != "auto":
        return PROFILES[name]
    sizes = (parameter_billions(n.rstrip("/").rsplit("/", 1)[-1]) for n in (model, source) if n)
    size = next((s for s in sizes if s is not None), None)
    if size is None or size >= SMALL_MODEL_MAX_BILLIONS:
        return PROFILES["general"]
    return PROFILES["small-coder" if size < TINY_MODEL_MAX_BILLIONS else "small-coder-plus"]
