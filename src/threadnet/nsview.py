"""``threadnet ns``: a command in its own user and network namespaces, on VDE networks.

What Debian's ``vdens`` does, with threadnet's links: every VNL (``vde://``, ``slirp://``,
``udp://``, ``cmd://``...) becomes a tap inside a new network namespace, named ``vde0``,
``vde1``... (``-i PREFIX`` changes the prefix), and the command (``$SHELL`` when none is
given) runs there with the capabilities to configure them (CAP_NET_ADMIN, CAP_NET_RAW,
CAP_NET_BIND_SERVICE, CAP_NET_BROADCAST; CAP_SYS_ADMIN too with ``-s``). The loopback is
up, the taps are down until the command brings them up, as vdens leaves them. No root is
needed where the kernel lets users make user namespaces and ``/dev/net/tun`` is open to
them (Debian's mode, 0666).

How, in two processes:

- the parent, outside, forks the child first (no thread has started yet), then opens the
  links: a bad or unreachable VNL is reported before any namespace exists, and the child
  leaves without making one;
- the child unshares a user and a network namespace (a mount namespace too with ``-r``,
  ``-R`` or ``-s``); the parent writes its uid and gid maps (its own ids mapped to
  themselves, setgroups denied, as vdens does);
- the child raises the capabilities above into its ambient set, brings the loopback up,
  creates the taps (``/dev/net/tun`` opened inside the namespace), passes their
  descriptors to the parent over a socket pair made before the fork (SCM_RIGHTS), and
  executes the command: the command is the child itself;
- the parent joins each tap to its link with a ``Cable`` on one event loop until the
  command ends, then closes the links and the taps (the namespace ends with the last
  process in it) and exits with the command's status (128 + N after signal N; vdens
  always exits 0). A link that ends earlier (its switch gone) is reported; its tap is
  cut off and the command goes on.

The system calls Python 3.11 lacks (unshare, capset, the ambient set, mount) go through
ctypes.

While the command runs, SIGINT and SIGQUIT are left to it (a terminal sends them to both,
as ``system()`` has it); SIGTERM and SIGHUP sent to the parent are passed on to it.
"""

from __future__ import annotations

import array
import ctypes
import errno
import fcntl
import os
import signal
import socket
import struct
import sys
import tempfile
import time
from dataclasses import dataclass, field

from threadnet.errors import LinkError, ThreadnetError

PROG = "threadnet ns"

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
MS_BIND = 0x1000
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
CAP_NET_BIND_SERVICE = 10
CAP_NET_BROADCAST = 11
CAP_NET_ADMIN = 12
CAP_NET_RAW = 13
CAP_SYS_ADMIN = 21
#: what the command may do in its namespaces (vdens's set)
NET_CAPS = (CAP_NET_BIND_SERVICE, CAP_NET_BROADCAST, CAP_NET_ADMIN, CAP_NET_RAW)
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
IFNAMSIZ = 16
TUN_DEVICE = "/dev/net/tun"
#: VNLs that mean "no interface" (vdens's words)
NO_NET = ("", "-", "no")
#: the most VNLs one namespace takes (one tap, one cable and one link each)
MAX_NETS = 64

USAGE = f"""\
usage: {PROG} [OPTIONS] [VNL [COMMAND [ARG...]]]
       {PROG} [OPTIONS] VNL [VNL...] -- [COMMAND [ARG...]]
       {PROG} -m [OPTIONS] VNL [VNL...] [-- COMMAND [ARG...]]

Run COMMAND ($SHELL if none) in a new user and network namespace with one tap per VNL
(vde0, vde1, ...) joined to that network, as Debian's vdens does. A VNL is any threadnet
link URL (vde://DIR, slirp://, udp://..., cmd://"..."); "=COMMAND" is cmd://COMMAND;
"-" or "no" alone: no interface. Exits with the command's status.

options:
  -h, --help              this text
  -m, --multi             every word up to "--" is a VNL (without -m and without "--",
                          the first word is the VNL and the rest the command)
  -i, --iface PREFIX      interface name prefix (default "vde": vde0, vde1, ...)
  -r, --resolvconf FILE   FILE appears as /etc/resolv.conf inside ($VDE_RESOLVCONF)
  -R, --resolvaddr ADDRS  /etc/resolv.conf inside lists these servers, comma-separated
                          (wins over -r; $VDE_RESOLVADDR)
  -s, --sysadm            CAP_SYS_ADMIN too (bind mounts inside; a mount namespace is made)
  -c, --clone, -u, --unshare
                          accepted as vdens has them; threadnet always unshares in a
                          child process of its own (vdens's clone mode)
"""


class NsError(ThreadnetError):
    """The namespace could not be made (user namespaces refused, no /dev/net/tun...)."""


@dataclass
class NsOptions:
    """A parsed ``threadnet ns`` command line."""

    vnls: list[str] = field(default_factory=list)
    command: list[str] = field(default_factory=list)
    prefix: str = "vde"
    resolvconf: str | None = None
    resolvaddr: str | None = None
    sysadm: bool = False
    help: bool = False

    @property
    def ifnames(self) -> list[str]:
        return [f"{self.prefix}{i}" for i in range(len(self.vnls))]


class NsUsageError(ThreadnetError, ValueError):
    """A bad ``threadnet ns`` command line."""


_SHORT_WITH_VALUE = {"-i": "iface", "-r": "resolvconf", "-R": "resolvaddr"}
_SHORT_FLAGS = {"-h": "help", "-m": "multi", "-s": "sysadm", "-c": "clone", "-u": "unshare"}
_LONG = ("help", "multi", "iface", "resolvconf", "resolvaddr", "sysadm", "clone", "unshare")
_TAKES_VALUE = ("iface", "resolvconf", "resolvaddr")


def parse_args(words: list[str], environ: dict[str, str] | None = None) -> NsOptions:
    """Parse vdens's command line: options first (parsing stops at the first other word,
    as vdens's getopt does), then VNLs and the command."""
    env = os.environ if environ is None else environ
    opts = NsOptions(resolvconf=env.get("VDE_RESOLVCONF") or None,
                     resolvaddr=env.get("VDE_RESOLVADDR") or None)
    multi = False
    i = 0
    while i < len(words):
        word = words[i]
        if word == "--" or not word.startswith("-") or word == "-":
            break
        value: str | None = None
        if word.startswith("--"):
            name, eq, value = word[2:].partition("=")
            matches = [n for n in _LONG if n.startswith(name)] if name not in _LONG else [name]
            if len(matches) != 1:
                kind = "ambiguous" if matches else "unknown"
                raise NsUsageError(f"{PROG}: {kind} option --{name}")
            name = matches[0]
            if not eq:
                value = None
        else:
            key = word[:2]
            if key in _SHORT_FLAGS:
                name = _SHORT_FLAGS[key]
                if len(word) > 2:  # -ms: flags run together
                    words = words[:i] + [key, "-" + word[2:]] + words[i + 1:]
            elif key in _SHORT_WITH_VALUE:
                name = _SHORT_WITH_VALUE[key]
                value = word[2:] or None
            else:
                raise NsUsageError(f"{PROG}: unknown option {key}")
        if name in _TAKES_VALUE and value is None:
            if i + 1 >= len(words):
                raise NsUsageError(f"{PROG}: option {word} needs a value")
            i += 1
            value = words[i]
        elif name not in _TAKES_VALUE and value is not None and word.startswith("--"):
            raise NsUsageError(f"{PROG}: option --{name} takes no value")
        if name == "help":
            opts.help = True
        elif name == "multi":
            multi = True
        elif name == "iface":
            opts.prefix = value or ""
        elif name == "resolvconf":
            opts.resolvconf = value
        elif name == "resolvaddr":
            opts.resolvaddr = value
        elif name == "sysadm":
            opts.sysadm = True
        # clone, unshare: accepted, no effect (see USAGE)
        i += 1
    rest = words[i:]
    if "--" in rest:
        cut = rest.index("--")
        vnls, command = rest[:cut], rest[cut + 1:]
    elif multi:
        vnls, command = rest, []
    else:
        vnls, command = rest[:1], rest[1:]
    if len(vnls) == 1 and vnls[0] in NO_NET:
        vnls = []
    for vnl in vnls:
        if vnl in NO_NET:
            raise NsUsageError(f"{PROG}: {vnl!r} (no network) only makes sense alone")
    opts.vnls = ["cmd://" + v[1:] if v.startswith("=") else v for v in vnls]
    if len(opts.vnls) > MAX_NETS:
        raise NsUsageError(f"{PROG}: at most {MAX_NETS} VNLs")
    opts.command = command
    _check_prefix(opts)
    return opts


def _check_prefix(opts: NsOptions) -> None:
    prefix = opts.prefix
    if not prefix or "/" in prefix or ":" in prefix or any(c.isspace() for c in prefix):
        raise NsUsageError(f"{PROG}: bad interface prefix {prefix!r} (no '/', ':' or spaces)")
    last = f"{prefix}{max(len(opts.vnls) - 1, 0)}"
    if len(last.encode()) >= IFNAMSIZ:
        raise NsUsageError(f"{PROG}: interface name {last!r} is too long "
                           f"(at most {IFNAMSIZ - 1} bytes)")


def resolv_text(addrs: str) -> bytes:
    """The /etc/resolv.conf for ``-R 9.9.9.9,2620:fe::fe``: one nameserver line each."""
    import ipaddress

    lines = []
    for item in addrs.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            ipaddress.ip_address(item)
        except ValueError:
            raise NsUsageError(f"{PROG}: -R: {item!r} is not an IP address") from None
        lines.append(f"nameserver {item}\n")
    if not lines:
        raise NsUsageError(f"{PROG}: -R needs at least one address")
    return "".join(lines).encode()


# -- system calls ------------------------------------------------------------------
_libc: ctypes.CDLL | None = None


def libc() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def raise_ambient(caps: tuple[int, ...]) -> None:
    """Keep ``caps`` (held now, e.g. right after unshare(CLONE_NEWUSER)) across execve by
    a program that is not uid 0: inheritable, then ambient."""
    lib = libc()
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    _check(lib.capget(ctypes.byref(header), data), "capget")
    for cap in caps:
        data[cap // 32].inheritable |= 1 << (cap % 32)
    _check(lib.capset(ctypes.byref(header), data), "capset")
    for cap in caps:
        _check(lib.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, ctypes.c_ulong(cap),
                         ctypes.c_ulong(0), ctypes.c_ulong(0)), f"raising capability {cap}")


def _bind_mount(source: str, target: str) -> None:
    _check(libc().mount(source.encode(), target.encode(), None, ctypes.c_ulong(MS_BIND), None),
           f"bind-mounting {source} on {target}")


def _mount_resolv(text: bytes) -> None:
    """Show ``text`` as /etc/resolv.conf in this (new) mount namespace: a private
    temporary file, bound there and then removed (the kernel binds neither a memfd nor
    a file with no name)."""
    fd, path = tempfile.mkstemp(prefix="threadnet-ns-resolv-")
    try:
        os.write(fd, text)
        os.fchmod(fd, 0o444)
        _bind_mount(path, "/etc/resolv.conf")
    finally:
        os.close(fd)
        os.unlink(path)


def loopback_up() -> None:
    """Bring ``lo`` up in this process's network namespace."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifr = struct.pack("16sH22x", b"lo", 0)
        flags = struct.unpack_from("16sH", fcntl.ioctl(s, SIOCGIFFLAGS, ifr))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | IFF_UP))


def _userns_hint(err: int) -> str:
    if err in (errno.EPERM, errno.EACCES):
        return ("unprivileged user namespaces are refused here: see sysctl "
                "kernel.unprivileged_userns_clone (Debian), "
                "kernel.apparmor_restrict_unprivileged_userns (Ubuntu), or a seccomp "
                "profile (containers)")
    if err == errno.ENOSPC:
        return "the user namespace limit is reached (sysctl user.max_user_namespaces)"
    if err == errno.EINVAL:
        return "this kernel has no user namespaces (CONFIG_USER_NS)"
    return os.strerror(err)


# -- the two processes -------------------------------------------------------------
# The parent and the child talk over a SOCK_SEQPACKET pair, one message per step:
#   parent -> child  b"go"        the links are open: make the namespaces
#   child -> parent  b"unshared"  write my uid and gid maps
#   parent -> child  b"mapped"
#   child -> parent  b"taps" + one descriptor per VNL (SCM_RIGHTS); then the child execs
# and either side's b"E" + text is an error that ends it all.


def _child(sock: socket.socket, opts: NsOptions, resolv: bytes | None) -> None:
    """In the forked child: never returns."""
    code = 1
    try:
        if sock.recv(64) != b"go":
            os._exit(1)  # the parent could not open a link: no namespace at all
        flags = CLONE_NEWUSER | CLONE_NEWNET
        if opts.sysadm or opts.resolvconf or resolv is not None:
            flags |= CLONE_NEWNS
        if libc().unshare(flags) != 0:
            err = ctypes.get_errno()
            raise NsError(f"cannot make a user namespace: {_userns_hint(err)}")
        sock.send(b"unshared")
        if sock.recv(64) != b"mapped":
            os._exit(1)
        raise_ambient(NET_CAPS + ((CAP_SYS_ADMIN,) if opts.sysadm else ()))
        if resolv is not None:
            _mount_resolv(resolv)
        elif opts.resolvconf:
            _bind_mount(opts.resolvconf, "/etc/resolv.conf")
        loopback_up()
        from threadnet.link.tap import TapLink

        try:
            taps = [TapLink(name, url=f"tap://{name}") for name in opts.ifnames]
        except LinkError as exc:
            if exc.errno != errno.EACCES:
                raise
            raise NsError(f"permission denied opening {TUN_DEVICE} inside the user "
                          "namespace: there the device's own mode decides (Debian's is "
                          f"0666; see ls -l {TUN_DEVICE})") from None
        fds = array.array("i", [t.fileno() for t in taps])
        sock.sendmsg([b"taps"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)] if taps else [])
        for t in taps:
            t.close()
        code = 127
        argv = opts.command
        try:
            os.execvp(argv[0], argv)
        except OSError as exc:
            code = 126 if exc.errno in (errno.EACCES, errno.ENOEXEC, errno.EISDIR) else 127
            os.write(2, f"{PROG}: {argv[0]}: {exc.strerror}\n".encode())
    except BaseException as exc:  # noqa: BLE001 - everything ends here, reported
        try:
            if isinstance(exc, OSError) and exc.strerror:
                text = exc.strerror
            else:
                text = str(exc) if isinstance(exc, ThreadnetError) else repr(exc)
            sock.send(b"E" + text.encode(errors="replace")[:4000])
        except OSError:
            pass
    os._exit(code)


def _write_maps(pid: int) -> None:
    """Map the caller's own uid and gid to themselves in the child's user namespace, as
    vdens does (an unprivileged process may write exactly this, once setgroups is
    denied)."""
    uid, gid = os.geteuid(), os.getegid()
    for name, text in (("uid_map", f"{uid} {uid} 1\n"), ("setgroups", "deny\n"),
                       ("gid_map", f"{gid} {gid} 1\n")):
        path = f"/proc/{pid}/{name}"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            raise NsError(f"cannot open {path}: {exc.strerror}") from exc
        try:
            os.write(fd, text.encode())
        except OSError as exc:
            raise NsError(f"cannot write {text.strip()!r} to {path}: {exc.strerror}") from exc
        finally:
            os.close(fd)


def _expect(sock: socket.socket, word: bytes, nfds: int = 0) -> list[int]:
    """Wait for the child's ``word`` (and ``nfds`` descriptors); raise its error."""
    size = socket.CMSG_SPACE(nfds * 4) if nfds else 0
    msg, anc, _flags, _ = sock.recvmsg(4096, size) if size else sock.recvmsg(4096)
    fds: list[int] = []
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            arr = array.array("i")
            arr.frombytes(data[:len(data) - len(data) % arr.itemsize])
            fds.extend(arr)
    if msg == word and len(fds) == nfds:
        return fds
    for fd in fds:
        os.close(fd)
    if msg.startswith(b"E"):
        raise NsError(msg[1:].decode(errors="replace"))
    if not msg:
        raise NsError("the namespace's process ended before it was ready")
    raise NsError(f"unexpected answer from the namespace's process: {msg[:40]!r}")


def _exit_code(status: int) -> int:
    code = os.waitstatus_to_exitcode(status)
    return code if code >= 0 else 128 - code


def run(opts: NsOptions) -> int:
    """Run ``opts.command`` in new namespaces on ``opts.vnls``; its exit status."""
    from threadnet.link import open_link
    from threadnet.link.cable import Cable
    from threadnet.link.tap import TapLink
    from threadnet.loop import EventLoop

    if not opts.command:
        shell = os.environ.get("SHELL")
        if not shell:
            raise NsUsageError(f"{PROG}: no command given and $SHELL is not set")
        opts.command = [shell]
    resolv = resolv_text(opts.resolvaddr) if opts.resolvaddr else None
    if opts.resolvconf and resolv is None:
        try:
            os.close(os.open(opts.resolvconf, os.O_RDONLY | os.O_CLOEXEC))
        except OSError as exc:
            raise NsError(f"-r {opts.resolvconf}: {exc.strerror}") from None
    libc()  # load before the fork: the child only calls into it
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = os.fork()
    if pid == 0:
        ours.close()
        _child(theirs, opts, resolv)
    theirs.close()
    links: list = []
    taps: list = []
    loop = None
    cables: list = []
    reaped: int | None = None
    try:
        try:
            for url in opts.vnls:
                links.append(open_link(url, description=_description()))
        except BaseException:
            ours.close()  # the child sees no "go" and leaves, no namespace made
            raise
        ours.send(b"go")
        _expect(ours, b"unshared")
        _write_maps(pid)
        ours.send(b"mapped")
        fds = _expect(ours, b"taps", len(opts.vnls))
        for name, fd in zip(opts.ifnames, fds, strict=True):
            taps.append(TapLink(name, url=f"{PROG} tap://{name}", fd=fd))
        ours.close()
        loop = EventLoop()
        child_ended = False

        def ended() -> None:
            nonlocal child_ended
            child_ended = True
            loop.stop()

        pidfd = os.pidfd_open(pid)
        loop.add_reader(pidfd, ended)
        cables = [Cable(loop, tap, link) for tap, link in zip(taps, links, strict=True)]
        old = _pass_signals(pid)
        try:
            while not child_ended:
                loop.run()
                for cable in list(cables):
                    if cable.ended is not None:
                        print(f"{PROG}: {cable.right.url}: {cable.ended}; "
                              f"{cable.left.ifname} is cut off", file=sys.stderr)
                        cables.remove(cable)
                        _unplug(loop, cable)
        finally:
            _restore_signals(old)
            loop.remove_reader(pidfd)
            os.close(pidfd)
        _, status = os.waitpid(pid, 0)
        reaped = status
        return _exit_code(status)
    finally:
        ours.close()
        if reaped is None:
            _end_child(pid)
        for cable in cables:
            cable.close()
        for link in links + taps:
            link.close()
        if loop is not None:
            loop.close()


def _description() -> str:
    from threadnet.link.vde import default_description

    return default_description(PROG)


def _unplug(loop: object, cable: object) -> None:
    """Stop pumping a cable whose link has gone; its tap stays (unread) until the end."""
    for link in (cable.left, cable.right):  # type: ignore[attr-defined]
        loop.remove_reader(link.fileno())  # type: ignore[attr-defined]
        ctl = link.ctl_fileno()
        if ctl is not None:
            loop.remove_reader(ctl)  # type: ignore[attr-defined]
    cable.right.close()  # type: ignore[attr-defined]


def _pass_signals(pid: int) -> dict[int, object]:
    old: dict[int, object] = {}

    def forward(signum: int, _frame: object) -> None:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    for signum in (signal.SIGINT, signal.SIGQUIT):
        old[signum] = signal.signal(signum, signal.SIG_IGN)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        old[signum] = signal.signal(signum, forward)
    return old


def _restore_signals(old: dict[int, object]) -> None:
    for signum, handler in old.items():
        signal.signal(signum, handler)  # type: ignore[arg-type]


def _end_child(pid: int) -> None:
    """Something failed before or while the command ran: reap the child, which leaves by
    itself when it had not become the command yet (its socket's end closed), else after
    SIGTERM, or SIGKILL 2 s later."""
    try:
        for sig in (None, signal.SIGTERM, signal.SIGKILL):
            if sig is not None:
                os.kill(pid, sig)
            for _ in range(100):
                if os.waitpid(pid, os.WNOHANG)[0]:
                    return
                time.sleep(0.02)
    except ChildProcessError:
        pass


def main(words: list[str]) -> int:
    """``threadnet ns`` from the command line (cli.py's ``cmd_ns``): the command's exit
    status, 2 for a bad command line, 1 when the namespace or a link could not be made."""
    try:
        opts = parse_args(words)
        if opts.help:
            sys.stdout.write(USAGE)
            return 0
        return run(opts)
    except NsUsageError as exc:
        print(exc, file=sys.stderr)
        return 2
    except (ThreadnetError, OSError) as exc:  # a bad URL, an unreachable switch, no userns
        text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        print(f"{PROG}: {text}", file=sys.stderr)
        return 1
