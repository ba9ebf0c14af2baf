"""A running stack's console commands for its packet filter and connection table
(``filter/...``, ``ct/...``, ``nat/...``), entries of the stack's one command table
(``stack/commands.py``, which lists ``FILTER_COMMANDS`` after its own).

``filter/load PATH`` reads the file with the rights of the console's user, not the
service's (``Caller.open``, ``peer.open_as``: docs/security.md), and only a regular file
of at most 1 MiB. Reading and parsing happen without the stack's lock; the new ruleset
is swapped in under it. A ruleset that does not parse changes nothing: the command
fails with EINVAL and prints where and why.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from threadnet.mgmt.commands import (
    CALLER,
    OUTPUT,
    Caller,
    CommandError,
    parse_int,
    read_script,
)
from threadnet.stack.nftrules import RulesetError

if TYPE_CHECKING:
    from threadnet.mgmt.commands import Entry
    from threadnet.stack.commands import ManagedStack

#: stack/commands.py's UNLOCKED (the same bit; that module imports this one): run without
#: the stack's lock and the table's error translation
UNLOCKED = 1 << 8


def _set(managed: ManagedStack, text: str, source: str) -> None:
    try:
        managed.stack.filter_set(text, source=source)
    except RulesetError as exc:
        raise CommandError(errno.EINVAL, str(exc), lines=str(exc).splitlines()) from None


def filter_load(managed: ManagedStack, args: str, caller: Caller) -> list[str]:
    if not args:
        raise CommandError(errno.EINVAL)
    try:
        text = read_script(caller, args)
    except OSError as exc:
        err = exc.errno or errno.EIO
        raise CommandError(err, str(exc), lines=[f"{args}: {exc.strerror or exc}"]) from None
    _set(managed, text, args)
    return []


def filter_set(managed: ManagedStack, args: str) -> list[str]:
    if not args:
        raise CommandError(errno.EINVAL)
    _set(managed, args.replace("\\n", "\n"), "<console>")
    return []


def filter_list(managed: ManagedStack, args: str) -> list[str]:
    return managed.stack.filter_list().splitlines()


def filter_flush(managed: ManagedStack, args: str) -> None:
    managed.stack.filter_flush()


def filter_log(managed: ManagedStack, args: str) -> list[str]:
    lines = list(managed.stack.packet_filter.log)
    if args:
        n = parse_int(args, "count", 0)
        lines = lines[len(lines) - n:] if n else []
    return lines


def ct_list(managed: ManagedStack, args: str) -> list[str]:
    stack = managed.stack
    return stack.conntrack.listing(stack._api_now(None))


def ct_stats(managed: ManagedStack, args: str) -> list[str]:
    table = managed.stack.conntrack
    tracking = managed.stack.packet_filter.tracking
    return [f"entries {len(table)} max {table.max_entries} "
            f"tracking {'on' if tracking else 'off'}"] + \
        [f"{k} {v}" for k, v in table.stats.items()]


def ct_flush(managed: ManagedStack, args: str) -> None:
    managed.stack.conntrack.flush()


def nat_stats(managed: ManagedStack, args: str) -> list[str]:
    nat = managed.stack.packet_filter.nat
    if nat is None:
        return ["nat off"]
    return [f"mappings {len(nat.mappings)}"] + [f"{k} {v}" for k, v in nat.stats.items()]


FILTER_COMMANDS: tuple[Entry, ...] = (
    ("filter", "", "PACKET FILTER MENU (nftables syntax: docs/filter.md)", None, 0),
    ("filter/load", "PATH", "replace the ruleset by the file PATH (read as you)",
     filter_load, OUTPUT | CALLER | UNLOCKED),
    ("filter/set", "RULESET", r"replace the ruleset by RULESET (one line, or \n)",
     filter_set, OUTPUT | UNLOCKED),
    ("filter/list", "", "the ruleset with its counters (like nft list ruleset)",
     filter_list, OUTPUT),
    ("filter/flush", "", "remove the ruleset: everything passes", filter_flush, 0),
    ("filter/log", "[N]", "the last N lines the log statement wrote", filter_log, OUTPUT),
    ("ct", "", "CONNECTION TRACKING MENU", None, 0),
    ("ct/list", "", "tracked connections (like conntrack -L)", ct_list, OUTPUT),
    ("ct/stats", "", "the table's size and counters (like conntrack -S)", ct_stats, OUTPUT),
    ("ct/flush", "", "forget every tracked connection", ct_flush, 0),
    ("nat", "", "NAT MENU (type nat chains in the ruleset: docs/nat.md)", None, 0),
    ("nat/stats", "", "NAT's counters: UDP mappings, translated, no_port, errors",
     nat_stats, OUTPUT),
)
