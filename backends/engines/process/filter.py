"""The seccomp-bpf allow-list of a Python sandbox (x86-64), built once per zygote.

A running compute function may manage its memory, read, write and receive on *its channel*
(and no other descriptor), close descriptors, read clocks, wait on futexes, return from
signal handlers, ask its own pid, usage and directory (``/``) and exit.  A Python sandbox
installs the filter before it waits for work: it then receives the context's memfd over
the channel and maps it under the filter.
Everything else — open, stat, socket, connect, execve, fork/clone, kill, ptrace, prctl,
ioctl, getrandom … — makes the kernel deliver ``SIGSYS`` (``SECCOMP_RET_TRAP``); the
sandbox's handler writes the system call's number on the channel and exits, so the worker
can say which call was attempted.  Another architecture or the x32 ABI kills the process.
"""

from __future__ import annotations

import struct

# BPF opcodes (linux/bpf_common.h)
_LD_W_ABS = 0x20
_JEQ_K = 0x15
_JGE_K = 0x35
_RET_K = 0x06

RET_KILL_PROCESS = 0x80000000
RET_TRAP = 0x00030000
RET_ALLOW = 0x7FFF0000
AUDIT_ARCH_X86_64 = 0xC000003E
X32_SYSCALL_BIT = 0x40000000

#: x86-64 system call numbers, for the allow-list and for naming a forbidden call.
SYSCALLS: dict[str, int] = {
    "read": 0, "write": 1, "open": 2, "close": 3, "stat": 4, "fstat": 5, "lstat": 6,
    "poll": 7, "lseek": 8, "mmap": 9, "mprotect": 10, "munmap": 11, "brk": 12,
    "rt_sigaction": 13, "rt_sigprocmask": 14, "rt_sigreturn": 15, "ioctl": 16,
    "pread64": 17, "pwrite64": 18, "readv": 19, "writev": 20, "access": 21, "pipe": 22,
    "select": 23, "sched_yield": 24, "mremap": 25, "msync": 26, "mincore": 27,
    "madvise": 28, "shmget": 29, "shmat": 30, "shmctl": 31, "dup": 32, "dup2": 33,
    "pause": 34, "nanosleep": 35, "getitimer": 36, "alarm": 37, "setitimer": 38,
    "getpid": 39, "sendfile": 40, "socket": 41, "connect": 42, "accept": 43, "sendto": 44,
    "recvfrom": 45, "sendmsg": 46, "recvmsg": 47, "shutdown": 48, "bind": 49, "listen": 50,
    "getsockname": 51, "getpeername": 52, "socketpair": 53, "setsockopt": 54,
    "getsockopt": 55, "clone": 56, "fork": 57, "vfork": 58, "execve": 59, "exit": 60,
    "wait4": 61, "kill": 62, "uname": 63, "fcntl": 72, "flock": 73, "fsync": 74,
    "truncate": 76, "ftruncate": 77, "getdents": 78, "getcwd": 79, "chdir": 80,
    "fchdir": 81, "rename": 82, "mkdir": 83, "rmdir": 84, "creat": 85, "link": 86,
    "unlink": 87, "symlink": 88, "readlink": 89, "chmod": 90, "fchmod": 91, "chown": 92,
    "umask": 95, "gettimeofday": 96, "getrlimit": 97, "getrusage": 98, "sysinfo": 99,
    "times": 100, "ptrace": 101, "getuid": 102, "syslog": 103, "getgid": 104,
    "setuid": 105, "setgid": 106, "geteuid": 107, "getegid": 108, "setpgid": 109,
    "getppid": 110, "getpgrp": 111, "setsid": 112, "sigaltstack": 131, "personality": 135,
    "getpriority": 140, "setpriority": 141,
    "prctl": 157, "arch_prctl": 158, "setrlimit": 160, "chroot": 161, "sync": 162,
    "mount": 165, "umount2": 166, "reboot": 169, "sethostname": 170, "init_module": 175,
    "gettid": 186, "tkill": 200, "time": 201, "futex": 202, "sched_setaffinity": 203,
    "sched_getaffinity": 204, "getdents64": 217, "set_tid_address": 218,
    "restart_syscall": 219, "clock_gettime": 228, "clock_getres": 229,
    "clock_nanosleep": 230, "exit_group": 231, "epoll_wait": 232, "tgkill": 234,
    "openat": 257, "mkdirat": 258, "newfstatat": 262, "unlinkat": 263, "readlinkat": 267,
    "faccessat": 269, "pselect6": 270, "ppoll": 271, "unshare": 272, "set_robust_list": 273,
    "get_robust_list": 274, "splice": 275, "tee": 276, "sync_file_range": 277,
    "utimensat": 280, "epoll_pwait": 281, "accept4": 288, "eventfd2": 290,
    "epoll_create1": 291, "dup3": 292, "pipe2": 293, "preadv": 295, "pwritev": 296,
    "perf_event_open": 298, "recvmmsg": 299, "prlimit64": 302, "sendmmsg": 307,
    "setns": 308, "getcpu": 309, "process_vm_readv": 310, "process_vm_writev": 311,
    "kcmp": 312, "finit_module": 313, "sched_getattr": 315, "renameat2": 316,
    "seccomp": 317, "getrandom": 318, "memfd_create": 319, "bpf": 321, "execveat": 322,
    "userfaultfd": 323, "membarrier": 324, "mlock2": 325, "copy_file_range": 326,
    "pkey_mprotect": 329, "statx": 332, "io_uring_setup": 425, "io_uring_enter": 426,
    "open_tree": 428, "fsopen": 430, "pidfd_open": 434, "clone3": 435, "close_range": 436,
    "openat2": 437, "pidfd_getfd": 438, "faccessat2": 439, "process_madvise": 440,
    "memfd_secret": 447, "futex_waitv": 449,
}
_NAMES = {v: k for k, v in SYSCALLS.items()}

#: Calls a running function may make with any arguments.
ALLOWED = (
    "mmap", "munmap", "mremap", "mprotect", "madvise", "brk",   # memory management
    "rt_sigreturn", "rt_sigprocmask", "sigaltstack",            # return from handlers
    "futex", "sched_yield",                                     # waits (numpy, locks)
    "clock_gettime", "clock_getres", "gettimeofday", "time",    # clocks
    "nanosleep", "clock_nanosleep", "restart_syscall",
    "getpid", "gettid", "getrusage",                            # harmless self queries
    "getcwd",                                   # "/": Pillow's save() asks (abspath(""))
    "exit", "exit_group",
    "close",                                                    # dropping the memfd
)
#: Calls allowed only on the channel descriptor (first argument).
CHANNEL_ONLY = ("read", "write", "recvmsg")


def syscall_name(number: int) -> str:
    """The name of x86-64 system call ``number`` (``"system call #N"`` if unknown)."""
    return _NAMES.get(number, f"#{number}")


def _insn(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("<HBBI", code, jt, jf, k)


#: Calls a sandbox that may be reset (``reuse_sandboxes``) is refused besides: state the
#: kernel keeps for it that its reset would not put back.
NOT_REUSABLE = ("sigaltstack",)


def build_filter(channel_fd: int, reusable: bool = False) -> bytes:
    """The BPF program (bytes of ``struct sock_filter``) allowing :data:`ALLOWED` (but
    :data:`NOT_REUSABLE` in a sandbox that may be reset) and :data:`CHANNEL_ONLY` on
    ``channel_fd``, trapping everything else."""
    allowed = [SYSCALLS[n] for n in ALLOWED if not (reusable and n in NOT_REUSABLE)]
    channel = [SYSCALLS[n] for n in CHANNEL_ONLY]
    prog: list[bytes] = [
        _insn(_LD_W_ABS, 0, 0, 4),                        # seccomp_data.arch
        _insn(_JEQ_K, 1, 0, AUDIT_ARCH_X86_64),
        _insn(_RET_K, 0, 0, RET_KILL_PROCESS),
        _insn(_LD_W_ABS, 0, 0, 0),                        # seccomp_data.nr
        _insn(_JGE_K, 0, 1, X32_SYSCALL_BIT),
        _insn(_RET_K, 0, 0, RET_KILL_PROCESS),
    ]
    # Layout after the checks: [allowed jeqs][channel jeqs] TRAP ALLOW [arg checks]
    n_allowed, n_channel = len(allowed), len(channel)
    for i, nr in enumerate(allowed):
        to_allow = (n_allowed - i - 1) + n_channel + 1    # skip to ALLOW
        prog.append(_insn(_JEQ_K, to_allow, 0, nr))
    for i, nr in enumerate(channel):
        to_args = (n_channel - i - 1) + 2                 # skip TRAP, ALLOW
        prog.append(_insn(_JEQ_K, to_args, 0, nr))
    prog.append(_insn(_RET_K, 0, 0, RET_TRAP))
    prog.append(_insn(_RET_K, 0, 0, RET_ALLOW))
    # args[0] == channel_fd (low word at offset 16, high word at 20)
    prog += [
        _insn(_LD_W_ABS, 0, 0, 16),
        _insn(_JEQ_K, 0, 3, channel_fd),
        _insn(_LD_W_ABS, 0, 0, 20),
        _insn(_JEQ_K, 0, 1, 0),
        _insn(_RET_K, 0, 0, RET_ALLOW),
        _insn(_RET_K, 0, 0, RET_TRAP),
    ]
    return b"".join(prog)
