"""``threadnet ip``: iproute2's ``ip`` on a published stack.

    threadnet ip [--stack PATH] [-4|-6] [-j] [-p] OBJECT COMMAND ...

The words after the options are ``ip``'s (``stack/ipcommand.py``): they are read here
first, so a bad line fails without reaching the stack, then sent to the stack published
at PATH (``RemoteStack.ip``), which runs them and sends back the data; the text or JSON
is made here from it (``stack/iproute.py``). Without ``--stack``, the stack a ``threadnet
run --stack PATH`` child is on (``THREADNET_STACK``). Errors are iproute2's lines and exit
statuses; a stack that cannot be reached is one ``threadnet ip:`` line and status 1.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

USAGE = """usage: threadnet ip [--stack PATH] [-4|-6] [-j] [-p] OBJECT COMMAND ...

iproute2's ip on a stack published at PATH (threadnet stack PATH ...; default: the stack
of a 'threadnet run --stack PATH' child, $THREADNET_STACK). OBJECT is address, link,
route or neighbour, with iproute2's commands and words:
  threadnet ip --stack PATH addr                    threadnet ip --stack PATH -j -6 route
  threadnet ip --stack PATH route add default via 10.0.0.1
Shows are open to everyone who may use the stack; changes to its owner and root."""


def split_stack_option(argv: Sequence[str]) -> tuple[str | None, list[str], bool]:
    """(the ``--stack`` PATH or None, the ``ip`` words, whether help was asked for): the
    options before the object may mix ``--stack`` with ip's own."""
    words = list(argv)
    path = None
    rest: list[str] = []
    while words and words[0].startswith("-") and words[0] != "--":
        word = words.pop(0)
        if word in ("-h", "--help"):
            return path, rest + words, True
        if word == "--stack":
            if not words:
                raise ValueError("--stack needs a PATH")
            path = words.pop(0)
        elif word.startswith("--stack="):
            path = word.split("=", 1)[1]
        else:
            rest.append(word)
            if word in ("-f", "-family", "--family") and words:
                rest.append(words.pop(0))
    return path, rest + words, False


def main(argv: Sequence[str]) -> int:
    """Run ``threadnet ip ARGV``; returns the exit status."""
    from threadnet.stack.ipcommand import IpError, output, parse

    prog = "threadnet ip"
    try:
        path, words, want_help = split_stack_option(argv)
    except ValueError as exc:
        print(f"{prog}: {exc} (see '{prog} --help')", file=sys.stderr)
        return 2
    if want_help:
        print(USAGE)
        return 0
    path = path or os.environ.get("THREADNET_STACK") or None
    try:
        cmd = parse(words)
    except IpError as exc:
        print(exc.message, file=sys.stderr)
        return exc.status
    if path is None:
        print(f"{prog}: which stack? Give --stack PATH (a stack published with 'threadnet "
              "stack PATH --link URL ...'), or run it under 'threadnet run --stack PATH'",
              file=sys.stderr)
        return 2
    from threadnet.cli import _check_stack_path
    from threadnet.stack.remote import RemoteStack

    try:
        _check_stack_path(path)
        data = RemoteStack(path).ip(words)
    except IpError as exc:
        print(exc.message, file=sys.stderr)
        return exc.status
    except OSError as exc:
        print(f"{prog}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    sys.stdout.write(output(cmd, data))
    return 0
