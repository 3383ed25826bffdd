"""A stacked seccomp filter: the REPL worker refuses system calls a Python REPL never needs.

Docker's default profile still allows io_uring and ptrace, among others. The worker installs this filter on itself
before any model-written code runs; a filter stacks on top of Docker's and can never be removed afterwards (nor by the
processes it starts, which inherit it). A refused call fails with EPERM, like any other permission error.
Standard library only (ctypes): this file runs inside the sandbox image.
"""

from __future__ import annotations

import ctypes
import errno
import platform
import sys

DENIED = (
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    "ptrace", "process_vm_readv", "process_vm_writev",
    "bpf", "perf_event_open", "userfaultfd",
    "kexec_load", "kexec_file_load", "keyctl", "add_key", "request_key",
    "mount", "umount2", "pivot_root", "move_mount", "open_tree", "fsopen", "fsmount", "fspick",
    "unshare", "setns", "init_module", "finit_module", "delete_module",
    "reboot", "swapon", "swapoff", "acct", "open_by_handle_at", "name_to_handle_at",
)  # fmt: skip

# Syscall numbers: arch/x86/entry/syscalls/syscall_64.tbl and include/uapi/asm-generic/unistd.h (aarch64).
SYSCALLS = {
    "x86_64": {
        "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
        "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311,
        "bpf": 321, "perf_event_open": 298, "userfaultfd": 323,
        "kexec_load": 246, "kexec_file_load": 320, "keyctl": 250, "add_key": 248, "request_key": 249,
        "mount": 165, "umount2": 166, "pivot_root": 155, "move_mount": 429, "open_tree": 428,
        "fsopen": 430, "fsmount": 432, "fspick": 433,
        "unshare": 272, "setns": 308, "init_module": 175, "finit_module": 313, "delete_module": 176,
        "reboot": 169, "swapon": 167, "swapoff": 168, "acct": 163, "open_by_handle_at": 304, "name_to_handle_at": 303,
    },
    "aarch64": {
        "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
        "ptrace": 117, "process_vm_readv": 270, "process_vm_writev": 271,
        "bpf": 280, "perf_event_open": 241, "userfaultfd": 282,
        "kexec_load": 104, "kexec_file_load": 294, "keyctl": 219, "add_key": 217, "request_key": 218,
        "mount": 40, "umount2": 39, "pivot_root": 41, "move_mount": 429, "open_tree": 428,
        "fsopen": 430, "fsmount": 432, "fspick": 433,
        "unshare": 97, "setns": 268, "init_module": 105, "finit_module": 273, "delete_module": 106,
        "reboot": 142, "swapon": 224, "swapoff": 225, "acct": 89, "open_by_handle_at": 265, "name_to_handle_at": 264,
    },
}  # fmt: skip
AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}  # seccomp_data.arch (linux/audit.h)
X32_SYSCALL_BIT = 0x40000000  # x86_64's x32 ABI: its numbers carry this bit

PR_SET_SECCOMP, PR_SET_NO_NEW_PRIVS, SECCOMP_MODE_FILTER = 22, 38, 2
RET_ALLOW, RET_EPERM = 0x7FFF0000, 0x00050000 | errno.EPERM  # SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO | EPERM
LOAD_WORD, JUMP_EQ, JUMP_GE, RETURN = 0x20, 0x15, 0x35, 0x06  # BPF_LD|W|ABS, BPF_JMP|JEQ|K, BPF_JMP|JGE|K, BPF_RET|K
OFFSET_NR, OFFSET_ARCH = 0, 4  # struct seccomp_data {int nr; u32 arch; ...}


class SockFilter(ctypes.Structure):
    _fields_ = (("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32))


class SockFprog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.POINTER(SockFilter)))


def program(machine: str, denied: tuple[str, ...] = DENIED) -> list[tuple[int, int, int, int]]:
    """The classic-BPF filter as (code, jt, jf, k): calls of another arch, x32 calls and denied numbers get EPERM."""
    numbers = sorted({SYSCALLS[machine][name] for name in denied})
    prog = [(LOAD_WORD, 0, 0, OFFSET_ARCH), (JUMP_EQ, 1, 0, AUDIT_ARCH[machine]), (RETURN, 0, 0, RET_EPERM)]
    prog.append((LOAD_WORD, 0, 0, OFFSET_NR))
    if machine == "x86_64":
        prog.append((JUMP_GE, len(numbers) + 1, 0, X32_SYSCALL_BIT))  # to the EPERM return at the end
    for i, number in enumerate(numbers):  # a match jumps over the later tests and the ALLOW to EPERM
        prog.append((JUMP_EQ, len(numbers) - i, 0, number))
    prog += [(RETURN, 0, 0, RET_ALLOW), (RETURN, 0, 0, RET_EPERM)]
    return prog


def install(denied: tuple[str, ...] = DENIED) -> bool:
    """Refuse the `denied` calls (EPERM) in this process and every process it starts, for good; True when installed.

    Call it before any other thread starts: a filter covers the calling thread and what it starts later. On a machine
    with no syscall table here, or a kernel that refuses the filter, nothing changes and one line goes to stderr.
    """
    machine = platform.machine() if ctypes.sizeof(ctypes.c_void_p) == 8 else "32-bit"  # 32-bit calls differ
    if machine not in SYSCALLS:
        print(f"seccomp_filter: no syscall table for {machine!r}; all calls stay allowed", file=sys.stderr)
        return False
    prog = program(machine, denied)
    filters = (SockFilter * len(prog))(*(SockFilter(*op) for op in prog))
    fprog = SockFprog(len(prog), filters)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, None, 0, 0) != 0 or (
        libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fprog), 0, 0) != 0
    ):
        print(f"seccomp_filter: not installed: {errno.errorcode.get(ctypes.get_errno(), '?')}", file=sys.stderr)
        return False
    return True
