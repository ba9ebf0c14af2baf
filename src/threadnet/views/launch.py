"""The program's side of a supervised start: ``python -I -c ... WFD RFD -- PROGRAM ARGS``.

Run in the child the supervisor started (see ``threadnet.views.run``):

1. PR_SET_NO_NEW_PRIVS, so an unprivileged process may install a filter (and setuid
   programs it starts lose their privileges);
2. install the filter with a new listener (``threadnet.views.bpf``);
3. tell the supervisor the listener's number on WFD (a pipe: ``write`` is not trapped,
   whereas an SCM_RIGHTS ``sendmsg`` would be, and would wait for a supervisor that has
   no listener yet). The supervisor takes its copy with ``pidfd_getfd``;
4. wait for its word on RFD, close our copy (the program must never hold the listener:
   it could answer its own calls), and exec the program.
"""

from __future__ import annotations

import os
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18


def own_resolv_conf(path: str) -> None:
    """Show the program ``path`` as /etc/resolv.conf: a mount namespace of its own (with
    a user namespace that maps only our uid and gid, unless we are root) and a bind
    mount. OSError if the machine does not allow it."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)

    def check(rc: int, what: str) -> None:
        if rc != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"{what}: {os.strerror(err)}")

    uid, gid = os.getuid(), os.getgid()
    if uid == 0:
        check(libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    else:
        check(libc.unshare(CLONE_NEWUSER | CLONE_NEWNS), "unshare(CLONE_NEWUSER|CLONE_NEWNS)")
        for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"),
                           ("gid_map", f"{gid} {gid} 1")):
            with open(f"/proc/self/{name}", "w") as f:
                f.write(text)
    check(libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "mount --make-rprivate /")
    check(libc.mount(os.fsencode(path), b"/etc/resolv.conf", None, MS_BIND, None),
          "mount --bind resolv.conf")


def main(argv: list[str] | None = None) -> None:
    from threadnet.views import bpf, kernel

    args = list(sys.argv[1:] if argv is None else argv)
    wfd, rfd = int(args[0]), int(args[1])
    if args[2:3] == ["--resolv"]:
        try:
            own_resolv_conf(args[3])
        except OSError as exc:
            sys.stderr.write(f"threadnet run: warning: the program sees the host's "
                             f"/etc/resolv.conf ({exc})\n")
        args = args[:2] + args[4:]
    command = args[3:] if args[2:3] == ["--"] else args[2:]
    try:
        kernel.no_new_privs()
        listener = kernel.install_filter(bpf.build())
    except OSError as exc:
        os.write(wfd, f"error {exc}\n".encode())
        os._exit(126)
    os.write(wfd, f"ok {os.getpid()} {listener}\n".encode())
    os.close(wfd)
    go = os.read(rfd, 16)
    os.close(listener)
    os.close(rfd)
    if go != b"go":
        os._exit(126)  # the supervisor is gone: nothing may run unsupervised
    try:
        os.execvp(command[0], command)
    except OSError as exc:
        sys.stderr.write(f"threadnet run: {command[0]}: {exc.strerror}\n")
        os._exit(127 if isinstance(exc, FileNotFoundError) else 126)


BOOTSTRAP = "import sys; sys.path.insert(0, sys.argv.pop(1)); from threadnet.views.launch import main; main()"
