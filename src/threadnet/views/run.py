"""Start a program under the supervisor: ``run(command, stack_path)`` -> exit status."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from typing import Any

from threadnet.views import kernel
from threadnet.views.launch import BOOTSTRAP
from threadnet.views.supervisor import Supervisor


class ViewError(Exception):
    """The program could not be started under a supervisor (the message says why)."""


def _children() -> set[int]:
    me = str(os.getpid())
    out = set()
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat", "rb") as f:
                    raw = f.read()
            except OSError:
                continue
            if raw[raw.rfind(b")") + 2:].split()[1].decode() == me:
                out.add(int(name))
    return out


def sigint_from_terminal() -> bool:
    """Is our process group the foreground of our controlling terminal? Then a SIGINT
    is most likely its Ctrl-C, which the program (in our group) got as well."""
    try:
        fd = os.open("/dev/tty", os.O_RDONLY | os.O_NOCTTY)
    except OSError:
        return False
    try:
        return os.tcgetpgrp(fd) == os.getpgrp()
    except OSError:
        return False
    finally:
        os.close(fd)


def _read_line(fd: int) -> str:
    data = b""
    while not data.endswith(b"\n"):
        chunk = os.read(fd, 256)
        if not chunk:
            break
        data += chunk
    return data.decode(errors="replace").strip()


def start(command: Sequence[str], stack_path: str, env: dict[str, str] | None = None,
          resolv_conf: str | None = None, hostname: str | None = None
          ) -> tuple[subprocess.Popen, Supervisor]:
    """Start ``command`` with its sockets on the stack published at ``stack_path`` (and
    ``resolv_conf``, a file, as its /etc/resolv.conf, ``hostname`` as its host name, where
    the machine allows)."""
    why = kernel.supported()
    if why:
        raise ViewError(why)
    kernel.check_sizes()
    kernel.set_child_subreaper()  # orphans of the program stay in its tree (scan)
    import threadnet

    pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(threadnet.__file__)))
    up_r, up_w = os.pipe()
    down_r, down_w = os.pipe()
    foreign = _children()
    try:
        child = subprocess.Popen([sys.executable, "-I", "-c", BOOTSTRAP, pkg_parent,
                                  str(up_w), str(down_r),
                                  *(["--resolv", resolv_conf] if resolv_conf else []),
                                  *(["--hostname", hostname] if hostname else []),
                                  "--", *command],
                                 pass_fds=(up_w, down_r), env=env)
    except BaseException:
        for fd in (up_r, up_w, down_r, down_w):
            os.close(fd)
        raise
    os.close(up_w)
    os.close(down_r)
    if threading.current_thread() is threading.main_thread():
        # from now on SIGINT (Ctrl-C), SIGTERM and SIGHUP are the program's: passed on,
        # before it runs (a KeyboardInterrupt here would leave it unsupervised)
        def forward(signum: int, _frame: object) -> None:
            if signum == signal.SIGINT and sigint_from_terminal():
                return  # the terminal's Ctrl-C reached the program's process group too
            child.send_signal(signum)

        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, forward)
    try:
        words = _read_line(up_r).split()
        if words[:1] != ["ok"] or len(words) != 3:
            child.wait()
            raise ViewError("cannot install the seccomp filter: " + " ".join(words[1:]))
        pidfd = kernel.pidfd_open(child.pid)
        try:
            lfd = kernel.pidfd_getfd(pidfd, int(words[2]))
        finally:
            os.close(pidfd)
        sup = Supervisor(kernel.Listener(lfd), os.path.abspath(stack_path), child.pid,
                         foreign - {child.pid})
        sup.start()
        os.write(down_w, b"go")
    except BaseException:
        if child.poll() is None:
            child.kill()
            child.wait()
        raise
    finally:
        os.close(up_r)
        os.close(down_w)
    return child, sup


def _names(stack: Any, stack_path: str) -> tuple[str | None, str | None]:
    """The stack's host name, and a file with its name settings as resolv.conf text
    (None: the stack has no nameserver, or is too old to say, and the program keeps the
    host's file)."""
    if stack is not None:
        return _resolv_file(stack.resolver.resolv_conf()), stack.gethostname()
    from threadnet.stack.remote import RemoteStack

    rs = RemoteStack(stack_path)
    try:
        hostname = rs.gethostname()
        try:
            text = rs.resolv_conf()
        except ValueError:
            return None, hostname
    except OSError:
        return None, None
    finally:
        rs.close()
    return _resolv_file(text), hostname


def _resolv_file(text: str) -> str | None:
    if not any(line.split()[:1] == ["nameserver"] for line in text.splitlines()):
        return None
    import tempfile

    fd, path = tempfile.mkstemp(prefix="threadnet-resolv-", suffix=".conf")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o644)
    return path


def run(command: Sequence[str], stack_path: str, env: dict[str, str] | None = None,
        stack: Any = None) -> int:
    """Run ``command`` supervised until it exits; its exit status (128+N for signal N).
    ``stack``: the published stack when it lives in this process (``--link``), which
    then keeps running after the program's exit until the connections it closed have
    delivered their data and FIN (``THREADNET_EXIT_LINGER``, as at a Python exit)."""
    resolv, hostname = _names(stack, stack_path)
    if resolv is None and os.getuid() != 0:
        # for the host name alone, no user namespace (in which other users' files show
        # as nobody's): only where the program needs the stack's resolv.conf
        hostname = None
    try:
        child, sup = start(command, stack_path, env, resolv, hostname)
    except BaseException:
        if resolv:
            os.unlink(resolv)
        raise
    try:
        while True:
            try:
                rc = child.wait()
                break
            except KeyboardInterrupt:  # (start() was not run on the main thread)
                child.send_signal(signal.SIGINT)
        return rc if rc >= 0 else 128 - rc
    finally:
        if resolv:
            os.unlink(resolv)
        sup.close()  # the program's sockets close on the stack, as its exit closed them
        runner = getattr(stack, "runner", None)
        if runner is not None:
            from threadnet.loop import monotonic
            from threadnet.stack.runner import EXIT_LINGER

            runner.linger(monotonic() + EXIT_LINGER)
