"""A client of the vde console protocol (what unixterm/unixcmd do), for the CLI and tests."""

from __future__ import annotations

import re
import socket
import sys

_RESULT = re.compile(r"^(1\d{3}) (.*)$")


class ConsoleClient:
    """Connect to a switch or wirefilter console; ``run(line)`` returns (errno, lines, text)."""

    def __init__(self, path: str, timeout: float = 10.0) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(path)
        except OSError as exc:
            self.sock.close()
            # name the console: "[Errno 111] Connection refused" alone says not where
            why = exc.strerror or str(exc)
            if isinstance(exc, ConnectionRefusedError):
                why += " (nothing listens there: is the switch, wirefilter or stack running?)"
            raise type(exc)(exc.errno, f"console {path}: {why}") from None
        self._buf = b""
        self.banner, self.prompt = self._read_banner()

    def _read_until(self, marker: bytes) -> bytes:
        while marker not in self._buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"{self.path}: console closed the connection")
            self._buf += chunk
        i = self._buf.index(marker) + len(marker)
        out, self._buf = self._buf[:i], self._buf[i:]
        return out

    def _read_banner(self) -> tuple[str, str]:
        text = self._read_until(b"$ ").decode(errors="replace")
        head, _, last = text.rpartition("\n")
        return head, last  # the prompt is the last line, e.g. "vde$ "

    def run(self, line: str) -> tuple[int, list[str], str]:
        """Send one command and read its reply up to the next prompt."""
        if "\n" in line.strip():
            # two commands would get two replies, and this one would read only the first
            raise ValueError("one console command at a time (no newline inside)")
        self.sock.sendall(line.strip().encode() + b"\n")
        if line.strip() in ("logout", "shutdown"):
            # the session (or the whole server) ends: no prompt follows
            rest = self._read_rest()
            m = [_RESULT.match(ln) for ln in rest.splitlines()]
            codes = [int(x.group(1)) for x in m if x]
            err = codes[-1] - 1000 if codes and codes[-1] not in (1000, 9999) else 0
            return err, [], rest.strip() or "Success"
        reply = self._read_until(self.prompt.encode()).decode(errors="replace")
        lines = reply.split("\n")
        data: list[str] = []
        err, text = 0, "Success"
        in_data = False
        for ln in lines:
            if ln.startswith("0000 DATA END WITH"):
                in_data = True
            elif in_data:
                if ln == ".":
                    in_data = False
                else:
                    data.append(ln)
            else:
                m = _RESULT.match(ln)
                if m:
                    code = int(m.group(1))
                    err, text = (0 if code == 1000 else code - 1000), m.group(2)
        return err, data, text

    def _read_rest(self) -> str:
        out = self._buf
        try:
            while chunk := self.sock.recv(65536):
                out += chunk
        except OSError:
            pass
        return out.decode(errors="replace")

    def interactive(self) -> int:
        """A line-oriented terminal like unixterm."""
        print(self.banner)
        while True:
            try:
                line = input(self.prompt)
            except EOFError:
                return 0
            if not line.strip():
                continue
            err, lines, text = self.run(line)
            for ln in lines:
                print(ln)
            if line.strip() in ("logout", "shutdown"):
                return 0
            print(("" if err == 0 else f"error {err}: ") + text, file=sys.stdout if not err else sys.stderr)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> ConsoleClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
