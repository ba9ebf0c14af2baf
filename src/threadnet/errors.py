"""Exceptions shared by every part of threadnet."""


class ThreadnetError(Exception):
    """Base class of threadnet's own errors."""


class URLError(ThreadnetError, ValueError):
    """A link URL (VNL) that cannot be parsed or names an unknown scheme or option."""


class LinkError(ThreadnetError, OSError):
    """A link could not be opened or has failed (peer gone, switch refused the port)."""


class UnknownGroupError(ThreadnetError, ValueError, LookupError):
    """A group name (``-g``, ``--mgmtgroup``, ``publish(group=...)``) that the system does
    not know."""

    def __init__(self, group: object) -> None:
        super().__init__(f"unknown group {group!r}")
        self.group = group


class FrameError(ThreadnetError, ValueError):
    """A frame or header that is too short or inconsistent to parse."""
