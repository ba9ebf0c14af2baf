"""One table of management commands, shared by the console socket, the CLI and the web page.

A command has a path (``port/print``), a syntax hint, a help line and a handler. Handlers
take the argument text and return the output lines (for commands that print) or None;
they raise CommandError(errno) to fail, which the console reports as ``1<errno> <strerror>``.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from dataclasses import dataclass, field


class CommandError(Exception):
    """A management command failed with ``errno``."""

    def __init__(self, err: int, message: str | None = None) -> None:
        super().__init__(message or _strerror(err))
        self.errno = err


def _strerror(err: int) -> str:
    import os

    return os.strerror(err)


Handler = Callable[[str], "list[str] | None"]


@dataclass(slots=True)
class Command:
    path: str
    syntax: str
    help: str
    handler: Handler | None = None  # None for a menu heading
    output: bool = False  # prints a DATA block (even when it then fails)

    @property
    def is_menu(self) -> bool:
        return self.handler is None


@dataclass
class CommandTable:
    """An ordered table of commands (menus and leaves), looked up by exact path."""

    commands: list[Command] = field(default_factory=list)

    def menu(self, path: str, title: str) -> None:
        self.commands.append(Command(path, "============", title))

    def add(self, path: str, syntax: str, help: str, handler: Handler, *, output: bool = False) -> None:
        if self.get(path) is not None:
            raise ValueError(f"duplicate management command {path!r}")
        self.commands.append(Command(path, syntax, help, handler, output))

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

    def run(self, line: str) -> tuple[int, list[str] | None, Command | None]:
        """Run one command line. Returns (errno or 0, output lines or None, the command)."""
        name, _, args = line.strip().partition(" ")
        cmd = self.get(name)
        if cmd is None or cmd.handler is None:
            return errno.ENOSYS, None, None
        try:
            out = cmd.handler(args.strip())
        except CommandError as exc:
            return exc.errno, [] if cmd.output else None, cmd
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


def add_load_command(table: CommandTable, help: str = "load a configuration script") -> None:
    """The ``load PATH`` command: run a script of commands from this same table."""
    from threadnet.mgmt.console import run_script

    def load(args: str) -> None:
        if not args:
            raise CommandError(errno.EINVAL)
        try:
            errors = run_script(table, args)
        except OSError as exc:
            raise CommandError(exc.errno or errno.ENOENT) from None
        if errors:
            raise CommandError(errno.EINVAL)

    table.add("load", "path", help, load)
