"""``threadnet wirefilter``: a cable whose two directions pass through emulated channels.

The ImpairedLine (sans-IO, ``core.py``) decides what happens to each frame and when; this
module only moves frames between the two links and the ImpairedLine on an event loop, and
serves wirefilter's console (prompt ``VDEwf$``) on ``-M``.
"""

from __future__ import annotations

import argparse
import errno
import signal

from threadnet.link import Link, open_link
from threadnet.link.cable import Cable
from threadnet.loop import EventLoop, Timer, monotonic
from threadnet.mgmt.commands import Caller, CommandError, CommandTable, add_load_command
from threadnet.mgmt.console import ConsoleServer, run_script
from threadnet.wirefilter.core import ImpairedLine
from threadnet.wirefilter.options import VALUE_OPTIONS, split_sides

BANNER = "\nVDE wirefilter V.2.3.2\n(C) threadnet - a wirefilter-compatible link emulator in Python\n"
PROMPT = "\nVDEwf$ "

_HELP = [
    ("help", "print a summary of mgmt commands"),
    ("load", "load a configuration file"),
    ("showinfo", "show status and parameter values"),
    ("loss", "set loss percentage"),
    ("lostburst", "mean length of lost packet bursts"),
    ("delay", "set delay ms"),
    ("dup", "set dup packet percentage"),
    ("bandwidth", "set channel bandwidth bytes/sec"),
    ("speed", "set interface speed bytes/sec"),
    ("noise", "set noise factor bits/Mbyte"),
    ("mtu", "set channel MTU (bytes)"),
    ("chanbufsize", "set channel buffer size (bytes)"),
    ("fifo", "set channel fifoness"),
    ("shutdown", "shut the channel down"),
    ("logout", "log out from this mgmt session"),
]


class WireFilter:
    """Two links joined through a ImpairedLine, on an event loop."""

    def __init__(self, left: Link, right: Link, *, seed: int | None = None,
                 loop: EventLoop | None = None) -> None:
        self.loop = loop if loop is not None else EventLoop()
        self.filter = ImpairedLine(seed)
        self.cable = Cable(self.loop, left, right)
        self.cable.lr = lambda frame, now: self._push("LR", frame, now)
        self.cable.rl = lambda frame, now: self._push("RL", frame, now)
        self._out = {"LR": right, "RL": left}
        self._timer: Timer | None = None
        self._due: float | None = None
        self._resume: dict[str, Timer | None] = {"LR": None, "RL": None}
        self.table = self._build_table()
        self.console: ConsoleServer | None = None

    # -- frames --------------------------------------------------------------------
    def _push(self, direction: str, frame: bytes, now: float) -> None:
        ch = self.filter.channels[direction]
        ch.push(frame, now)
        ready = ch.accept_at(now)
        if ready > now:
            self.cable.pause(direction, True)
            old = self._resume[direction]
            if old is not None:
                old.cancel()
            self._resume[direction] = self.loop.call_at(
                ready, lambda: self.cable.pause(direction, False))
        self._deliver(now)

    def _deliver(self, now: float) -> None:
        for direction, ch in self.filter.channels.items():
            if ch.queued_frames:
                out = self._out[direction]
                for frame in ch.pop(now):
                    out.send(frame)
        self._arm()

    def _arm(self) -> None:
        due = self.filter.next_deadline()
        if due == self._due:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._due = due
        if due is not None:
            self._timer = self.loop.call_at(due, self._tick)

    def _tick(self) -> None:
        self._timer = None
        self._due = None
        try:
            self._deliver(monotonic())
        except OSError as exc:  # a side went away while we were sending
            self.cable._end(str(exc))

    # -- management ----------------------------------------------------------------
    def _build_table(self) -> CommandTable:
        t = CommandTable()

        def help_(args: str) -> list[str]:
            return ["COMMAND      HELP", "------------ ------------"] + [
                f"{name:<12} {text}" for name, text in _HELP]

        t.add("help", "", "", help_, output=True)
        t.add("showinfo", "", "", lambda a: self.filter.showinfo_lines(), output=True)

        def setter(option: str):
            def run(args: str) -> None:
                if not args:
                    raise CommandError(errno.EINVAL)
                try:
                    self.filter.set(option, args, monotonic())
                except ValueError:
                    raise CommandError(errno.EINVAL) from None
                self._deliver(monotonic())
            return run

        for _, long, option, _ in VALUE_OPTIONS:
            t.add(long.lstrip("-"), "VALUE", option, setter(option))
        t.add("fifo", "0/1", "fifoness", setter("fifo"))
        t.add("band", "VALUE", "bandwidth", setter("bandwidth"))
        t.add("capacity", "VALUE", "chanbufsize", setter("chanbufsize"))

        add_load_command(t)
        return t

    def serve_console(self, path: str, mode: int = 0o600) -> None:
        self.console = ConsoleServer(self.loop, path, self.table, BANNER, PROMPT, mode=mode,
                                     on_shutdown=self.loop.stop)

    def run(self) -> None:
        try:
            self.loop.run()
        finally:
            self.close()

    def close(self) -> None:
        if self.console is not None:
            self.console.close()
            self.console = None
        self.cable.close()
        self.loop.close()


def _open_sides(args: argparse.Namespace) -> tuple[Link, Link]:
    from threadnet.link.vde import default_description

    # like vde_plug -D and Debian's wirefilter ("vde_crosscable user=root pid=N")
    descr = default_description(args.descr or "wirefilter")
    if args.vde_plug:
        if args.urls:
            raise ValueError("give either -v SW1:SW2 or two URLs, not both")
        a, b = split_sides(args.vde_plug)
    elif len(args.urls) == 2:
        a, b = args.urls
    elif not args.urls:
        from threadnet.link.stream import open_dpipe_alternate

        left = open_link("stdio://")
        return left, open_dpipe_alternate()
    else:
        raise ValueError("wirefilter needs two sides: -v SW1:SW2, or URL1 URL2")
    left = open_link(a, description=descr)
    try:
        right = open_link(b, description=descr)
    except BaseException:
        left.close()
        raise
    return left, right


def run(args: argparse.Namespace) -> int:
    # Check every value before touching the network, so bad options fail fast.
    probe = ImpairedLine()
    settings = [(opt, v) for _, _, opt, _ in VALUE_OPTIONS for v in getattr(args, opt)]
    for opt, v in settings:
        probe.set(opt, v, 0.0)
    from threadnet.daemon import check_pidfile

    check_pidfile(args.pidfile)  # before opening the sides
    left, right = _open_sides(args)
    wf = WireFilter(left, right, seed=args.seed)
    try:
        now = monotonic()
        for opt, v in settings:
            wf.filter.set(opt, v, now)
        if args.nofifo:
            wf.filter.set("fifo", "0", now)
        if args.rcfile:
            errors = run_script(wf.table, args.rcfile, Caller.service(), regular_only=False)
            if errors:
                raise ValueError("; ".join(errors))
        if args.mgmt:
            wf.serve_console(args.mgmt, args.mgmtmode)
    except BaseException:
        wf.close()
        raise
    from threadnet.daemon import background_or_pidfile

    background_or_pidfile(args.daemon, args.pidfile)
    wf.loop.stop_on_signals(signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    wf.run()
    return 0
