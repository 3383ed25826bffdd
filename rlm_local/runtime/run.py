"""The RLM loop: the root model writes code, the REPL runs it, sub-calls go to the sub-model, until FINAL.

The root conversation is append-only (earlier turns are never edited), so every turn's prompt extends the last one
and the engine's prefix cache serves it. All limits live in `RunBudget`, on the host.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

from rlm_local import prompts
from rlm_local.budget import BudgetExceeded, RunBudget, StopReason
from rlm_local.config import RLMConfig
from rlm_local.context import PreparedContext, prepare_context
from rlm_local.engines.base import Engine, Generation, GenerationRequest, SamplingOptions
from rlm_local.engines.token_count import most_tokens
from rlm_local.errors import EngineError, ModelError, PromptTooLong, RLMError
from rlm_local.parsing import FinalAnswer, extract_code_blocks, find_final, outside_code, strip_think
from rlm_local.repl.sandbox import Sandbox
from rlm_local.repl.session import CellResult, ReplSession, StateLost
from rlm_local.runtime import guards
from rlm_local.runtime.choose import TOP_LOGPROBS, choice_probabilities
from rlm_local.runtime.guards import LoopGuards, answer_options
from rlm_local.runtime.structured import plan_first, question_form, run_structured
from rlm_local.runtime.usage import Usage
from rlm_local.runtime.voting import SAMPLE_TEMPERATURE, written_in
from rlm_local.trajectory import Trajectory
from rlm_local.truncation import truncate_output

PREVIEW_CHARS = 500
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_NUMBER = re.compile(r"\d")
_BARE_NUMBER = re.compile(r"-?[\d][\d.,]*")
_LIST_SEPARATORS = re.compile(r",\s*|\s+and\s+")
MAX_CHOICES = 26  # llm_choose: a label set, not a vocabulary
MIN_NEWEST_CHARS = 400  # the newest output is never cut below this (its head, its tail and the turn's reminder)
# Where another turn like the last would not end before the deadline, the model answers now from what it has seen,
# instead of the run ending with no answer at all (measured: 1.5B runs on 2 cores, three at once, ran out the 1,800 s
# deadline mid-turn, answerless; docs/eval/README.md, sessions 20 and 21).
NEAR_DEADLINE = "the deadline was near (the last turn took {s:.0f}s): answered from what the run had seen"
STUCK_TURNS = 2  # in `auto` mode, after this many turns stuck on a repeat the structured program takes over


@dataclass
class RunTree:
    """What a run and all its sub-RLMs share: engines, sandbox, budget, accounting and record."""

    config: RLMConfig
    root_engine: Engine
    sub_engine: Engine
    sandbox: Sandbox
    run_id: str
    budget: RunBudget
    trajectory: Trajectory
    usage: Usage = field(default_factory=Usage)
    faults: list[str] = field(default_factory=list)
    cache_salt: str | None = None  # the tenant's, when a server runs this tree
    sub_rlm_slots: asyncio.Semaphore = field(init=False)
    structured_runs: dict[tuple[str, int], asyncio.Future[Any]] = field(default_factory=dict)  # see _structured

    def __post_init__(self) -> None:
        self.sub_rlm_slots = asyncio.Semaphore(self.config.budgets.max_concurrent_sub_rlms)


@dataclass
class Outcome:
    answer: str | None
    stop_reason: StopReason
    detail: str
    turns: int


ELIDED = (
    "[This cell's output was dropped to keep the conversation within the model's window. The REPL still holds every "
    "variable: print what you need again.]"
)


class RLMRun:
    """One (sub-)RLM: a query, a context, a REPL, and a conversation with the root model."""

    def __init__(
        self, tree: RunTree, query: str, context: PreparedContext, depth: int = 0, sample: int = 0, label: str = "main"
    ) -> None:
        """`sample` > 0: one of several voting trajectories, decoded at a higher temperature with its own seed.
        `label` names this run in every event it writes ("sample 2", "main / sub-RLM 3"): the viewer nests by it."""
        self.tree = tree
        self.label = label
        self._children = 0
        self.query = query
        self.context = context
        self.depth = depth
        self.config = tree.config
        profile = prompts.choose_profile(self.config.profile, tree.root_engine.model, tree.root_engine.source)
        self.profile = profile.variant(about_records=question_form(query) is not None)
        self.messages: list[dict[str, str]] = []
        self._first_turn = 0
        self.turn = 0
        self.guards = LoopGuards(self.config.guards, context.type_name, query=query)
        seed = self.config.seed
        self.temperature = self.config.temperature if sample == 0 else max(SAMPLE_TEMPERATURE, self.config.temperature)
        self.seed = seed if sample == 0 or seed is None else seed + 7919 * sample
        self._last_cell_failed = False
        self._last_output = ""  # what the model last saw its code print: the evidence an answer is checked against
        self.printed: list[str] = []  # everything its code printed: the evidence a voted answer is checked against
        self._cell_failed = False
        self._warned_failed = False

    # ---- the loop ------------------------------------------------------------------------------------------------
    async def run(self) -> Outcome:
        tree = self.tree
        tree.trajectory.emit(
            "run_start",
            run_id=tree.run_id,
            run=self.label,
            depth=self.depth,
            query=self.query,
            context=self.context.metadata(),
            root_model=tree.root_engine.model,
            sub_model=tree.sub_engine.model,
            profile=self.profile.name,
            sandbox=tree.sandbox.name,
        )
        first = await asyncio.to_thread(self._first_message)  # the preview may scan a large file for its lines
        opening = self._opening()
        self.guards.learn_examples([m["content"] for m in opening if m["role"] != "system"])
        self.messages = [*opening, {"role": "user", "content": first}]
        self._first_turn = len(self.messages)  # what comes after: the model's cells and what they printed
        self._check_window()
        session = ReplSession(
            tree.sandbox,
            self.context.file,
            self.serve_subcalls,
            cell_timeout_s=self.config.cell_timeout_s,
            label=f"{tree.run_id}-d{self.depth}",
        )
        try:
            await session.start()
            await self._preimport(session)
            return await self._answer(session)
        except BudgetExceeded as stop:
            return await self._stopped(session, stop)
        finally:
            await session.close()

    async def _answer(self, session: ReplSession) -> Outcome:
        """Code mode, structured mode, or `auto`: the model's code first and, when it ends without an answer (or
        is stuck repeating itself), the structured program over the whole context. Measured on a 0.5B root: the
        program first answered none of 10 development tasks; the model's code answered the lookups it could. The
        exceptions (`structured.plan_first`) are questions whose program is the right code (most/least of named
        options; which people meet a condition over their records), which a 1.5B root wrote for one such question
        and not for the next, so it runs first and the model's code only if it finds nothing."""
        mode = self.config.mode
        if mode == "code":
            return await self._turns(session)
        if mode == "structured":
            return await self._structured(session)
        if plan_first(self.query):
            planned = await self._structured(session)
            if planned.answer is not None or self.tree.budget.exceeded is not None:
                return planned
        outcome = await self._turns(session, fallback=True)
        stopped = self.tree.budget.exceeded is not None
        if outcome.answer is not None and not stopped and self.guards.kind_ignored(outcome.answer):
            return await self._right_kind(session, outcome)
        if outcome.answer is not None or stopped or outcome.stop_reason == "deadline":
            return outcome  # near the deadline there is no time for the structured program
        planned = await self._structured(session)
        if planned.answer is None and outcome.stop_reason == "max_iterations":
            return await self._force_final("max_iterations", outcome.detail)  # the model's best guess, last
        return planned

    async def _structured(self, session: ReplSession) -> Outcome:
        """The structured program's outcome. It samples nothing (its sub-calls are greedy), so K voting samples of
        one query share one run of it: the first to need it runs it, the others take its outcome and output rather
        than repeat its hundreds of sub-calls."""
        key = (self.query, id(self.context))
        if key not in self.tree.structured_runs:
            self.tree.structured_runs[key] = asyncio.ensure_future(self._run_structured(session))
        outcome, printed, runner = await self.tree.structured_runs[key]
        if runner is not self:
            self.printed.extend(printed)
        return outcome

    async def _run_structured(self, session: ReplSession) -> tuple[Outcome, list[str], RLMRun]:
        before = len(self.printed)
        outcome = await run_structured(self, session)
        return outcome, self.printed[before:], self

    async def _right_kind(self, session: ReplSession, outcome: Outcome) -> Outcome:
        """The model kept an answer of the wrong kind after the note saying so (measured: a 0.5B answered the
        counts `[201, 36, 0]` to "which access codes appear?"): the structured program's answer, if it finds one
        of the kind asked for; else the model's."""
        planned = await self._structured(session)
        if planned.answer is not None and not self.guards.kind_ignored(planned.answer):
            return planned
        return outcome

    async def _turns(self, session: ReplSession, *, fallback: bool = False) -> Outcome:
        """The model's turns. With a `fallback` to run after them, a stuck model gives up early and running out of
        turns ends without the forced guess (the fallback makes that guess if it finds nothing itself)."""
        max_turns = self.config.budgets.max_iterations
        stuck = 0  # turns in a row whose re-sampled candidates all repeated what was tried
        last_turn_s = 0.0
        while self.turn < max_turns:
            if self.turn and self.tree.budget.remaining_s() < last_turn_s:
                return await self._force_final("deadline", NEAR_DEADLINE.format(s=last_turn_s))
            started = time.monotonic()
            reply, meta = await self._root_turn()
            stuck = stuck + 1 if "resampled" in meta and "replaced" not in meta else 0
            if fallback and stuck >= STUCK_TURNS:
                self.tree.trajectory.emit("turn", **meta, code=[], outputs=[], final=None, note="stuck: gave up")
                return Outcome(None, "max_iterations", f"the model repeated itself {stuck} turns in a row", self.turn)
            blocks = extract_code_blocks(reply)
            if self.guards.copies_example(blocks):  # re-sampling did not help: the example is not run at all
                note = prompts.COPIED_EXAMPLE_NOTE.format(query=self.query)
                self.tree.trajectory.emit("turn", **meta, code=blocks, outputs=[], final=None, note=note)
                self._append_feedback([], note)
                continue
            repeated = self.guards.ran_before(blocks)
            self.guards.seen_code.update(blocks)
            outputs, code_final = await self._run_blocks(session, blocks)
            if self.tree.budget.failed:  # what the cell printed or answered came from failed sub-calls
                raise self.tree.budget.exceeded
            if blocks:
                self._last_cell_failed = self._cell_failed
            answer, note = await self._resolve_final(session, reply, code_final, ran_code=bool(blocks))
            if repeated and answer is None:
                note = f"{note}\n{prompts.REPEATED_CODE_NOTE}" if note else prompts.REPEATED_CODE_NOTE
            if answer is not None and not blocks and code_final is None:
                answer, meta = await self._check_answer(answer, meta)
            self.tree.trajectory.emit("turn", **meta, code=blocks, outputs=outputs, final=answer, note=note)
            if answer is not None:
                return Outcome(answer, "final", "the model gave a final answer", self.turn)
            self._append_feedback(outputs, note)
            if self.tree.budget.exceeded is not None:
                raise self.tree.budget.exceeded
            last_turn_s = time.monotonic() - started
        if fallback:
            return Outcome(None, "max_iterations", f"all {max_turns} turns were used", self.turn)
        return await self._force_final("max_iterations", f"all {max_turns} turns were used")

    async def _root_turn(self, *, allow: StopReason | None = None, resample: bool = True) -> tuple[str, dict[str, Any]]:
        """One root reply, appended to the conversation. A reply that repeats what was already tried is not
        appended: the turn is re-sampled instead (greedy decoding gives the same reply to the same prompt)."""
        self.tree.budget.check(allow=allow)
        self.turn += 1
        self._fit_window()
        generation, reply = await self._generate(self.temperature, self.seed)
        meta = self._turn_meta(generation, reply)
        if resample and self.guards.enabled and self.guards.is_retry(reply):
            reply, meta = await self._resample(reply, meta)
        self.messages.append({"role": "assistant", "content": reply})
        return reply, meta

    async def _generate(self, temperature: float, seed: int | None) -> tuple[Generation, str]:
        tree = self.tree
        request = GenerationRequest(
            messages=self.messages,
            options=SamplingOptions(max_tokens=self.config.root_max_tokens, temperature=temperature, seed=seed),
            kind="root",
            run_id=tree.run_id,
            depth=self.depth,
            cache_salt=tree.cache_salt,
        )
        generation = await tree.root_engine.generate(request)
        tree.budget.charge(generation.prompt_tokens + generation.completion_tokens)
        tree.usage.add("root", generation)
        return generation, strip_think(generation.text)

    async def _resample(self, reply: str, meta: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """Candidates for the same turn at a higher temperature, all at once (they share the prefix cache and batch);
        the first that tries something new replaces the reply. None does: the reply stays, with its note."""
        try:
            self.tree.budget.check()
        except BudgetExceeded:
            return reply, meta  # the loop stops after this turn
        n = guards.RESAMPLE_CANDIDATES
        temperature = max(guards.RESAMPLE_TEMPERATURE, self.config.temperature)
        base = self.seed
        seeds = [None if base is None else base + 1000 * self.turn + i + 1 for i in range(n)]
        candidates = await asyncio.gather(
            *(self._generate(temperature, seed) for seed in seeds), return_exceptions=True
        )
        for drawn in candidates:
            if isinstance(drawn, BaseException):
                if not isinstance(drawn, Exception):
                    raise drawn
                continue  # a failed candidate only means one fewer to choose from
            generation, candidate = drawn
            if self.guards.is_fresh(candidate):
                return candidate, {**self._turn_meta(generation, candidate), "resampled": n, "replaced": reply}
        return reply, {**meta, "resampled": n}

    def _turn_meta(self, generation: Generation, reply: str) -> dict[str, Any]:
        return {
            "run_id": self.tree.run_id,
            "run": self.label,
            "depth": self.depth,
            "turn": self.turn,
            "prompt_tokens": generation.prompt_tokens,
            "cached_tokens": generation.cached_tokens,
            "completion_tokens": generation.completion_tokens,
            "latency_s": round(generation.latency_s, 4),
            "queue_s": round(generation.queue_s, 4),
            "response": reply,
        }

    async def _run_blocks(self, session: ReplSession, blocks: list[str]) -> tuple[list[str], str | None]:
        outputs: list[str] = []
        self._cell_failed = False
        for code in blocks:
            result = await session.execute(code)
            self._cell_failed = bool(result.error)
            self.guards.observe(code, result)
            if result.state_lost:
                await self._preimport(session)
            if result.fault:
                self.tree.faults.append(result.fault)
                self.tree.trajectory.emit(
                    "fault", run_id=self.tree.run_id, run=self.label, depth=self.depth, fault=result.fault
                )
            outputs.append(self.format_cell(result))
            if result.final is not None:
                return outputs, result.final
            if self.tree.budget.exceeded is not None or result.error:
                break  # later blocks usually depend on the one that failed
        return outputs, None

    async def _resolve_final(
        self, session: ReplSession, reply: str, code_final: str | None, *, ran_code: bool
    ) -> tuple[str | None, str | None]:
        """The answer, if this turn gave one; else a note for the model about a FINAL that could not be used."""
        if code_final is not None:
            return self._guarded(code_final, None)
        final = find_final(reply)
        if final is None:
            return None, None
        answer, note = await self._literal_final(session, final, ran_code=ran_code)
        return self._guarded(answer, final.value) if answer is not None else (None, note)

    async def _literal_final(
        self, session: ReplSession, final: FinalAnswer, *, ran_code: bool
    ) -> tuple[str | None, str | None]:
        if final.is_variable or _IDENTIFIER.match(final.value):
            try:
                value = await session.get_var(final.value)
            except StateLost as lost:
                return None, f"FINAL_VAR({final.value}) could not be read: {lost}."
            if value is not None:
                return value, None
            if final.is_variable:
                return None, f"FINAL_VAR({final.value}): there is no variable named {final.value!r} in the REPL."
        if ran_code:
            # A literal answer written before the code's output was seen is a guess: show the output first.
            return None, "You wrote FINAL before seeing this output. If it is right, reply with FINAL(...) again."
        if self._last_cell_failed and not self._warned_failed:
            self._warned_failed = True  # once per run: a model sure of its answer is not held up twice
            return None, prompts.FAILED_CODE_NOTE
        return final.value, None

    def _guarded(self, answer: str, written: str | None) -> tuple[str | None, str | None]:
        refusal = self.guards.refuse(answer, written)
        return (None, refusal) if refusal else (answer, None)

    async def _check_answer(self, answer: str, meta: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """A written answer checked against the output it was read from, by one sub-call: a 0.5B root model was
        measured answering FINAL(remember this) from the printed line 'Remember this: the access code is CJE-8822.'
        Guards only; the sub-model's reply replaces the answer only when it is a real answer found in that output."""
        evidence = self._last_output
        if not (self.guards.enabled and evidence.strip()) or self.tree.budget.exceeded is not None:
            return answer, meta
        prompt = prompts.ANSWER_CHECK.format(query=self.query, output=evidence[-2000:])
        try:
            checked = strip_think(await self.ask_sub_model(prompt, max_tokens=64)).strip().strip("`").strip()
        except (BudgetExceeded, RLMError):
            return answer, meta
        checked = (find_final(checked, lenient=True) or FinalAnswer(checked, False)).value.strip()
        if answer.casefold() in checked.casefold() and len(answer) >= len(checked) / 2:
            return answer, meta  # the same answer in other words: keep the model's
        if _NUMBER.search(answer) and not _NUMBER.search(checked):
            return answer, meta  # a computed number (a count) is not traded for words read off the output
        if not checked or guards.non_answer(checked) or not written_in(checked, evidence):
            return answer, meta  # only an answer read off the printed text replaces the model's
        if guards.asks_for_several(self.query) and written_in(checked, answer):
            return answer, meta  # the model's answer names several things, the check only one of them
        if _BARE_NUMBER.fullmatch(answer.strip()) and written_in(answer, evidence):
            return answer, meta  # a number the code printed is not traded for another number in the same output
        if _one_of_the_options(answer, self.query) or _printed_value(answer, evidence):
            return answer, meta  # a choice between printed values stays the model's (a 1.5B check misread a Counter)
        return checked, {**meta, "answer_checked": answer} if checked != answer else meta

    def evidence(self) -> str:
        return "\n".join(self.printed)

    def _append_feedback(self, outputs: list[str], note: str | None) -> None:
        self._last_output = "\n".join(outputs)
        self.printed.extend(outputs)
        if outputs:
            output = (
                outputs[0] if len(outputs) == 1 else "\n".join(f"[block {i + 1}]\n{o}" for i, o in enumerate(outputs))
            )
            reminder = prompts.CONTINUE_REMINDER.format(
                turn=self.turn + 1, max_turns=self.config.budgets.max_iterations
            )
        elif note and self.guards.enabled:  # the reply had a FINAL: "no code and no FINAL" would be wrong
            # No "Output:" section: a 0.5B model searched the data for the words of a placeholder output.
            reminder = prompts.TURN_REMINDER.format(turn=self.turn + 1, max_turns=self.config.budgets.max_iterations)
            self.messages.append({"role": "user", "content": f"{note}\n{reminder}"})
            return
        else:
            output, reminder = prompts.NO_CODE_RUN, prompts.NO_CODE_REMINDER
        if note:
            reminder = f"{note}\n{reminder}"
        self.messages.append({"role": "user", "content": prompts.NEXT_USER.format(output=output, reminder=reminder)})

    def format_cell(self, result: CellResult) -> str:
        """A cell's output as the root model sees it: cut to size, with error hints and fault notes."""
        limit = self.config.output_chars
        parts = []
        if result.stdout:
            parts.append(truncate_output(result.stdout, limit, result.stdout_chars).rstrip("\n"))
        if result.stderr:
            parts.append("stderr:\n" + truncate_output(result.stderr, limit // 2, result.stderr_chars).rstrip("\n"))
        if result.error and not result.fault:
            parts.append(result.error)
            if hint := self.guards.hint(result.error):
                parts.append(hint)
        if result.fault:
            parts.append(prompts.STATE_LOST_NOTE.format(fault=result.fault))
        return "\n".join(parts) if parts else prompts.NO_OUTPUT

    # ---- ending --------------------------------------------------------------------------------------------------
    async def _force_final(self, reason: StopReason, detail: str) -> Outcome:
        """One more root turn, told to answer now; its FINAL (or, failing that, its text) is the answer."""
        last = self.messages[-1]
        if last["role"] == "user":  # not yet sent to the model, so the conversation stays append-only
            last["content"] = f"{last['content']}\n\n{prompts.FORCE_FINAL}"
        else:
            self.messages.append({"role": "user", "content": prompts.FORCE_FINAL})
        reply, meta = await self._root_turn(allow=reason if reason == "max_subcalls" else None, resample=False)
        final = find_final(reply, lenient=True)
        answer = final.value if final is not None else (outside_code(reply).strip() or None)
        if answer in ("", "None") or (answer and self.guards.enabled and guards.non_answer(answer)):
            answer = None  # no more turns to send it back: the run simply has no answer
        self.tree.trajectory.emit("turn", **meta, code=[], outputs=[], final=answer, note="forced final answer")
        return Outcome(answer, reason, detail, self.turn)

    async def _stopped(self, session: ReplSession, stop: BudgetExceeded) -> Outcome:
        """A budget ran out: answer from what we have if the budget still allows a root call."""
        if stop.reason == "max_subcalls":
            try:
                return await self._force_final(stop.reason, stop.detail)
            except (BudgetExceeded, RLMError):
                pass
        return Outcome(None, stop.reason, stop.detail, self.turn)

    # ---- prompts -------------------------------------------------------------------------------------------------
    def _first_message(self) -> str:
        """The query and what the data is; with the guards on, a preview of its first and last lines or items."""
        if not self.guards.enabled:
            return prompts.FIRST_USER.format(query=self.query, context_description=self.context.describe())
        return prompts.FIRST_USER_PREVIEW.format(query=self.query, context_description=self.context.preview())

    async def _preimport(self, session: ReplSession) -> None:
        if self.guards.enabled:
            await session.execute(guards.PREIMPORT_CODE)

    def _opening(self) -> list[dict[str, str]]:
        return self.profile.opening(
            context_hint=f"a {self.context.type_name}",
            sub_window=self.tree.sub_engine.max_model_len,
            output_chars=self.config.output_chars,
            allow_rlm_query=self.depth + 1 < self.config.budgets.max_depth,
            max_turns=self.config.budgets.max_iterations,
            preview=self.guards.enabled,
        )

    def _fit_window(self) -> None:
        """A conversation that, with room for a reply, no longer fits the root model's window loses its oldest cell
        outputs first (replaced by a note; the code stays, and the REPL keeps every variable), never the opening.
        Without this a long run ended with an error as soon as its outputs filled the window. If that is not
        enough, the newest output is cut in its middle too: with a long prompt profile in a 4,096-token window, one
        printed list of 2,000 characters ended 2 of 6 runs (1.5B) without an answer."""
        engine = self.tree.root_engine
        if not engine.max_model_len:
            return
        limit = engine.max_model_len - min(self.config.root_max_tokens, engine.max_model_len // 8)
        if most_tokens(self.messages) <= limit:
            return  # surely fits: no need to tokenize the whole conversation on every turn
        older = range(self._first_turn, len(self.messages) - 2)
        outputs = [i for i in older if self.messages[i]["role"] == "user" and self.messages[i]["content"] != ELIDED]
        for i in outputs:
            if engine.count_tokens(self.messages) <= limit:
                return
            self.messages[i] = {"role": "user", "content": ELIDED}
        newest = self.messages[-1]
        for _ in range(4):  # each cut takes the characters of the tokens over, at the newest message's own rate
            excess = engine.count_tokens(self.messages) - limit
            if excess <= 0 or len(self.messages) <= self._first_turn or len(newest["content"]) <= MIN_NEWEST_CHARS:
                return
            chars_per_token = len(newest["content"]) / max(1, engine.count_tokens([newest]))
            keep = max(MIN_NEWEST_CHARS, len(newest["content"]) - int(1.2 * excess * chars_per_token) - 100)
            newest = {"role": newest["role"], "content": truncate_output(newest["content"], keep)}
            self.messages[-1] = newest

    def _check_window(self) -> None:
        engine = self.tree.root_engine
        if not engine.max_model_len:
            return
        needed = engine.count_tokens(self.messages) + 64
        if needed > engine.max_model_len:
            raise ModelError(
                f"the root model's window ({engine.max_model_len:,} tokens) is smaller than the system prompt and "
                f"query ({needed:,} tokens): use a model with a longer window or raise --max-model-len"
            )

    # ---- sub-calls (called by the REPL session while a cell runs) -------------------------------------------------
    async def serve_subcalls(self, kind: str, prompt_list: list[str], options: dict[str, Any]) -> list[str]:
        budget = self.tree.budget
        # A frame with no prompts is charged as one call: frames are host work however empty they are.
        granted = min(budget.take_subcalls(max(1, len(prompt_list))), len(prompt_list))
        if kind == "rlm_query" and self.depth + 1 < self.config.budgets.max_depth:
            calls = [self._sub_rlm(p, options.get("context")) for p in prompt_list[:granted]]
        elif kind == "llm_choose":
            choices = [str(c) for c in options.get("choices", [])][:MAX_CHOICES]
            calls = [self._choose_call(p, choices) for p in prompt_list[:granted]]
        else:
            calls = [self._llm_call(p, options, kind) for p in prompt_list[:granted]]
        results = await asyncio.gather(*calls, return_exceptions=True)
        failure = next((r for r in results if isinstance(r, EngineError)), None)
        if failure is not None:  # no answer the model's code can use: the run stops with the engine's message
            budget.fail(f"the sub-model's engine failed: {failure}")
        answers = [r if isinstance(r, str) else _subcall_error(r) for r in results]
        refused = f"Error: not run: {budget.exceeded.detail}" if budget.exceeded else "Error: not run"
        return answers + [refused] * (len(prompt_list) - granted)

    async def ask_sub_model(self, prompt: str, *, max_tokens: int) -> str:
        """One sub-call made by the runtime itself (structured mode's planner), charged like the model's own."""
        self.tree.budget.take_subcalls(1)
        return await self._llm_call(prompt, {"max_tokens": max_tokens}, "plan")

    async def _choose_call(self, prompt: str, choices: list[str]) -> str:
        """One `llm_choose` prompt: a one-token reply whose log-probabilities give each choice's probability (a
        JSON list, one per choice)."""
        if not choices:
            return "Error: llm_choose needs a list of choices"
        options = SamplingOptions(max_tokens=1, temperature=0.0, top_logprobs=TOP_LOGPROBS)
        return await self._sub_call(prompt, options, "llm_choose", choices)

    async def _llm_call(self, prompt: str, options: dict[str, Any], kind: str) -> str:
        ceiling = self.config.sub_max_tokens * 4
        max_tokens = _int_option(options, "max_tokens", self.config.sub_max_tokens, 1, ceiling)
        temperature = _float_option(options, "temperature", self.config.temperature, 0.0, 2.0)
        sampling = SamplingOptions(max_tokens=max_tokens, temperature=temperature, seed=self.config.seed)
        return await self._sub_call(prompt, sampling, kind)

    async def _sub_call(
        self, prompt: str, sampling: SamplingOptions, kind: str, choices: list[str] | None = None
    ) -> str:
        """One sub-model request, charged and recorded. The reply is the model's text, or with `choices` the
        probabilities of each; a prompt too long for the window comes back as an error string for the model's code."""
        tree = self.tree
        tree.budget.check(allow="max_subcalls")
        request = GenerationRequest(
            messages=[{"role": "user", "content": prompt}],
            options=sampling,
            kind="sub",
            run_id=tree.run_id,
            depth=self.depth + 1,
            cache_salt=tree.cache_salt,
        )
        started = time.monotonic()
        event: dict[str, Any] = {
            "run_id": tree.run_id, "run": self.label, "depth": self.depth + 1, "kind": kind, "chars": len(prompt)
        }  # fmt: skip
        try:
            generation = await tree.sub_engine.generate(request)
        except PromptTooLong as exc:
            tree.trajectory.emit("subcall", **event, error=str(exc), latency_s=time.monotonic() - started)
            return (
                f"Error: {exc}. Send a shorter prompt: split the text into pieces of at most about "
                f"{max(1000, (exc.window - 512) * prompts.CHARS_PER_TOKEN):,} characters."
            )
        tree.budget.charge(generation.prompt_tokens + generation.completion_tokens)
        tree.usage.add("sub", generation)
        preview = generation.text
        if choices:
            probabilities = [
                round(p, 4) for p in choice_probabilities(generation.first_token_logprobs, choices, preview)
            ]
            reply, preview = json.dumps(probabilities), json.dumps(dict(zip(choices, probabilities, strict=True)))
        else:
            reply = strip_think(preview)
        tree.trajectory.emit(
            "subcall",
            **event,
            prompt_tokens=generation.prompt_tokens,
            cached_tokens=generation.cached_tokens,
            completion_tokens=generation.completion_tokens,
            latency_s=round(generation.latency_s, 4),
            queue_s=round(generation.queue_s, 4),
            prompt_preview=prompt[:200],
            response_preview=preview[:PREVIEW_CHARS],
        )
        return reply

    async def _sub_rlm(self, query: str, context: Any) -> str:
        tree = self.tree
        self._children += 1
        label = f"{self.label} / sub-RLM {self._children}"
        async with tree.sub_rlm_slots:  # one frame of many prompts must not start as many containers at once
            tree.usage.sub_rlm_runs += 1
            prepared = prepare_context(context if context is not None else query)
            try:
                outcome = await RLMRun(tree, query, prepared, self.depth + 1, label=label).run()
            finally:
                prepared.cleanup()
        tree.trajectory.emit(
            "sub_rlm",
            run_id=tree.run_id,
            run=self.label,
            child=label,
            depth=self.depth + 1,
            query=query[:200],
            answer=outcome.answer,
            stop_reason=outcome.stop_reason,
        )
        return outcome.answer if outcome.answer is not None else f"Error: sub-RLM stopped: {outcome.detail}"


def _one_of_the_options(answer: str, query: str) -> bool:
    """The answer is one of the options the question itself lists ("... billing, shipping or praise?")."""
    return answer.strip().casefold() in {option.casefold() for option in answer_options(query)}


def _printed_value(answer: str, evidence: str) -> bool:
    """The answer is a whole value the code printed (a quoted str in a list, dict or tuple), or a list of such
    values, not words of a sentence."""
    values = [v.strip(" '\"") for v in _LIST_SEPARATORS.split(answer.strip().strip("[]()"))]
    return all(v and any(f"{q}{v}{q}" in evidence for q in ("'", '"')) for v in values)


def _subcall_error(exc: BaseException) -> str:
    if isinstance(exc, BudgetExceeded):
        return f"Error: not run: {exc.detail}"
    return f"Error: {type(exc).__name__}: {exc}"


def _int_option(options: dict[str, Any], key: str, default: int, low: int, high: int) -> int:
    value = options.get(key, default)
    return max(low, min(high, value)) if isinstance(value, int) and not isinstance(value, bool) else default


def _float_option(options: dict[str, Any], key: str, default: float, low: float, high: float) -> float:
    value = options.get(key, default)
    return max(low, min(high, float(value))) if isinstance(value, int | float) else default
