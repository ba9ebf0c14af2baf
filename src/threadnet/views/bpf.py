"""The seccomp filter that sends a program's socket calls to its supervisor (x86-64).

Classic BPF over ``struct seccomp_data`` (nr at 0, arch at 4, args[i] at 16 + 8*i):

* another architecture or ABI (i386, x32) kills the process: its system call numbers
  differ, so the rest of the filter would not mean what it says;
* ``io_uring_setup``/``enter``/``register`` fail with ENOSYS: io_uring's requests would
  bypass the filter;
* ``socket(AF_UNIX, ...)`` runs as is; ``socket`` of any other family, ``connect``,
  ``bind``, ``listen``, ``accept``, ``accept4``, ``getsockname``, ``getpeername``,
  ``setsockopt``, ``getsockopt`` go to the supervisor;
* ``sendto``/``recvfrom`` go to the supervisor only when they carry an address (the
  fifth argument is not NULL): on x86-64, ``send``/``recv`` are these calls with a NULL
  address, and the data path must not be trapped. ``sendmsg``, ``recvmsg``,
  ``sendmmsg``, ``recvmmsg`` keep their address in memory, which BPF cannot read: they
  go to the supervisor, which lets them continue unless they concern a stack socket;
* ``ioctl`` goes to the supervisor only for commands 0x8910-0x89ff, the interface
  requests (SIOCGIFNAME, SIOCGIFCONF, SIOCGIFINDEX...), on any descriptor;
* everything else runs as is.

``run`` interprets a program (for tests): the filter's answer for one call.
"""

from __future__ import annotations

import errno
import struct

from threadnet.views.kernel import (
    AUDIT_ARCH_X86_64,
    NR,
    SECCOMP_RET_ALLOW,
    SECCOMP_RET_ERRNO,
    SECCOMP_RET_KILL_PROCESS,
    SECCOMP_RET_USER_NOTIF,
    X32_SYSCALL_BIT,
)

# instruction classes and modes (linux/bpf_common.h)
LD_W_ABS = 0x20
JEQ_K = 0x15
JGE_K = 0x35
RET_K = 0x06
_INSN = struct.Struct("=HBBI")

TRAPPED = ("connect", "bind", "listen", "accept", "accept4", "getsockname", "getpeername",
           "setsockopt", "getsockopt", "sendmsg", "recvmsg", "sendmmsg", "recvmmsg")
ADDRESS_ARG = ("sendto", "recvfrom")  # trapped when args[4] (the address) is not NULL
REFUSED = ("io_uring_setup", "io_uring_enter", "io_uring_register")
AF_UNIX = 1
IFIOCTL_FIRST, IFIOCTL_LAST = 0x8910, 0x89FF  # SIOCGIFNAME... (threadnet.views.ifioctl)


def _arg_lo(i: int) -> int:
    return 16 + 8 * i


def _rel(where: dict[str, int], pc: int, target: object) -> int:
    if target == 0:
        return 0
    off = where[target] - pc - 1  # type: ignore[index]
    if not 0 <= off <= 255:
        raise ValueError(f"jump to {target} out of range")
    return off


def _assemble(items: list) -> bytes:
    """Items are labels (str) or (code, jt, jf, k) with jt/jf labels or 0."""
    where: dict[str, int] = {}
    n = 0
    for it in items:
        if isinstance(it, str):
            where[it] = n
        else:
            n += 1
    out = bytearray()
    pc = 0
    for it in items:
        if isinstance(it, str):
            continue
        code, jt, jf, k = it
        out += _INSN.pack(code, _rel(where, pc, jt), _rel(where, pc, jf), k)
        pc += 1
    return bytes(out)


def build() -> bytes:
    """The filter program, as the kernel takes it (8 bytes per instruction)."""
    items: list = [
        (LD_W_ABS, 0, 0, 4),
        (JEQ_K, 0, "kill", AUDIT_ARCH_X86_64),
        (LD_W_ABS, 0, 0, 0),
        (JGE_K, "kill", 0, X32_SYSCALL_BIT),
    ]
    for name in REFUSED:
        items.append((JEQ_K, "enosys", 0, NR[name]))
    items.append((JEQ_K, "socket", 0, NR["socket"]))
    items.append((JEQ_K, "ioctl", 0, NR["ioctl"]))
    for name in ADDRESS_ARG:
        items.append((JEQ_K, "address", 0, NR[name]))
    for name in TRAPPED:
        items.append((JEQ_K, "notify", 0, NR[name]))
    items += [
        (RET_K, 0, 0, SECCOMP_RET_ALLOW),
        "socket",
        (LD_W_ABS, 0, 0, _arg_lo(0)),
        (JEQ_K, "allow", "notify", AF_UNIX),
        "address",
        (LD_W_ABS, 0, 0, _arg_lo(4)),
        (JEQ_K, 0, "notify", 0),
        (LD_W_ABS, 0, 0, _arg_lo(4) + 4),
        (JEQ_K, "allow", "notify", 0),
        "ioctl",
        (LD_W_ABS, 0, 0, _arg_lo(1)),
        (JGE_K, 0, "allow", IFIOCTL_FIRST),
        (JGE_K, "allow", "notify", IFIOCTL_LAST + 1),
        "notify", (RET_K, 0, 0, SECCOMP_RET_USER_NOTIF),
        "enosys", (RET_K, 0, 0, SECCOMP_RET_ERRNO | errno.ENOSYS),
        "kill", (RET_K, 0, 0, SECCOMP_RET_KILL_PROCESS),
        "allow", (RET_K, 0, 0, SECCOMP_RET_ALLOW),
    ]
    return _assemble(items)


def run(program: bytes, nr: int, args: tuple[int, ...] = (0,) * 6,
        arch: int = AUDIT_ARCH_X86_64) -> int:
    """What ``program`` returns for one call (a classic-BPF interpreter for the
    instructions ``build`` uses)."""
    data = struct.pack("=iIQ6Q", nr, arch, 0, *(list(args) + [0] * 6)[:6])
    insns = [_INSN.unpack_from(program, i) for i in range(0, len(program), 8)]
    pc = acc = 0
    while True:
        code, jt, jf, k = insns[pc]
        if code == LD_W_ABS:
            acc = struct.unpack_from("=I", data, k)[0]
            pc += 1
        elif code == JEQ_K:
            pc += 1 + (jt if acc == k else jf)
        elif code == JGE_K:
            pc += 1 + (jt if acc >= k else jf)
        elif code == RET_K:
            return k
        else:
            raise ValueError(f"unknown instruction {code:#x}")
