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
CLONE_NEWUTS = 0x04000000
CLONE_NEWUSER = 0x10000000
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18


def own_names(resolv: str | None, hostname: str | None) -> None:
    """Show the program ``resolv`` as /etc/resolv.conf and ``hostname`` as its host name:
    mount and UTS namespaces of its own (with a user namespace that maps only our uid
    and gid, unless we are root), a bind mount, sethostname. OSError if the machine does
    not allow it."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)

    def check(rc: int, what: str) -> None:
        if rc != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"{what}: {os.strerror(err)}")

    uid, gid = os.getuid(), os.getgid()
    if uid == 0:
        check(libc.unshare(CLONE_NEWNS | CLONE_NEWUTS), "unshare(CLONE_NEWNS|CLONE_NEWUTS)")
    else:
        check(libc.unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWUTS),
              "unshare(CLONE_NEWUSER|CLONE_NEWNS|CLONE_NEWUTS)")
        for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"),
                           ("gid_map", f"{gid} {gid} 1")):
            with open(f"/proc/self/{name}", "w") as f:
                f.write(text)
    if resolv:
        check(libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None),
              "mount --make-rprivate /")
        check(libc.mount(os.fsencode(resolv), b"/etc/resolv.conf", None, MS_BIND, None),
              "mount --bind resolv.conf")
    if hostname:
        raw = hostname.encode()[:64]
        check(libc.sethostname(raw, len(raw)), "sethostname")


def main(argv: list[str] | None = None) -> None:
    from threadnet.views import bpf, kernel

    args = list(sys.argv[1:] if argv is None else argv)
    wfd, rfd = int(args[0]), int(args[1])
    names: dict[str, str] = {}
    while args[2:3] in (["--resolv"], ["--hostname"]):
        names[args[2][2:]] = args[3]
        args = args[:2] + args[4:]
    if names:
        try:
            own_names(names.get("resolv"), names.get("hostname"))
        except OSError as exc:
            sys.stderr.write(f"threadnet run: warning: the program sees the host's "
                             f"/etc/resolv.conf and host name ({exc})\n")
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
