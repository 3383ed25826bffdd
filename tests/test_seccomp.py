"""The worker's stacked seccomp filter (sandbox/seccomp_filter.py): refused calls get EPERM, everything else still runs.

The syscall numbers the probes use are written here apart from the module's tables, and the tables are checked
against the kernel headers when they are installed: a wrong number in the module fails a test, not Python.
"""

from __future__ import annotations

import functools
import json
import platform
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from rlm_local.docker_host import docker_available
from rlm_local.repl.docker_sandbox import DockerSandbox
from rlm_local.repl.process_sandbox import ProcessSandbox
from rlm_local.repl.session import ContextFile, ReplSession
from rlm_local.sandbox_image import DEFAULT_IMAGE, build_image, image_status

SANDBOX = Path(__file__).resolve().parents[1] / "sandbox"
sys.path.insert(0, str(SANDBOX))

import seccomp_filter  # noqa: E402  (never installed in the test process: only its tables are read here)

MACHINE = platform.machine()
NUMBERS = {  # name -> number, looked up apart from the module's tables
    "x86_64": {"io_uring_setup": 425, "ptrace": 101, "bpf": 321, "unshare": 272, "getpid": 39},
    "aarch64": {"io_uring_setup": 425, "ptrace": 117, "bpf": 280, "unshare": 97, "getpid": 172},
}.get(MACHINE)
needs_table = pytest.mark.skipif(NUMBERS is None, reason=f"no syscall numbers for {MACHINE}")

# Prints {call: "ok" | errno name} for calls with harmless arguments. unshare(0) changes nothing and succeeds without
# a filter; PTRACE_TRACEME (0) would make the parent our tracer, so it is only tried where it must be refused.
PROBE = """
import ctypes, errno, json
libc = ctypes.CDLL(None, use_errno=True)
def outcome(nr, *args):
    ctypes.set_errno(0)
    return "ok" if libc.syscall(nr, *args) != -1 else errno.errorcode[ctypes.get_errno()]
def probe(numbers, names):
    args = {{"io_uring_setup": (1, ctypes.create_string_buffer(120)), "ptrace": (0, 0, 0, 0), "bpf": (0, None, 0)}}
    return {{name: outcome(numbers[name], *args.get(name, (0,))) for name in names}}
NUMBERS = {numbers!r}
PROBE_SOURCE = {source!r}
"""
# x86_64 only: a 64-bit process can still make i386 calls with `int 0x80`; the filter refuses every foreign arch.
INT80 = """
import ctypes, mmap
page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
page.write(bytes([0xB8, 20, 0, 0, 0, 0xCD, 0x80, 0xC3]))  # mov eax, 20 (i386 getpid); int 0x80; ret
i386_getpid = ctypes.CFUNCTYPE(ctypes.c_int)(ctypes.addressof(ctypes.c_char.from_buffer(page)))
"""
DENIED_PROBED = ["io_uring_setup", "ptrace", "bpf", "unshare"]
REFUSED = dict.fromkeys(DENIED_PROBED, "EPERM")
in_module_loop = pytest.mark.asyncio(loop_scope="module")  # the loop of the module's async fixtures


async def echo_subcalls(kind: str, prompts: list[str], options: dict) -> list[str]:
    return [f"{kind}:{prompt}" for prompt in prompts]


def probe_code(body: str) -> str:
    """`body` after the probe; PROBE_SOURCE is the probe again, for a child process to run."""
    source = PROBE.format(numbers=NUMBERS, source="")
    return PROBE.format(numbers=NUMBERS, source=source) + textwrap.dedent(body)


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


# ---- the tables and the program ----------------------------------------------------------------------------------
def test_tables_cover_the_deny_list_on_every_arch() -> None:
    for machine, table in seccomp_filter.SYSCALLS.items():
        assert set(table) == set(seccomp_filter.DENIED), machine
        assert len(set(table.values())) == len(table), machine  # no number twice
        assert "personality" not in table  # Python may call it
        prog = seccomp_filter.program(machine)
        assert all(jt <= 255 and jf <= 255 for _, jt, jf, _ in prog) and len(prog) < 4096


@pytest.mark.parametrize(
    ("machine", "header"),
    [("x86_64", "/usr/include/x86_64-linux-gnu/asm/unistd_64.h"), ("aarch64", "/usr/include/asm-generic/unistd.h")],
)
def test_numbers_match_the_kernel_headers(machine: str, header: str) -> None:
    if not Path(header).is_file():
        pytest.skip(f"{header} is not installed (linux-libc-dev)")
    defined = dict(re.findall(r"#define __NR(?:3264)?_(\w+)\s+(\d+)", Path(header).read_text()))
    assert {name: int(defined[name]) for name in seccomp_filter.DENIED} == seccomp_filter.SYSCALLS[machine]


# ---- on the host, without Docker ---------------------------------------------------------------------------------
@needs_table
def test_filter_in_a_fresh_process() -> None:
    code = probe_code(
        f"""
        import subprocess, sys, threading
        sys.path.insert(0, {str(SANDBOX)!r})
        import seccomp_filter
        before = probe(NUMBERS, ["unshare", "getpid"])
        installed = seccomp_filter.install()
        after = probe(NUMBERS, {DENIED_PROBED!r} + ["getpid"])
        in_thread = []
        thread = threading.Thread(target=lambda: in_thread.append(probe(NUMBERS, ["unshare", "getpid"])))
        thread.start(); thread.join()
        code = PROBE_SOURCE + "print(json.dumps(probe(NUMBERS, ['unshare', 'getpid'])))"
        child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        print(json.dumps({{"before": before, "installed": installed, "after": after,
                          "thread": in_thread[0], "child": json.loads(child.stdout)}}))
        """
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen["before"] == {"unshare": "ok", "getpid": "ok"}  # the probe tells a refusal from a success
    assert seen["installed"] is True
    assert seen["after"] == {**REFUSED, "getpid": "ok"}
    assert seen["thread"] == seen["child"] == {"unshare": "EPERM", "getpid": "ok"}  # threads and children inherit it


@functools.cache
def i386_calls_work() -> bool:
    """Whether this kernel runs i386 calls of a 64-bit process (IA32 emulation): without it there is no back door."""
    result = run_python(INT80 + "import os; print(i386_getpid() == os.getpid())")
    return MACHINE == "x86_64" and result.returncode == 0 and result.stdout.strip() == "True"


@pytest.mark.skipif(MACHINE != "x86_64", reason="x86_64's other ABIs")
def test_i386_and_x32_calls_are_refused() -> None:
    if not i386_calls_work():
        pytest.skip("this kernel runs no i386 calls")
    body = f"""
        import sys
        sys.path.insert(0, {str(SANDBOX)!r})
        import seccomp_filter
        seccomp_filter.install()
        print(i386_getpid(), outcome(0x40000000 | 39))  # i386 getpid, x32 getpid
        """
    result = run_python(probe_code(INT80 + textwrap.dedent(body)))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "-1 EPERM\n"  # -EPERM in eax


def test_unknown_machine_changes_nothing_and_says_so() -> None:
    code = textwrap.dedent(
        f"""
        import platform, sys
        sys.path.insert(0, {str(SANDBOX)!r})
        import seccomp_filter
        platform.machine = lambda: "sparc64"
        print(seccomp_filter.install(), open("/proc/self/status").read().count("Seccomp:\\t0"))
        """
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "1"]
    assert result.stderr.strip() == "seccomp_filter: no syscall table for 'sparc64'; all calls stay allowed"


@needs_table
@in_module_loop
async def test_the_process_sandbox_worker_is_filtered(tmp_path: Path) -> None:
    context = tmp_path / "context.txt"
    context.write_text("abc" * 100)
    sandbox = ProcessSandbox()
    try:
        async with ReplSession(sandbox, ContextFile(context), echo_subcalls, cell_timeout_s=30) as repl:
            result = await repl.execute(probe_code("print(json.dumps(probe(NUMBERS, ['unshare'])), len(context))"))
    finally:
        await sandbox.close()
    assert result.error is None, result.error
    assert result.stdout == '{"unshare": "EPERM"} 300\n'


# ---- in the sandbox container ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def image() -> str:
    if not docker_available(timeout=5):
        pytest.fail("the Docker engine does not answer: start it with `sudo systemctl start docker` (or `dockerd &`)")
    if image_status() != "ok":
        build_image()
    assert image_status() == "ok"
    return DEFAULT_IMAGE


@pytest.fixture
async def container_session(image: str, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("seccomp")  # short: the host socket's path must fit AF_UNIX
    (root / "context.txt").write_text("line\n" * 1000)
    sandbox = DockerSandbox(image, mem_limit="256m", pids_limit=64, root=root)
    try:
        async with ReplSession(sandbox, ContextFile(root / "context.txt"), echo_subcalls, cell_timeout_s=30) as repl:
            yield repl
    finally:
        await sandbox.close()


async def run_ok(repl: ReplSession, body: str) -> str:
    result = await repl.execute(probe_code(body))
    assert result.error is None and result.fault is None, (result.error, result.fault)
    return result.stdout


@needs_table
@pytest.mark.docker
@in_module_loop
async def test_the_container_refuses_the_denied_calls(container_session: ReplSession) -> None:
    repl = container_session
    assert json.loads(await run_ok(repl, f"print(json.dumps(probe(NUMBERS, {DENIED_PROBED!r})))")) == REFUSED
    status = await run_ok(repl, "print(open('/proc/self/status').read())")
    assert "Seccomp_filters:\t2" in status  # Docker's default profile, then the worker's own
    child = """
        import subprocess, sys
        code = PROBE_SOURCE + "print(json.dumps(probe(NUMBERS, ['io_uring_setup'])))"
        print(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
        """
    assert json.loads(await run_ok(repl, child)) == {"io_uring_setup": "EPERM"}  # a child inherits the filter
    if i386_calls_work():  # Docker's profile allows i386 calls; the filter does not
        assert await run_ok(repl, INT80 + "print(i386_getpid(), outcome(0x40000000 | 39))") == "-1 EPERM\n"


@needs_table
@pytest.mark.docker
@in_module_loop
async def test_ordinary_work_still_runs_in_the_container(container_session: ReplSession) -> None:
    code = """
        import math, re, statistics, subprocess, sys
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(4) as pool:
            squares = sum(pool.map(lambda n: n * n, range(100)))
        words = len(re.findall(r"line", context))
        child = subprocess.run([sys.executable, "-c", "print(1)"], capture_output=True, text=True).stdout.strip()
        blob = json.loads(json.dumps({"pi": round(math.pi, 3), "mean": statistics.mean([1, 2, 3])}))
        print(squares, words, child, blob, probe(NUMBERS, ["getpid"]), llm_query("hi"))
        """
    out = await run_ok(container_session, code)
    assert out == "328350 1000 1 {'pi': 3.142, 'mean': 2} {'getpid': 'ok'} llm_query:hi\n"
