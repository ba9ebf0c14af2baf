"""Helpers shared by the stack tests (not a test module)."""

from __future__ import annotations

import os

from threadnet.link import Link


class ListLink(Link):
    """A link that records what the stack sends and never receives: for feeding a stack
    frames directly (fuzzing, floods) and reading its answers."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[bytes] = []
        self.url = "list://"
        self._r, self._w = os.pipe()

    def fileno(self) -> int:
        return self._r

    def _send(self, frame) -> None:
        self.sent.append(bytes(frame))

    def close(self) -> None:
        if not self.closed:
            super().close()
            os.close(self._r)
            os.close(self._w)
