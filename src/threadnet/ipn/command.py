"""``threadnet ipn create|show|rm PATH``: make, inspect and remove IPN buses."""

from __future__ import annotations

import argparse
import errno
import json
import os
import pwd
import socket
import stat
import struct

from threadnet.ipn.bus import (
    DEFAULT_QUEUE,
    MEMBER_PREFIX,
    STATS_PREFIX,
    BusConfig,
    IpnError,
    create_bus,
    open_bus,
    remove_bus,
)
from threadnet.ipn.member import COUNTER_NAMES, PID, STATS_SIZE


def add_arguments(p: argparse.ArgumentParser, octal) -> None:  # noqa: ANN001
    sub = p.add_subparsers(dest="ipn_cmd", metavar="create|show|rm", required=True,
                           parser_class=type(p))
    c = sub.add_parser("create", help="make a bus")
    c.add_argument("path", metavar="PATH")
    c.add_argument("--policy", choices=["broadcast", "switch"], default="broadcast",
                   help="broadcast: every message to every other member; switch: an "
                        "Ethernet switch (learning, unicast)")
    loss = c.add_mutually_exclusive_group()
    loss.add_argument("--lossless", dest="lossless", action="store_true", default=True,
                      help="a full member's queue makes senders wait (default)")
    loss.add_argument("--lossy", dest="lossless", action="store_false",
                      help="a full member's queue drops the message (counted)")
    c.add_argument("-m", "--mode", type=octal, default=0o660,
                   help="who may join: read+write per class (default 0660)")
    c.add_argument("-g", "--group", help="the bus's group (mode 0660: who may join)")
    c.add_argument("--queue", type=int, default=DEFAULT_QUEUE, metavar="N",
                   help=f"messages a non-blocking member holds back for a full member "
                        f"(default {DEFAULT_QUEUE})")
    s = sub.add_parser("show", help="a bus's settings, members and counters")
    s.add_argument("path", metavar="PATH")
    s.add_argument("-j", "--json", action="store_true")
    r = sub.add_parser("rm", help="remove a bus")
    r.add_argument("path", metavar="PATH")


def run(args: argparse.Namespace) -> int:
    if args.ipn_cmd == "create":
        config = BusConfig(policy=args.policy, lossless=args.lossless, queue=args.queue,
                           mode=args.mode)
        real = create_bus(args.path, config, args.group)
        print(f"ipn bus {real}: {config.policy}, {config.delivery}")
        return 0
    if args.ipn_cmd == "rm":
        n = remove_bus(args.path)
        print(f"ipn bus {args.path} removed" + (f" ({n} members left it)" if n else ""))
        return 0
    info = show(args.path)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(format_show(info))
    return 0


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def show(path: str) -> dict:
    """The bus's settings and, for each member, its owner, whether anyone is behind its
    socket, and its counters."""
    bus = open_bus(path)
    try:
        st = os.fstat(bus.dfd)
        members = []
        for name in sorted(os.listdir(bus.dfd)):
            if not name.startswith(MEMBER_PREFIX):
                continue
            try:
                est = os.stat(name, dir_fd=bus.dfd, follow_symlinks=False)
            except OSError:
                continue
            if not stat.S_ISSOCK(est.st_mode):
                members.append({"name": name, "state": "not a socket (ignored)"})
                continue
            entry = {"name": name, "uid": est.st_uid, "user": _user(est.st_uid),
                     "state": _liveness(bus.dfd, name)}
            entry.update(_counters(bus.dfd, STATS_PREFIX + name[len(MEMBER_PREFIX):],
                                   est.st_uid))
            members.append(entry)
        try:
            import grp

            group = grp.getgrgid(st.st_gid).gr_name
        except KeyError:
            group = str(st.st_gid)
        return {"path": bus.path, "policy": bus.config.policy,
                "delivery": bus.config.delivery, "queue": bus.config.queue,
                "mode": f"{bus.config.mode:04o}", "owner": _user(bus.owner), "group": group,
                "members": members}
    finally:
        bus.close()


def _liveness(dfd: int, name: str) -> str:
    pin = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        probe.connect(f"/proc/self/fd/{pin}")
        return "alive"
    except OSError as exc:
        if exc.errno == errno.ECONNREFUSED:
            return "dead"
        if exc.errno in (errno.EACCES, errno.EPERM):
            return "no permission"
        return exc.strerror or "?"
    finally:
        probe.close()
        os.close(pin)


def _counters(dfd: int, name: str, uid: int) -> dict:
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dfd)
    except OSError:
        return {}
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != uid or st.st_size != STATS_SIZE:
            return {}
        data = os.pread(fd, STATS_SIZE, 0)
    finally:
        os.close(fd)
    if len(data) != STATS_SIZE:
        return {}
    words = struct.unpack("=16Q", data)
    out = {k: words[i] for i, k in enumerate(COUNTER_NAMES)}
    out["pid"] = words[PID]
    return out


def format_show(info: dict) -> str:
    lines = [f"ipn bus {info['path']}: policy {info['policy']}, {info['delivery']}, "
             f"queue {info['queue']}, mode {info['mode']} {info['owner']}:{info['group']}",
             f"{len(info['members'])} members"]
    for m in info["members"]:
        if "uid" not in m:
            lines.append(f"  {m['name']}  {m['state']}")
            continue
        counts = "  ".join(f"{k} {m[k]}" for k in COUNTER_NAMES if k in m)
        pid = f" pid {m['pid']}" if "pid" in m else ""
        lines.append(f"  {m['name']}  {m['user']}{pid}  {m['state']}  {counts}")
    return "\n".join(lines)


__all__ = ["IpnError", "add_arguments", "run", "show"]
