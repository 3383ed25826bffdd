"""The Docker sandbox against the real engine: isolation, faults, the warm pool and leak-freedom.

Every attack test checks that the attack failed AND that the session survived: a follow-up cell still answers
with the right `len(context)` (after a restart, `state_lost` is reported and the context is back). These tests never
skip: without a Docker engine they fail with the message that says how to start one, and a missing or outdated image
is built first (quick when it is up to date).
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import os
import signal
import subprocess
import sys
import textwrap
import time
import tracemalloc
from pathlib import Path

import pytest

from rlm_local.docker_host import LABEL, LABEL_PID, docker_available, docker_client, owner_labels
from rlm_local.errors import SandboxError
from rlm_local.repl.docker_sandbox import CONTAINER_DIR, DockerSandbox
from rlm_local.repl.sandbox import SOCKET_NAME
from rlm_local.repl.session import CellResult, ContextFile, ReplSession
from rlm_local.sandbox_image import DEFAULT_IMAGE, build_image, gc_containers, image_status

pytestmark = [pytest.mark.docker, pytest.mark.asyncio(loop_scope="module")]

REPO = Path(__file__).resolve().parent.parent
CONTEXT_TEXT = "".join(f"line {i}: the quick brown fox\n" for i in range(4000))
MEM_LIMIT = "512m"  # printing 100 MB needs ~300 MB in the worker; the memory bomb still hits the limit quickly
PIDS_LIMIT = 64


async def echo_subcalls(kind: str, prompts: list[str], options: dict) -> list[str]:
    return [f"{kind}:{prompt}" for prompt in prompts]


def containers_of(pid: int) -> list[dict]:
    return docker_client().api.containers(all=True, filters={"label": [f"{LABEL}=1", f"{LABEL_PID}={pid}"]})


# ---- fixtures --------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def image() -> str:
    if not docker_available(timeout=5):
        pytest.fail(
            "the Docker engine does not answer: start it with `sudo systemctl start docker` (or `sudo dockerd &`); "
            "these tests need a real engine"
        )
    if image_status() != "ok":
        build_image()
    assert image_status() == "ok"
    return DEFAULT_IMAGE


@pytest.fixture(scope="module")
def context_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ctx") / "context.txt"
    path.write_text(CONTEXT_TEXT)
    return path


@pytest.fixture(scope="module")
def sandbox(image: str, tmp_path_factory: pytest.TempPathFactory):
    """One sandbox for the module; a pool of 1 makes the many restarts below cheap."""
    sb = DockerSandbox(
        image,
        pool_size=1,
        mem_limit=MEM_LIMIT,
        pids_limit=PIDS_LIMIT,
        tmpfs_size="16m",
        cpus=1.0,
        root=tmp_path_factory.mktemp("channels"),
    )
    asyncio.run(sb.start())
    yield sb
    sb.close_sync()
    assert containers_of(os.getpid()) == [], "the module sandbox left containers behind"


@pytest.fixture
async def session(sandbox: DockerSandbox, context_file: Path):
    repl = ReplSession(
        sandbox, ContextFile(context_file), echo_subcalls, cell_timeout_s=2.0, interrupt_grace_s=1.0, start_timeout_s=30
    )
    await repl.start()
    yield repl
    await repl.close()


async def assert_answers(repl: ReplSession) -> CellResult:
    """The session still works: `len(context)` is right (a first try may report a restart)."""
    result = await repl.execute("print(len(context))")
    if result.state_lost:
        result = await repl.execute("print(len(context))")
    assert result.error is None, result.error
    assert result.stdout == f"{len(CONTEXT_TEXT)}\n"
    return result


async def run_ok(repl: ReplSession, code: str) -> str:
    result = await repl.execute(textwrap.dedent(code))
    assert result.error is None and result.fault is None, (result.error, result.fault)
    return result.stdout


# ---- basics ----------------------------------------------------------------------------------------------------------
async def test_cells_state_and_subcalls(session: ReplSession) -> None:
    assert session.context_chars == len(CONTEXT_TEXT)
    await run_ok(session, "x = len(context) * 2")
    assert await run_ok(session, "print(x, llm_query('hi'), llm_query_batched(['a', 'b']))") == (
        f"{2 * len(CONTEXT_TEXT)} llm_query:hi ['llm_query:a', 'llm_query:b']\n"
    )
    assert await run_ok(session, "import os; print(os.getuid(), os.getgid())") == "10001 10001\n"


async def test_container_is_locked_down(session: ReplSession, sandbox: DockerSandbox) -> None:
    slot = session._slot
    attrs = docker_client().api.inspect_container(slot.container_id)
    host = attrs["HostConfig"]
    assert host["NetworkMode"] == "none"
    assert host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"] and not host.get("CapAdd")
    assert "no-new-privileges" in host["SecurityOpt"]
    assert host["PidsLimit"] == PIDS_LIMIT
    assert host["Memory"] == host["MemorySwap"] == 512 * 1024 * 1024
    assert host["NanoCpus"] == 1_000_000_000
    assert host["Init"] is True and host["AutoRemove"] is True
    assert not host.get("PortBindings") and not attrs["NetworkSettings"].get("Ports")
    assert "/tmp" in host["Tmpfs"]
    assert attrs["Config"]["User"] == "10001:10001"
    mounts = attrs["Mounts"]
    assert [(m["Destination"], m["RW"]) for m in mounts] == [(CONTAINER_DIR, False)]
    assert all("docker.sock" not in m["Source"] for m in mounts)


# ---- network ---------------------------------------------------------------------------------------------------------
CONNECT = """
import socket
try:
    socket.create_connection(({host!r}, {port}), timeout={timeout}).close()
    print("CONNECTED")
except OSError as exc:
    print("blocked", type(exc).__name__, exc.errno)
"""


@pytest.fixture
async def host_listener():
    """A TCP server on the host, on every interface: it must never see a connection from the sandbox."""
    seen: list[object] = []

    def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(writer.get_extra_info("peername"))
        writer.close()

    server = await asyncio.start_server(on_connect, "0.0.0.0", 0)
    port = server.sockets[0].getsockname()[1]
    yield port, seen
    server.close()
    await server.wait_closed()


async def test_no_tcp_to_host_loopback(session: ReplSession, host_listener) -> None:
    port, seen = host_listener
    out = await run_ok(session, CONNECT.format(host="127.0.0.1", port=port, timeout=2))
    assert out.startswith("blocked ConnectionRefusedError"), out  # the container's own loopback: nobody listens
    assert await run_ok(session, "import socket; print([n for _, n in socket.if_nameindex()])") == "['lo']\n"
    assert seen == []
    await assert_answers(session)


async def test_no_tcp_to_bridge_gateway(session: ReplSession, host_listener) -> None:
    port, seen = host_listener
    bridge = docker_client().api.inspect_network("bridge")
    gateway = (bridge.get("IPAM", {}).get("Config") or [{}])[0].get("Gateway") or "172.17.0.1"
    started = time.monotonic()
    out = await run_ok(session, CONNECT.format(host=gateway, port=port, timeout=2))
    assert out.strip() == "blocked OSError 101", out  # ENETUNREACH at once: there is no route, nothing is sent
    assert time.monotonic() - started < 1.5
    assert seen == []
    await assert_answers(session)


async def test_no_tcp_to_outside_or_dns(session: ReplSession) -> None:
    out = await run_ok(session, CONNECT.format(host="192.0.2.1", port=80, timeout=2))
    assert out.strip() == "blocked OSError 101", out
    out = await run_ok(
        session,
        """
        import socket
        try:
            print(socket.getaddrinfo("deb.debian.org", 80))
        except OSError as exc:
            print("no dns", type(exc).__name__)
        """,
    )
    assert out.startswith("no dns"), out
    await assert_answers(session)


# ---- files -----------------------------------------------------------------------------------------------------------
async def test_host_files_are_not_visible(session: ReplSession, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("host secret")
    paths = [str(secret), str(REPO / "pyproject.toml"), "/work", "/var/run/docker.sock", "/run/docker.sock"]
    out = await run_ok(
        session,
        f"""
        import os
        for path in {paths!r}:
            print(path, os.path.exists(path))
        for path in ("/etc/shadow", "/root"):
            try:
                print(path, "READ", open(path).read()[:20] if path != "/root" else os.listdir(path))
            except OSError as exc:
                print(path, type(exc).__name__)
        """,
    )
    for path in paths:
        assert f"{path} False" in out
    assert "/etc/shadow PermissionError" in out and "/root PermissionError" in out
    assert "READ" not in out
    await assert_answers(session)


async def test_root_filesystem_and_context_are_read_only(session: ReplSession, context_file: Path) -> None:
    before = hashlib.sha256(context_file.read_bytes()).hexdigest()
    targets = ["/x", "/etc/passwd", "/opt/rlm/repl_worker.py", f"{CONTAINER_DIR}/context", f"{CONTAINER_DIR}/new"]
    out = await run_ok(
        session,
        f"""
        import os
        for path in {targets!r}:
            try:
                with open(path, "a") as f:
                    f.write("pwned")
                print(path, "WRITTEN")
            except OSError as exc:
                print(path, "refused", exc.errno)
        for path in ("{CONTAINER_DIR}/host.sock", "{CONTAINER_DIR}/context"):
            try:
                os.unlink(path)
                print(path, "DELETED")
            except OSError as exc:
                print(path, "refused", exc.errno)
        open("/tmp/scratch", "w").write("ok")  # /tmp is a small private tmpfs
        try:
            with open("/tmp/big", "wb") as f:
                f.write(b"x" * (32 << 20))
            print("tmpfs UNBOUNDED")
        except OSError as exc:
            print("tmpfs full", exc.errno)
        os.unlink("/tmp/big")
        """,
    )
    assert "WRITTEN" not in out and "DELETED" not in out, out
    assert out.count("refused") == len(targets) + 2
    assert "tmpfs full 28" in out  # ENOSPC
    assert hashlib.sha256(context_file.read_bytes()).hexdigest() == before
    await assert_answers(session)


# ---- resources -------------------------------------------------------------------------------------------------------
async def test_fork_bomb_is_contained(session: ReplSession) -> None:
    result = await session.execute(
        textwrap.dedent(
            """
            import os
            while True:
                os.fork()
            """
        )
    )
    # Every copy of the worker fails to fork at the pids limit; the host then either reads a result or sees the
    # copies' extra frames and replaces the worker. Either way it goes on.
    assert result.error is not None or result.fault is not None
    if result.fault is None:
        assert "BlockingIOError" in result.error or "Resource temporarily unavailable" in result.error
    await assert_answers(session)
    if not session.restarts:  # the bomb's processes are still there, below the limit
        count = await run_ok(session, "import os; print(sum(p.isdigit() for p in os.listdir('/proc')))")
        assert int(count) <= PIDS_LIMIT


async def test_memory_bomb_replaces_worker(session: ReplSession) -> None:
    await run_ok(session, "kept = 1")
    result = await session.execute("chunks = []\nwhile True:\n    chunks.append(b'x' * (32 << 20))")
    assert result.state_lost
    assert "out of memory" in result.fault
    await assert_answers(session)
    assert "NameError" in (await session.execute("kept")).error  # a fresh worker


async def test_endless_loop_is_interrupted(session: ReplSession) -> None:
    await run_ok(session, "kept = 41")
    result = await session.execute("while True:\n    pass")
    assert result.timed_out and not result.state_lost
    assert "KeyboardInterrupt" in result.error
    assert await run_ok(session, "print(kept + 1)") == "42\n"  # SIGINT through the container's init kept the state


async def test_loop_ignoring_interrupts_is_replaced(session: ReplSession) -> None:
    result = await session.execute(
        textwrap.dedent(
            """
            while True:
                try:
                    while True:
                        pass
                except KeyboardInterrupt:
                    pass
            """
        )
    )
    assert result.timed_out and result.state_lost
    assert "did not respond to an interrupt" in result.fault
    await assert_answers(session)


async def test_huge_output_is_bounded(session: ReplSession) -> None:
    result = await session.execute("print('x' * 100_000_000)")
    assert result.error is None and result.fault is None
    assert result.stdout_chars == 100_000_001
    assert len(result.stdout) < 1_000_000
    await assert_answers(session)


# ---- signals ---------------------------------------------------------------------------------------------------------
async def test_kill_parent_and_init(session: ReplSession) -> None:
    # The worker's parent is the container's init (pid 1): SIGKILL from inside the container does not reach it.
    out = await run_ok(session, "import os, signal\nprint(os.getppid())\nos.kill(os.getppid(), signal.SIGKILL)")
    assert out == "1\n"
    await assert_answers(session)
    # SIGTERM to init is forwarded to the worker, which dies: the host replaces it.
    result = await session.execute("import os, signal\nos.kill(1, signal.SIGTERM)\nimport time; time.sleep(5)")
    assert result.state_lost and "SIGTERM" in result.fault, result.fault
    await assert_answers(session)
    result = await session.execute("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)")
    assert result.state_lost and "SIGKILL" in result.fault, result.fault
    await assert_answers(session)


# ---- the channel -----------------------------------------------------------------------------------------------------
FIND_SOCKET = """
import gc, os, socket, struct, time
channel = next(
    o for o in gc.get_objects() if isinstance(o, socket.socket) and o.family == socket.AF_UNIX and o.fileno() >= 0
)
"""
SEND = "def send(payload):\n    channel.sendall(struct.pack('>I', len(payload)) + payload)\n"


@pytest.mark.parametrize(
    ("junk", "expected"),
    [
        ("channel.sendall(struct.pack('>I', 7) + b'garbage')", "not JSON"),
        ("channel.sendall(struct.pack('>I', 5) + b'[1,2]')", "not a JSON object"),
        ("channel.sendall(struct.pack('>I', 0xFFFFFFF0))", "exceeds"),
        ("os.write(channel.fileno(), struct.pack('>I', (64 << 20) + 1) + b'{')", "exceeds"),
        (
            "fd = next(int(n) for n in os.listdir('/proc/self/fd') if 'socket' in os.readlink(f'/proc/self/fd/{n}'))\n"
            "os.write(fd, struct.pack('>I', 4) + b'\\xff\\xfe\\xfd\\xfc')",
            "not JSON",
        ),
        (SEND + "send(b'{\"type\": \"subcall\", \"x\": ' + b'[' * 50000 + b']' * 50000 + b'}')", "nests"),
        (SEND + 'send(b\'{"type": "exec_result", "id": 1, "n": \' + b\'9\' * 5000 + b\'}\')', "digits"),
        (SEND + 'send(b\'{"type": "exec_result", "id": 1, "elapsed_s": NaN}\')', "not a number"),
        (SEND + 'send(b\'{"type": "exec_result", "id": 1, "elapsed_s": 1e999}\')', "out of range"),
    ],
)
async def test_junk_on_the_channel_replaces_worker(session: ReplSession, junk: str, expected: str) -> None:
    result = await session.execute(FIND_SOCKET + junk + "\ntime.sleep(5)")
    assert result.state_lost, result
    assert expected in result.fault and "the REPL was restarted" in result.fault
    await assert_answers(session)


# ---- a hostile worker: what a frame costs the host stays bounded ---------------------------------------------------
async def test_a_frame_padded_with_millions_of_lists_costs_the_host_little(session: ReplSession) -> None:
    """One sub-call frame under the size cap, padded with 20 million empty lists: refused before it is parsed, in
    host memory under 3x its size, without stalling the event loop that other runs share."""
    pad = 'b\'{"type": "subcall", "kind": "llm_query", "prompts": ["hi"], "pad": [\' + b\'[],\' * 20_000_000'
    code = FIND_SOCKET + SEND + f"send({pad} + b'[]]}}')\ntime.sleep(30)"
    frame_bytes = 60_000_000
    ticks: list[float] = []

    async def tick() -> None:  # what another run's cell round-trip would see
        while True:
            ticks.append(time.monotonic())
            await asyncio.sleep(0.005)

    ticker = asyncio.create_task(tick())
    tracemalloc.start()
    try:
        result = await session.execute(code)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        ticker.cancel()
    assert result.state_lost and "element" in result.fault, result
    assert peak < 3 * frame_bytes, f"host peak {peak / 1e6:.0f} MB for a {frame_bytes / 1e6:.0f} MB frame"
    stall = max(b - a for a, b in itertools.pairwise(ticks))
    print(f"padded frame: host peak {peak / 1e6:.1f} MB for {frame_bytes / 1e6:.0f} MB, stall {stall * 1e3:.0f} ms")
    assert stall < 0.25, f"the event loop stalled {stall * 1000:.0f} ms"
    await assert_answers(session)


async def test_a_lone_surrogate_in_output_or_a_prompt_is_replaced(session: ReplSession) -> None:
    result = await session.execute("print('a\\ud800b')\nprint(llm_query('x\\udfff'))")
    assert result.error is None, result.error
    assert "a\ufffdb" in result.stdout and "llm_query:x\ufffd" in result.stdout
    assert result.stdout.encode("utf-8")  # strict UTF-8: the trajectory, a tokenizer and HTTP all accept it


async def test_a_worker_that_never_reads_its_sub_call_reply_is_replaced_in_the_cell_time(session: ReplSession) -> None:
    frame = "json.dumps({'type': 'subcall', 'id': 1, 'kind': 'llm_query', 'prompts': ['x' * 8_000_000]}).encode()"
    started = time.monotonic()
    result = await session.execute(FIND_SOCKET + SEND + f"import json\nsend({frame})\ntime.sleep(120)")
    assert time.monotonic() - started < 20  # the cell's 2 s limit, not the run's deadline
    assert result.state_lost and "did not read the reply" in result.fault, result
    await assert_answers(session)


async def test_pipelined_sub_call_frames_cannot_stretch_a_cell(session: ReplSession) -> None:
    """Empty sub-call frames sent as fast as the worker can: host work on them runs the cell clock."""
    code = (
        FIND_SOCKET
        + SEND
        + textwrap.dedent(
            """
        import threading
        threading.Thread(target=lambda: [channel.recv(1 << 16) for _ in iter(int, 1)], daemon=True).start()
        frame = b'{"type": "subcall", "id": 1, "kind": "llm_query", "prompts": [], "options": {}}'
        while True:
            send(frame)
        """
        )
    )
    started = time.monotonic()
    result = await session.execute(code)
    assert time.monotonic() - started < 15  # 2 s of cell time, 1 s of grace, then a fresh worker at worst
    assert result.timed_out, result
    await assert_answers(session)


async def test_the_host_socket_takes_one_connection_then_stops_listening(session: ReplSession) -> None:
    code = textwrap.dedent(
        f"""
        import os, socket
        path = '{CONTAINER_DIR}/{SOCKET_NAME}'
        refused = 0
        for _ in range(2000):
            s = socket.socket(socket.AF_UNIX)
            try:
                s.connect(path)
            except OSError:
                refused += 1
            finally:
                s.close()
        print(os.path.exists(path), refused)
        """
    )
    assert (await run_ok(session, code)).split() == ["False", "2000"]
    await assert_answers(session)


# ---- pool, cleanup, gc, errors ---------------------------------------------------------------------------------------
async def test_warm_pool_and_close(image: str) -> None:
    sb = DockerSandbox(image, pool_size=1, mem_limit="128m")
    try:
        await sb.start()  # returns once the pool is full
        assert sb.pool_ready() == 1
        [pooled] = sb.owned()
        state = docker_client().api.inspect_container(pooled)["State"]
        assert state["Running"], state
        slot = await sb.acquire()
        assert slot.name == pooled  # taken from the pool, not started now
        await sb.start()  # the pool was refilled in the background
        assert sb.pool_ready() == 1 and len(sb.owned()) == 2
        repl = ReplSession(sb, None, echo_subcalls, cell_timeout_s=5)
        await repl.start()
        assert (await repl.execute("print(1 + 1)")).stdout == "2\n"
        await repl.close()
        await slot.kill()
        await slot.kill()  # safe twice
        assert await slot.exit_reason() == "container removed"
    finally:
        await sb.close()
    mine = [c["Names"][0] for c in containers_of(os.getpid())]
    assert not any(name.lstrip("/") in {pooled, slot.name} for name in mine)
    assert sb.owned() == []


async def test_gc_removes_containers_a_dead_host_left_created_and_spares_a_live_hosts(image: str) -> None:
    """A host that dies between creating and starting a container leaves it in `Created`: only `gc` removes it."""
    code = textwrap.dedent(
        f"""
        from rlm_local.docker_host import docker_client, owner_labels
        print(docker_client().api.create_container({image!r}, labels=owner_labels())["Id"])
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    api = docker_client().api
    orphan = api.inspect_container(child.stdout.strip())
    assert orphan["State"]["Status"] == "created"
    mine = api.create_container(image, labels=owner_labels())["Id"]  # this live process's: left alone
    try:
        removed = await asyncio.to_thread(gc_containers)
        assert orphan["Name"].lstrip("/") in removed
        assert orphan["Id"] not in {c["Id"] for c in api.containers(all=True)}
        assert api.inspect_container(mine)["State"]["Status"] == "created"
    finally:
        api.remove_container(mine, force=True)


@pytest.mark.parametrize("ending", ["return", "exception", "sigint", "sigterm"])
async def test_no_leak_however_the_process_ends(image: str, ending: str) -> None:
    """Without close(): the containers (an acquired one and the pool's refill, in flight) go at exit."""
    code = textwrap.dedent(
        f"""
        import asyncio, sys
        from rlm_local.repl.docker_sandbox import DockerSandbox
        async def main():
            sb = DockerSandbox({image!r}, pool_size=1, mem_limit="128m")
            await sb.start()
            slot = await sb.acquire()
            print(slot.name, flush=True)
            if sys.argv[1] == "exception":
                raise RuntimeError("boom")
            if sys.argv[1] != "return":
                await asyncio.sleep(600)
        asyncio.run(main())
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(
        [sys.executable, "-c", code, ending], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
    )
    try:
        name = (await asyncio.wait_for(asyncio.to_thread(child.stdout.readline), 60)).strip()
        assert name.startswith(f"rlm-local-{child.pid}-")
        if ending in ("sigint", "sigterm"):
            child.send_signal(signal.SIGINT if ending == "sigint" else signal.SIGTERM)
        returncode = await asyncio.to_thread(child.wait, 60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    expected = {"return": 0, "exception": 1, "sigint": -signal.SIGINT, "sigterm": -signal.SIGTERM}[ending]
    assert returncode == expected
    deadline = time.monotonic() + 10  # the workers see their host's socket hang up, exit, and Docker removes them
    while containers_of(child.pid) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    assert containers_of(child.pid) == []


async def test_gvisor_runtime_or_clear_error(image: str, context_file: Path) -> None:
    """Under gVisor where the engine has runsc (same checks as runc), else the error says how to register it."""
    sb = DockerSandbox(image, runtime="runsc", mem_limit="256m")
    try:
        if "runsc" not in (docker_client().api.info().get("Runtimes") or {}):
            with pytest.raises(SandboxError, match=r"--host-uds=open"):
                await sb.acquire()
            return
        repl = ReplSession(sb, ContextFile(context_file), echo_subcalls, cell_timeout_s=2.0, interrupt_grace_s=1.0)
        await repl.start()
        try:
            out = await run_ok(repl, "import os\nprint(os.uname().release, os.getuid(), llm_query('g'))")
            assert out.endswith(" 10001 llm_query:g\n")
            assert (await repl.execute("while True:\n    pass")).timed_out
            out = await run_ok(repl, CONNECT.format(host="192.0.2.1", port=80, timeout=2))
            assert out.startswith("blocked"), out
            result = await repl.execute("chunks = []\nwhile True:\n    chunks.append(b'x' * (32 << 20))")
            assert result.state_lost and "out of memory" in result.fault
            await assert_answers(repl)
        finally:
            await repl.close()
    finally:
        await sb.close()


async def test_clear_errors(image: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SandboxError, match="rlm-local sandbox build"):
        await DockerSandbox("rlm-local-no-such-image:none").acquire()
    with pytest.raises(SandboxError, match="not registered"):
        await DockerSandbox(image, runtime="no-such-runtime").acquire()
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    assert docker_available(timeout=1) is False
    with pytest.raises(SandboxError, match=r"systemctl start docker.*dockerd"):
        await DockerSandbox(image).acquire()
