"""Links: anything that moves Ethernet frames, opened by URL (vdeplug4's VNL convention).

Every link has the same small interface: ``send(frame)``, ``recv()`` (one frame),
``fileno()`` (readable when a frame waits) and ``close()``. Wrappers (emulation,
capture) take any link and are links themselves, so they compose.

A link driven by an event loop (the stack runner's) also offers two optional parts, so
that nothing it does under a stack's lock blocks or sleeps:

- a transmit backlog (``link/backlog.py``; every transport link has one): ``attach_tx(wake)``
  hands it the loop. A frame the transport cannot take now waits in a bounded backlog,
  ``wake(link)`` tells the loop, which then calls ``on_writable()`` whenever
  ``tx_fileno()`` is writable until it returns False;
- timers: ``attach_timer(wake)``; ``next_deadline()`` says when the link has work, and the
  loop calls ``on_timer(now)`` then (an emulated line's pacing). ``wake(link)`` says the
  deadline moved earlier. The loop also watches ``inner_fileno()``, when there is one,
  and calls ``on_inner_readable(now)`` (an emulated line paces arrivals too).

A link with no loop attached works alone (it may wait briefly, or run its own thread).

    >>> link = open_link("vde:///tmp/sw")         # a port on a vde_switch-protocol switch
    >>> link.send(frame); reply = link.recv()

Schemes are looked up in a registry; ``register_scheme`` and the ``threadnet.links``
entry-point group let other packages add their own.
"""

from __future__ import annotations

import contextvars
import os
import select
from collections.abc import Callable
from importlib import metadata

from threadnet.errors import LinkError, URLError


class Link:
    """Base class of links. Subclasses implement ``_send``, ``_recv`` and ``fileno``.

    ``recv`` blocks until a frame arrives unless the link is non-blocking, in which case
    it raises BlockingIOError when no frame waits. When the peer is gone (switch shut
    down, stream closed) ``recv`` raises LinkError and ``closed_by_peer`` becomes True.
    """

    #: the URL this link was opened with
    url: str = ""
    #: largest frame the link carries (Ethernet header included, no FCS)
    max_frame: int = 1518
    #: whether ``max_frame`` is a limit this link knows: the link (or its peer) drops or
    #: cuts longer frames. A link that does not know (a tap: the kernel device's MTU
    #: decides) leaves it False and ``max_mtu`` is None
    max_frame_known: bool = False

    @property
    def max_mtu(self) -> int | None:
        """The largest MTU the link can carry (its largest frame less an Ethernet header
        and one 802.1Q tag), or None when unknown. A stack refuses a larger MTU on it."""
        return self.max_frame - 18 if self.max_frame_known else None

    def __init__(self) -> None:
        self._blocking = True
        self.closed = False
        self.closed_by_peer = False

    # -- the interface -------------------------------------------------------------
    def send(self, frame: bytes | bytearray | memoryview) -> None:
        """Send one frame, without blocking when a loop drives the link: a frame its
        transport cannot take now waits in the link's bounded transmit backlog (see
        ``attach_tx``), or, when that is full, is dropped and counted, as on a wire."""
        if self.closed:
            raise LinkError(f"{self.url}: link is closed")
        self._send(frame)

    def recv(self) -> bytes:
        """Receive one frame (blocking unless ``setblocking(False)``)."""
        if self.closed:
            raise LinkError(f"{self.url}: link is closed")
        while True:
            if self._blocking:
                self.wait_readable(None)
            try:
                frame = self._recv()
            except BlockingIOError:
                if self._blocking:
                    continue  # woken for nothing (another reader was faster)
                raise
            if frame:
                return frame
            # an empty result is a datagram to ignore (a goodbye, a stranger's): go on

    def fileno(self) -> int:
        raise NotImplementedError  # pragma: no cover - every concrete link defines it

    def close(self) -> None:
        self.closed = True

    # -- helpers -------------------------------------------------------------------
    def ctl_fileno(self) -> int | None:
        """A descriptor that becomes readable when the peer goes away, or None."""
        return None

    def setblocking(self, flag: bool) -> None:
        self._blocking = flag

    def getblocking(self) -> bool:
        return self._blocking

    def wait_readable(self, timeout: float | None) -> bool:
        """Wait until a frame waits (True) or ``timeout`` passes (False).

        Raises LinkError when the peer goes away while waiting.
        """
        fds = [self.fileno()]
        ctl = self.ctl_fileno()
        if ctl is not None:
            fds.append(ctl)
        r, _, _ = select.select(fds, [], [], timeout)
        if ctl is not None and ctl in r and self.fileno() not in r:
            self._check_peer()
        return bool(r)

    def _check_peer(self) -> None:
        """Called when the control descriptor is readable: decide whether the peer is gone."""

    # -- driven by a loop (optional) -----------------------------------------------
    def attach_tx(self, wake: Callable[[Link], None] | None) -> bool:
        """Let a loop drain this link's transmit backlog; False if the link has none.

        ``wake(link)`` may be called from any thread, under a stack's lock, and must not
        block: it asks the loop to watch ``tx_fileno()`` for writability and call
        ``on_writable()``. ``None`` detaches the loop (frames still queued go out with a
        brief wait on the next send).
        """
        return False

    def tx_fileno(self) -> int:
        """The descriptor whose writability lets the backlog drain."""
        return self.fileno()

    def on_writable(self) -> bool:
        """Send what the backlog holds while the transport takes it; True while frames
        still wait (keep watching), False when it is empty."""
        return False

    def attach_timer(self, wake: Callable[[Link], None] | None) -> bool:
        """Let a loop run this link's timers; False if the link has none. ``wake(link)``
        (any thread, must not block) says ``next_deadline()`` moved earlier. ``None``
        detaches the loop; the link then runs its timers itself."""
        return False

    def next_deadline(self) -> float | None:
        """When ``on_timer`` has work next (monotonic seconds), or None."""
        return None

    def on_timer(self, now: float) -> None:
        """Do what is due at ``now``."""

    def inner_fileno(self) -> int | None:
        """With timers attached: a descriptor of the link's own (its wrapped link's) that
        the loop watches, calling ``on_inner_readable`` when it is readable; or None."""
        return None

    def on_inner_readable(self, now: float) -> None:
        """Take what arrived on ``inner_fileno()``."""

    def _send(self, frame: bytes | bytearray | memoryview) -> None:
        raise NotImplementedError  # pragma: no cover

    def _recv(self) -> bytes:
        """One attempt: a frame, b"" for something to ignore, or BlockingIOError."""
        raise NotImplementedError  # pragma: no cover

    def __enter__(self) -> Link:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = " closed" if self.closed else ""
        return f"<{type(self).__name__} {self.url}{state}>"


# The transmit backlog of a wrapped link drains on the loop that drives the wrapper: these
# pass ``attach_tx``/``tx_fileno``/``on_writable`` through to ``self.inner`` (used by
# WrapperLink and by the emulation link, which wraps without being a WrapperLink).
def pass_tx_attach(self, wake: Callable[[Link], None] | None) -> bool:  # noqa: ANN001
    if wake is None:
        return self.inner.attach_tx(None)
    return self.inner.attach_tx(lambda _inner: wake(self))


def pass_tx_fileno(self) -> int:  # noqa: ANN001
    return self.inner.tx_fileno()


def pass_on_writable(self) -> bool:  # noqa: ANN001
    return self.inner.on_writable()


class WrapperLink(Link):
    """A link that wraps another one; by default every call passes through."""

    def __init__(self, inner: Link) -> None:
        super().__init__()
        self.inner = inner
        self.url = inner.url
        self.max_frame = inner.max_frame

    @property
    def max_mtu(self) -> int | None:
        return self.inner.max_mtu

    def fileno(self) -> int:
        return self.inner.fileno()

    def ctl_fileno(self) -> int | None:
        return self.inner.ctl_fileno()

    def setblocking(self, flag: bool) -> None:
        super().setblocking(flag)
        self.inner.setblocking(flag)

    def _send(self, frame: bytes | bytearray | memoryview) -> None:
        self.inner.send(frame)

    def _recv(self) -> bytes:
        return self.inner.recv()

    # a wrapper that queues or paces nothing itself leaves both to the link it wraps
    attach_tx = pass_tx_attach
    tx_fileno = pass_tx_fileno
    on_writable = pass_on_writable

    def attach_timer(self, wake: Callable[[Link], None] | None) -> bool:
        if wake is None:
            return self.inner.attach_timer(None)
        return self.inner.attach_timer(lambda _inner: wake(self))

    def next_deadline(self) -> float | None:
        return self.inner.next_deadline()

    def on_timer(self, now: float) -> None:
        self.inner.on_timer(now)

    def inner_fileno(self) -> int | None:
        return self.inner.inner_fileno()

    def on_inner_readable(self, now: float) -> None:
        self.inner.on_inner_readable(now)

    def recv(self) -> bytes:
        if self.closed:
            raise LinkError(f"{self.url}: link is closed")
        frame = self.inner.recv()
        self.closed_by_peer = self.inner.closed_by_peer
        return self._on_recv(frame)

    def _on_recv(self, frame: bytes) -> bytes:
        return frame

    def close(self) -> None:
        if not self.closed:
            super().close()
            self.inner.close()


# -- URL syntax ----------------------------------------------------------------------
def split_scheme(url: str) -> tuple[str, str]:
    """Split ``scheme://rest``. A URL without ``://`` is a vde switch path (vdeplug4 rule)."""
    if "://" not in url:
        return "vde", url
    scheme, rest = url.split("://", 1)
    if not scheme or not all(c.isalnum() or c in "+-._" for c in scheme):
        raise URLError(f"bad URL {url!r}: invalid scheme {scheme!r}")
    return scheme.lower(), rest


def split_nested(rest: str) -> tuple[str, str | None]:
    """Split a trailing ``{inner URL}`` (vdeplug4 nesting) off ``rest``."""
    if not rest.endswith("}"):
        if "{" in rest or "}" in rest:
            raise URLError(f"unbalanced braces in {rest!r}")
        return rest, None
    depth = 0
    for i in range(len(rest) - 1, -1, -1):
        c = rest[i]
        if c == "}":
            depth += 1
        elif c == "{":
            depth -= 1
            if depth == 0:
                return rest[:i], rest[i + 1:-1]
    raise URLError(f"unbalanced braces in {rest!r}")


def unquote(text: str) -> str:
    """Undo VNL quoting: '..', "..", backslash escapes and %XX."""
    out: list[str] = []
    quote = ""
    i = 0
    while i < len(text):
        c = text[i]
        if quote:
            if c == quote:
                quote = ""
            elif c == "\\" and i + 1 < len(text):
                i += 1
                out.append(text[i])
            else:
                out.append(c)
        elif c in "'\"":
            quote = c
        elif c == "\\" and i + 1 < len(text):
            i += 1
            out.append(text[i])
        elif c == "%" and i + 2 < len(text) + 0 and _ishex(text[i + 1:i + 3]):
            out.append(chr(int(text[i + 1:i + 3], 16)))
            i += 2
        else:
            out.append(c)
        i += 1
    if quote:
        raise URLError(f"unterminated quote in {text!r}")
    return "".join(out)


def _ishex(s: str) -> bool:
    return len(s) == 2 and all(c in "0123456789abcdefABCDEF" for c in s)


def parse_options(text: str, known: tuple[str, ...], what: str) -> dict[str, str]:
    """Parse ``opt/opt=val/...`` with vdeplug4's prefix matching of option names.

    Unknown or ambiguous names raise URLError, naming the options that exist.
    """
    opts: dict[str, str] = {}
    for item in _split_unquoted(text, "/"):
        if not item:
            continue
        key, _, value = item.partition("=")
        matches = [k for k in known if k.startswith(key)] if key not in known else [key]
        if len(matches) != 1:
            kind = "ambiguous" if matches else "unknown"
            raise URLError(f"{what}: {kind} option {key!r} (known: {', '.join(known) or 'none'})")
        opts[matches[0]] = unquote(value)
    return opts


def _split_unquoted(text: str, sep: str) -> list[str]:
    parts: list[str] = []
    cur: list[str] = []
    quote = ""
    for c in text:
        if quote:
            cur.append(c)
            if c == quote:
                quote = ""
        elif c in "'\"":
            quote = c
            cur.append(c)
        elif c == sep:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(c)
    parts.append("".join(cur))
    return parts


def split_bracket(rest: str) -> tuple[str, str]:
    """Split ``path[options]`` into (path, options); no brackets gives (rest, "")."""
    if rest.endswith("]"):
        i = rest.rfind("[")
        if i < 0:
            raise URLError(f"unbalanced brackets in {rest!r}")
        return rest[:i], rest[i + 1:-1]
    if "[" in rest or "]" in rest:
        raise URLError(f"unbalanced brackets in {rest!r}")
    return rest, ""


# -- the registry --------------------------------------------------------------------
LinkFactory = Callable[[str, str, "str | None"], Link]
_SCHEMES: dict[str, LinkFactory] = {}
_BUILTIN = {
    "vde": "threadnet.link.vde:open_vde",
    "cmd": "threadnet.link.stream:open_cmd",
    "stdio": "threadnet.link.stream:open_stdio",
    "fd": "threadnet.link.stream:open_fd",
    "tap": "threadnet.link.tap:open_tap",
    "udp": "threadnet.link.udp:open_udp",
    "ptp": "threadnet.link.ptp:open_ptp",
    "null": "threadnet.link.null:open_null",
    "pcap": "threadnet.link.capture:open_pcap",
    "wirefilter": "threadnet.link.emulation:open_wirefilter",
    "slirp": "threadnet.slirp.link:open_slirp",
    "seqpacket": "threadnet.link.seqpacket:open_seqpacket",
    "hub": "threadnet.link.netnode:open_hub",
    "switch": "threadnet.link.netnode:open_switch",
    "multi": "threadnet.link.netnode:open_multi",
    "bonding": "threadnet.link.netnode:open_bonding",
    "vxvde": "threadnet.link.vxvde:open_vxvde",
    "vxlan": "threadnet.link.vxlan:open_vxlan",
}


def register_scheme(name: str, factory: LinkFactory, *, replace: bool = False) -> None:
    """Add a URL scheme. ``factory(url, rest, inner)`` gets the whole URL, the part after
    ``scheme://`` (nested ``{...}`` removed) and the nested URL or None, and returns a Link."""
    name = name.lower()
    if not replace and (name in _SCHEMES or name in _BUILTIN):
        raise ValueError(f"link scheme {name!r} is already registered")
    _SCHEMES[name] = factory


def schemes() -> list[str]:
    """The names of every known scheme."""
    names = set(_SCHEMES) | set(_BUILTIN)
    try:
        names |= {ep.name for ep in metadata.entry_points(group="threadnet.links")}
    except Exception:  # pragma: no cover - broken metadata must not break built-ins
        pass
    return sorted(names)


def _resolve(name: str) -> LinkFactory | None:
    if name in _SCHEMES:
        return _SCHEMES[name]
    target = _BUILTIN.get(name)
    if target is None:
        for ep in metadata.entry_points(group="threadnet.links"):
            if ep.name == name:
                factory = ep.load()
                _SCHEMES[name] = factory
                return factory
        return None
    module, _, attr = target.partition(":")
    import importlib

    factory = getattr(importlib.import_module(module), attr)
    _SCHEMES[name] = factory
    return factory


#: The description a link gives its peer (a vde switch shows it in ``port/print``).
link_description: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "link_description", default=None)


def open_link(url: str | None = None, *, description: str | None = None) -> Link:
    """Open a link by URL.

    ``vde://DIR[N]`` (or a bare path), ``cmd://"command"``, ``stdio://``, ``fd://R[,W]``,
    ``tap://ifname``, ``udp://[src:]sport->host:dport``, ``ptp://PATH``, ``null://``,
    ``seqpacket://FD``, the nodes ``hub://DIR``, ``switch://DIR``, ``multi://DIR`` and
    ``bonding://DIR`` (served here, joined with ``vde://DIR``), and the wrappers ``pcap://FILE{URL}`` and ``wirefilter://OPTIONS{URL}``. An empty or
    missing URL means the default switch (see ``threadnet.link.vde.default_switch``).
    ``description`` is what a switch shows for this client (default
    ``"threadnet user=NAME pid=PID"``).
    """
    url = (url or "").strip()
    if not url:
        from threadnet.link.vde import default_switch

        url = default_switch()
    scheme, rest = split_scheme(url)
    rest, inner = split_nested(rest)
    factory = _resolve(scheme)
    if factory is None:
        raise URLError(f"unknown link scheme {scheme!r} in {url!r} (known: {', '.join(schemes())})")
    token = link_description.set(description)
    try:
        link = factory(url, rest, inner)
    finally:
        link_description.reset(token)
    link.url = url
    return link


def require_no_inner(url: str, inner: str | None) -> None:
    if inner is not None:
        raise URLError(f"{url!r}: this scheme takes no nested {{URL}}")


def require_inner(url: str, inner: str | None) -> str:
    if not inner:
        raise URLError(f"{url!r}: this wrapper needs a nested link, e.g. {{vde:///tmp/sw}}")
    return inner


def set_nonblocking(fd: int) -> None:
    os.set_blocking(fd, False)
