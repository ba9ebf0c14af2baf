"""``threadnet lab``: start a lab from a TOML topology, show it, measure it, stop it.

    threadnet lab up topo.toml           start it in the background (state: labs_dir()/NAME)
    threadnet lab status [LAB]           its nodes, processes, addresses (every lab: no LAB)
    threadnet lab ping [LAB]             every host pings every other (Mininet's pingall)
    threadnet lab iperf A B [--lab LAB]  TCP throughput from host A to host B
    threadnet lab down [LAB]             stop it; nothing is left behind

LAB is a lab's name, its state directory or the topology file it was started from; it
may be left out while one lab is up.
"""

from __future__ import annotations

import argparse
import sys

PROG = "threadnet lab"


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="lab_cmd", metavar="ACTION", parser_class=type(p))
    q = sub.add_parser("up", help="start a lab from a TOML topology file")
    q.add_argument("topology", metavar="TOPO.toml")
    q.add_argument("--state-dir", metavar="DIR",
                   help="keep the lab's state here (default: $THREADNET_LAB_DIR/NAME or "
                        "/tmp/threadnet-labs-UID/NAME)")
    q.add_argument("--netns", choices=("auto", "ip", "ns"), default="auto",
                   help="how namespace hosts are made: ip netns (root), threadnet ns (a user "
                        "namespace; no root where the system allows), auto: ip as root")
    q.add_argument("--ping", action="store_true", help="then ping every pair and report")
    q = sub.add_parser("status", help="show a running lab (or list the labs)")
    q.add_argument("lab", nargs="?", metavar="LAB")
    q = sub.add_parser("down", help="stop a lab and remove what it made")
    q.add_argument("lab", nargs="?", metavar="LAB")
    q = sub.add_parser("ping", help="every host pings every other host")
    q.add_argument("lab", nargs="?", metavar="LAB")
    q.add_argument("-c", "--count", type=int, default=3, help="pings per pair (3)")
    q.add_argument("-i", "--interval", type=float, default=0.2, help="seconds between pings")
    q.add_argument("-W", "--timeout", type=float, default=2.0, help="seconds to wait for a reply")
    q = sub.add_parser("iperf", help="TCP throughput between two hosts")
    q.add_argument("a", metavar="FROM")
    q.add_argument("b", metavar="TO")
    q.add_argument("--lab", metavar="LAB")
    q.add_argument("-t", "--time", type=float, default=3.0, help="seconds (3)")
    q.add_argument("-p", "--port", type=int, default=5201)


def run(args: argparse.Namespace) -> int:
    from threadnet.lab import Lab, labs_dir, running_labs

    action = args.lab_cmd
    if action is None:
        print(f"{PROG}: give an action: up, status, ping, iperf, down", file=sys.stderr)
        return 2
    if action == "up":
        lab = Lab.from_toml(args.topology, state_dir=args.state_dir, netns=args.netns)
        lab.start()
        print(f"threadnet: lab {lab.name} is up (state in {lab.dir})")
        for line in _status_lines(lab):
            print("  " + line)
        print(f"  stop:  threadnet lab down {lab.name}")
        if args.ping:
            return _ping(lab, 3, 0.2, 2.0)
        return 0
    if action == "status" and args.lab is None and len(running_labs()) != 1:
        labs = running_labs()
        if not labs:
            print(f"no lab is up (state directory {labs_dir()})")
        for name in labs:
            print(name)
        return 0
    lab = Lab.attach(args.lab)
    if action == "status":
        print(f"lab {lab.name} (state in {lab.dir})")
        for line in _status_lines(lab):
            print("  " + line)
        return 0
    if action == "down":
        name, directory = lab.name, lab.dir
        lab.stop()
        print(f"threadnet: lab {name} is down ({directory} removed)")
        return 0
    if action == "ping":
        return _ping(lab, args.count, args.interval, args.timeout)
    if action == "iperf":
        print(lab.iperf(args.a, args.b, args.time, args.port))
        return 0
    raise AssertionError(action)  # pragma: no cover - argparse knows the actions


def _status_lines(lab: object) -> list[str]:
    from threadnet.lab.state import iter_rows

    return list(iter_rows(lab.status()))  # type: ignore[attr-defined]


def _ping(lab: object, count: int, interval: float, timeout: float) -> int:
    result = lab.ping_all(count, interval, timeout)  # type: ignore[attr-defined]
    for line in result.lines():
        print(line)
    return 0 if not result.failed else 1
