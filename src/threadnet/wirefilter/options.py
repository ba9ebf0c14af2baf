"""``threadnet wirefilter``'s command line: wirefilter's options, plus URLs for the two sides."""

from __future__ import annotations

import argparse

# (short, long, option name in the ImpairedLine, help)
VALUE_OPTIONS = [
    ("-l", "--loss", "loss", "loss percentage, e.g. 20, LR5, 10+5"),
    ("-L", "--lostburst", "lostburst", "mean length of lost-packet bursts (Gilbert model)"),
    ("-d", "--delay", "delay", "delay in ms, with jitter: 50+10 (uniform) or 50+10N (normal)"),
    ("-D", "--dup", "dup", "duplication percentage"),
    ("-b", "--bandwidth", "bandwidth", "channel bandwidth in bytes/s (K, M, G suffixes)"),
    ("-s", "--speed", "speed", "interface speed in bytes/s: the sender waits instead of losing"),
    ("-c", "--chanbufsize", "chanbufsize", "channel buffer size in bytes (drops beyond it)"),
    ("-n", "--noise", "noise", "damaged bits per megabyte"),
    ("-m", "--mtu", "mtu", "drop frames longer than this"),
]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("urls", nargs="*", metavar="URL",
                   help="the two sides (default: stdin/stdout and dpipe's alternate fds)")
    p.add_argument("-v", "--vde-plug", dest="vde_plug", metavar="SW1:SW2",
                   help="the two switches (directories or URLs), as wirefilter -v")
    for short, long, dest, text in VALUE_OPTIONS:
        p.add_argument(short, long, dest=dest, action="append", default=[], metavar="VALUE",
                       help=text + " (LR/RL prefix: one direction only)")
    p.add_argument("-N", "--nofifo", action="store_true", help="let frames overtake each other")
    p.add_argument("-f", "--rcfile", help="run these console commands at start")
    p.add_argument("-M", "--mgmt", metavar="PATH", help="management console socket")
    p.add_argument("--mgmtmode", type=lambda s: int(s, 8), default=0o600, metavar="MODE")
    p.add_argument("--daemon", action="store_true", help="run in the background")
    p.add_argument("--pidfile", help="write the process id here")
    p.add_argument("--seed", type=int, help="seed of the random generator (replayable runs)")
    p.add_argument("--descr", default=None, help="description shown by the switches")


def split_sides(spec: str) -> tuple[str, str]:
    """Split ``-v SW1:SW2`` (vde2 syntax) at the first ':' that does not start a ``://``."""
    for i, c in enumerate(spec):
        if c == ":" and not spec.startswith("://", i):
            left, right = spec[:i], spec[i + 1:]
            if left and right:
                return left, right
            break
    raise ValueError(f"bad -v {spec!r}: expected SWITCH1:SWITCH2")
