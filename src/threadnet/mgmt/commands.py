"""One table of management commands, shared by the console socket and the CLI (``threadnet console``).

A command has a path (``port/print``), a syntax hint, a help line and a handler. Handlers
take the argument text and return the output lines (for commands that print) or None;
they raise CommandError(errno) to fail, which the console reports as ``1<errno> <strerror>``.

Who asked matters for commands that open paths (``load``, ``port/capture``): a console user
must not open files with the service's rights (issue 14, S2). ``CommandTable.run`` takes a
``Caller`` (the console peer's SO_PEERCRED credentials, or ``Caller.service()`` for the
service's own rc file and CLI), and handlers added with ``with_caller=True`` receive it and
open paths through ``Caller.open`` (``peer.open_as``). A run without a caller refuses those
commands (EACCES) rather than lend them the service's rights.
"""

from __future__ import annotations

import errno
import functools
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field

from threadnet.peer import PeerCred, open_as, own_credentials

#: the largest script ``load`` (and ``-f``) reads
MAX_SCRIPT = 1 << 20
#: how deep ``load`` may nest (a script that loads itself stops here)
MAX_LOAD_DEPTH = 8


class CommandError(Exception):
    """A management command failed with ``errno``; a command that prints shows ``lines``
    (why it failed, e.g. where a file is wrong) before the error code."""

    def __init__(self, err: int, message: str | None = None, *,
                 lines: list[str] | None = None) -> None:
        super().__init__(message or _strerror(err))
        self.errno = err
        self.lines = lines


def _strerror(err: int) -> str:
    return os.strerror(err)


Handler = Callable[..., "list[str] | None"]  # (args) or, with_caller, (args, caller)


@dataclass(frozen=True, slots=True)
class Caller:
    """Who runs a command: a console peer (its SO_PEERCRED credentials) or the service
    itself (its rc file, its CLI); ``depth`` counts the ``load`` scripts it is inside."""

    cred: PeerCred
    depth: int = 0

    @classmethod
    def service(cls) -> Caller:
        """The service's own user, for commands it runs itself (``-f``, stdin console)."""
        return cls(own_credentials())

    def nested(self) -> Caller:
        return Caller(self.cred, self.depth + 1)

    def open(self, path: str, flags: int, mode: int = 0o644) -> int:
        """Open ``path`` with this caller's rights (``peer.open_as``): a descriptor, or
        OSError. Never blocks in open(2); callers that need a regular file check fstat."""
        return open_as(self.cred, path, flags, mode)


@dataclass(slots=True)
class Command:
    path: str
    syntax: str
    help: str
    handler: Handler | None = None  # None for a menu heading
    output: bool = False  # prints a DATA block (even when it then fails)
    with_caller: bool = False  # the handler takes (args, caller)

    @property
    def is_menu(self) -> bool:
        return self.handler is None


@dataclass
class CommandTable:
    """An ordered table of commands (menus and leaves), looked up by exact path."""

    commands: list[Command] = field(default_factory=list)

    def menu(self, path: str, title: str) -> None:
        self.commands.append(Command(path, "============", title))

    def add(self, path: str, syntax: str, help: str, handler: Handler, *, output: bool = False,
            with_caller: bool = False) -> None:
        """Add a command; ``with_caller=True`` for handlers that must know who asked (any
        handler that opens a path): they are called as ``handler(args, caller)``."""
        if self.get(path) is not None:
            raise ValueError(f"duplicate management command {path!r}")
        self.commands.append(Command(path, syntax, help, handler, output, with_caller))

    def get(self, path: str) -> Command | None:
        for c in self.commands:
            if c.path == path and not c.is_menu:
                return c
        return None

    def names(self) -> list[str]:
        return [c.path for c in self.commands if not c.is_menu]

    def help_lines(self, prefix: str = "") -> list[str]:
        """vde_switch's help listing, optionally limited to paths starting with ``prefix``."""
        lines = ["COMMAND PATH       SYNTAX          HELP",
                 "------------       --------------  ------------"]
        for c in self.commands:
            if prefix and not c.path.startswith(prefix):
                continue
            lines.append(f"{c.path:<18} {c.syntax:<15} {c.help}")
        return lines

    def run(self, line: str, caller: Caller | None = None
            ) -> tuple[int, list[str] | None, Command | None]:
        """Run one command line for ``caller``. Returns (errno or 0, output lines or None,
        the command). Without a caller, commands that need one fail with EACCES."""
        name, _, args = line.strip().partition(" ")
        cmd = self.get(name)
        if cmd is None or cmd.handler is None:
            return errno.ENOSYS, None, None
        try:
            if cmd.with_caller:
                if caller is None:
                    raise CommandError(errno.EACCES, f"{name}: run without a caller")
                out = cmd.handler(args.strip(), caller)
            else:
                out = cmd.handler(args.strip())
        except CommandError as exc:
            return exc.errno, (exc.lines or []) if cmd.output else None, cmd
        return 0, (out if out is not None else ([] if cmd.output else None)), cmd


def parse_int(text: str, what: str = "argument", lo: int | None = None, hi: int | None = None) -> int:
    """A strict integer argument: CommandError(EINVAL) when missing, malformed or out of range."""
    try:
        value = int(text, 0) if text.lower().startswith("0x") else int(text)
    except ValueError:
        raise CommandError(errno.EINVAL, f"bad {what} {text!r}") from None
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise CommandError(errno.EINVAL, f"{what} {value} out of range")
    return value


def split_args(text: str, count: int, optional: int = 0) -> list[str]:
    """Split exactly ``count`` arguments (the last ``optional`` may be missing, as "")."""
    parts = text.split()
    if not count - optional <= len(parts) <= count:
        raise CommandError(errno.EINVAL)
    return parts + [""] * (count - len(parts))


def read_script(caller: Caller, path: str, *, regular_only: bool = True) -> str:
    """The text of a script for ``load``/``-f``, read with ``caller``'s rights: a regular
    file of at most MAX_SCRIPT bytes. FIFOs, devices and directories are refused
    (EINVAL, EISDIR) without reading, a larger file with EFBIG; other failures are the
    open's OSError. ``regular_only=False`` (a service's own ``-f`` at start, before its
    loop runs, e.g. ``-f <(...)``) also reads a pipe or a device, still at most
    MAX_SCRIPT bytes."""
    fd = caller.open(path, os.O_RDONLY)
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise OSError(errno.EISDIR, "a directory, not a script", path)
        if regular_only and not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file (FIFOs and devices are refused)",
                          path)
        if st.st_size > MAX_SCRIPT:
            raise OSError(errno.EFBIG, f"larger than {MAX_SCRIPT} bytes", path)
        data = bytearray()
        while len(data) <= MAX_SCRIPT:  # the file may grow after fstat: read at most cap+1
            chunk = os.read(fd, MAX_SCRIPT + 1 - len(data))
            if not chunk:
                break
            data += chunk
        if len(data) > MAX_SCRIPT:
            raise OSError(errno.EFBIG, f"larger than {MAX_SCRIPT} bytes", path)
    finally:
        os.close(fd)
    return data.decode(errors="replace")


def run_script(table: CommandTable, path: str, caller: Caller, *,
               regular_only: bool = True) -> list[str]:
    """Run an rc file (the ``load`` command and ``-f``) for ``caller``: one command a line,
    ``#`` comments. The file is read with the caller's rights (``read_script``).

    Returns error lines for failing commands; raises OSError when the file cannot be read.
    """
    if caller.depth >= MAX_LOAD_DEPTH:
        raise OSError(errno.ELOOP, f"load nested more than {MAX_LOAD_DEPTH} deep", path)
    text = read_script(caller, path, regular_only=regular_only)
    inner = caller.nested()
    errors = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        err, _, _ = table.run(line, inner)
        if err:
            errors.append(f"{path}:{n}: {line}: {os.strerror(err)}")
    return errors


def load(table: CommandTable, args: str, caller: Caller) -> None:
    """The ``load PATH`` command's work: run a script of commands from ``table``, read with
    the rights of whoever asked."""
    if not args:
        raise CommandError(errno.EINVAL)
    try:
        errors = run_script(table, args, caller)
    except OSError as exc:
        raise CommandError(exc.errno or errno.ENOENT, str(exc)) from None
    if errors:
        raise CommandError(errno.EINVAL)


def add_load_command(table: CommandTable, help: str = "load a configuration script") -> None:
    """Add the ``load PATH`` command (``load``) for ``table``."""
    table.add("load", "path", help, lambda args, caller: load(table, args, caller),
              with_caller=True)


# -- command tables as data ---------------------------------------------------------------
#: an entry's flags: the command prints a DATA block; its handler takes the Caller too
OUTPUT = 1
CALLER = 2
#: one command: (path, syntax, help, handler, flags); a handler of None is a menu heading
#: (its help is the menu's title). Handlers take the target first: ``handler(target, args)``
#: or, with CALLER, ``handler(target, args, caller)``.
Entry = tuple[str, str, str, "Callable[..., list[str] | None] | None", int]


def table_from_entries(entries: tuple[Entry, ...], target: object,
                       wrap: Callable[[Handler, int], Handler] | None = None) -> CommandTable:
    """A CommandTable running ``entries`` on ``target``; ``wrap(handler, flags)``, when
    given, may wrap each bound handler (a lock, error translation)."""
    table = CommandTable()
    for path, syntax, help, handler, flags in entries:
        if handler is None:
            table.menu(path, help)
            continue
        bound: Handler = functools.partial(handler, target)
        if wrap is not None:
            bound = wrap(bound, flags)
        table.add(path, syntax, help, bound, output=bool(flags & OUTPUT),
                  with_caller=bool(flags & CALLER))
    return table
