"""``threadnet.Stack``: the stack core (``stack/stack.py``) plus what applications call.

The core is a protocol engine and imports nothing above it. This subclass, in the
socket-API layer, adds the calls that need that layer: ``socket`` (``StackSocket``),
``publish`` (``Publication``), the name lookups (``Resolver``, which blocks the caller),
and a runner by default (the process's ``StackRunner``), so ``Stack(config, link)`` runs at once.
"""

from __future__ import annotations

import os
import shlex
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from threadnet.link import Link
from threadnet.stack import stack as core
from threadnet.stack.publication import Publication
from threadnet.stack.remote import RemoteStack
from threadnet.stack.resolver import Resolver
from threadnet.stack.runner import default_runner
from threadnet.stack.socket import StackSocket


class Stack(core.Stack):
    """A TCP/IP stack instance (IPv4 and IPv6 in one engine), with its sockets.

    ``runner`` is the StackRunner that runs it: the process's default one if None, none if
    False (a test then feeds it frames and time itself). ``clock``: see the core Stack.

        >>> s = Stack("eth,ip=10.0.0.5/24,gw=10.0.0.1", link="vde:///tmp/sw")
        >>> s.socket().connect(("10.0.0.1", 80))
    """

    resolver_class = Resolver
    resolver: Resolver  # the property's value, with the lookups
    #: its publications run it too: they are not part of its state (see the core's)
    RUNTIME = core.Stack.RUNTIME | {"_publications"}

    def __init__(self, config: str | None = None, link: Link | str | None = None, *,
                 name: str | None = None, forwarding: bool = False,
                 runner: object | None = None, acd: bool = False,
                 clock: Callable[[], float] | None = None) -> None:
        super().__init__(config, link, name=name, forwarding=forwarding,
                         runner=default_runner() if runner is None else runner, acd=acd,
                         clock=clock)

    def _runtime(self, clock: Callable[[], float] | None = None) -> None:
        super()._runtime(clock)
        self._publications: list[Publication] | None = None  # stack.publish(path)

    def socket(self, family: int = 2, type: int = 1, proto: int = 0) -> StackSocket:
        """A stdlib-compatible socket on this stack (``socket.AF_INET``, ``SOCK_STREAM``...):
        TCP, UDP, and raw IP, ping and ``AF_PACKET`` sockets (``stack/rawsocket.py``)."""
        return StackSocket(self, family, type, proto)

    def publish(self, path: str | os.PathLike[str], mode: int = 0o660,
                group: int | str | None = None, *, max_sockets: int | None = None,
                max_pending: int | None = None) -> Publication:
        """Make this stack reachable at ``path`` for other processes (``msocket(path, ...)``).

        ``mode`` and ``group`` set who may open sockets on it; ``max_sockets`` and
        ``max_pending`` are per-uid quotas (see ``Publication``). Returns the
        Publication; closing it, or the stack, removes the path."""
        pub = Publication(self, path, mode, group, max_sockets=max_sockets,
                          max_pending=max_pending)
        if self._publications is None:
            self._publications = []
        self._publications.append(pub)
        return pub

    def settle(self, timeout: float = 10.0) -> None:
        """Wait until no address is tentative: IPv6 duplicate address detection (about a
        second, as on Linux) and IPv4 conflict probing (``acd``, several seconds) are
        over, so every address that passed can be used as a source. Addresses that
        failed stay listed as failed; TimeoutError if probing outlasts ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            with self.locked():
                pending = [a for i in self.interfaces.values()
                           for a in i.v6 if a.state == "tentative"]
                pending += [a for i in self.interfaces.values()
                            for a in i.acd4.values() if a.state == "tentative"]
            if not pending:
                return
            if time.monotonic() >= deadline:
                raise TimeoutError(f"addresses of stack {self.name} still tentative "
                                   f"after {timeout} s")
            time.sleep(0.02)

    def wait_configured(self, timeout: float = 30.0) -> bool:
        """Wait until every agent that configures this stack has done so (a DHCP lease
        bound, routers and SLAAC addresses known, or router discovery gave up): what a
        program started on a ``dhcp``/``slaac`` stack needs before it connects. True if
        they all have, False at ``timeout``."""
        deadline = time.monotonic() + timeout
        pause = threading.Event()
        while True:
            with self.locked():
                if all(a.configured(self) for a in self.agents):
                    return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            pause.wait(min(0.05, left))

    def ping(self, dst: str, count: int = 1, timeout: float = 2.0, size: int = 56) -> list[float]:
        """Send ``count`` echo requests to ``dst``; return the round-trip times (seconds)
        of the replies that came back within ``timeout`` each. Blocks the caller while
        the stack's runner runs the ping (``start_ping``, an ``EchoSession``).

        Raises OSError(EHOSTUNREACH) when nobody answered the address resolution for
        ``dst`` (about 3 s of ARP or NS) before any reply came: it stops there."""
        finished = threading.Event()
        with self.locked():
            session = self.start_ping(dst, count, timeout, size,
                                      on_done=lambda _: finished.set())
        # the runner ends it within count * timeout; a stack nobody drives (runner=False)
        # would never: stop waiting a little after that
        if not finished.wait(count * timeout + 1.0):
            with self.locked():
                session.cancel()
        if session.error is not None and not session.rtts:
            raise OSError(session.error, f"{dst}: {os.strerror(session.error)}")
        return list(session.rtts)

    def ip(self, command: str | Sequence[str], *, text: bool = False) -> Any:
        """iproute2's ``ip`` on this stack: ``stack.ip("-6 route")``; see ``threadnet.ip``."""
        return ip(self, command, text=text)

    def close(self) -> None:
        """Stop the stack and close its links. Its publications go first; its connections
        are reset, and the sockets on it see that at once (a blocked recv or accept fails
        instead of hanging)."""
        pubs, self._publications = self._publications or [], None
        for pub in pubs:
            pub.close()
        super().close()

    # -- names: stack/resolver.py, with the socket module's semantics ---------------------
    def getaddrinfo(self, host: Any, port: Any, family: int = 0, type: int = 0,
                    proto: int = 0, flags: int = 0) -> list[tuple]:
        """``socket.getaddrinfo``, resolved on this stack (never by the host)."""
        return self.resolver.getaddrinfo(host, port, family, type, proto, flags)

    def gethostbyname(self, hostname: Any) -> str:
        return self.resolver.gethostbyname(hostname)

    def gethostbyname_ex(self, hostname: Any) -> tuple[str, list[str], list[str]]:
        return self.resolver.gethostbyname_ex(hostname)

    def gethostbyaddr(self, ip_address: Any) -> tuple[str, list[str], list[str]]:
        return self.resolver.gethostbyaddr(ip_address)

    def getnameinfo(self, sockaddr: Any, flags: int) -> tuple[str, str]:
        return self.resolver.getnameinfo(sockaddr, flags)

    def getfqdn(self, name: str = "") -> str:
        return self.resolver.getfqdn(name)


def ip(stack: core.Stack | RemoteStack | str | os.PathLike[str], command: str | Sequence[str],
       *, text: bool = False) -> Any:
    """iproute2's ``ip`` on a stack: this process's (a Stack), or one published at a path
    (a path or a RemoteStack). ``command`` is what follows ``ip``, as a string or its
    words: ``"addr show dev eth0"``, ``"-6 route"``, ``"route add default via
    10.0.0.1"``. Returns a show's data as ``ip -j`` prints it (a list of dicts, iproute2's
    keys) and [] for a change; with ``text``, what ``ip`` prints instead (its text, or
    JSON when the command has ``-j``). Fails with
    ``threadnet.stack.ipcommand.IpError``, which has iproute2's message and exit status.

        >>> threadnet.ip(stack, "-4 addr")[1]["addr_info"][0]["local"]
        '10.0.0.5'
    """
    from threadnet.stack import ipcommand

    words = shlex.split(command) if isinstance(command, str) else list(command)
    cmd = ipcommand.parse(words)
    if isinstance(stack, core.Stack):
        with stack.locked():
            data = ipcommand.execute(stack, cmd, stack._api_now(None))
    else:
        remote = stack if isinstance(stack, RemoteStack) else RemoteStack(stack)
        data = remote.ip(words)
    return ipcommand.output(cmd, data) if text else data
