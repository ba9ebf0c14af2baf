"""A default stack per thread and per process (libioth's ``ioth_set_defstack``, msocket's default).

Once the hook is installed, the stdlib ``socket`` module asks this module which stack
the calling thread uses: ``socket.socket()``, ``create_connection``, ``create_server``,
``getaddrinfo``, ``gethostname``, ``gethostbyname``, ``gethostbyaddr``, ``getnameinfo``
and everything built on them (``http.client``, ``urllib``, ``socketserver``, ``asyncio``,
``ssl``) then run on that stack. Threads without a default keep the kernel's stack.

    with threadnet.use(stack):          # this thread, for the block
        urllib.request.urlopen("http://10.0.0.1/")

    threadnet.set_default_stack(stack, scope="process")   # every thread without its own

Importing threadnet patches nothing. ``use`` and ``set_default_stack`` install the hook
(idempotently) because they are explicit requests to move sockets; ``install_hook()``
does it alone and ``uninstall_hook()`` puts the stdlib's functions back.

The lookup order is: the thread's setting (which may say "the kernel"), then the
process's, then the kernel. A stack may be a ``Stack``, a ``RemoteStack`` or the path
of a published stack.
"""

from __future__ import annotations

import contextlib
import functools
import os
import socket as _socket
import threading
from collections.abc import Iterator
from typing import Any

_KERNEL = object()  # a thread's explicit "use the kernel"
_tls = threading.local()
_process_default: Any = None
_lock = threading.RLock()
_saved: dict[str, Any] = {}
_remote_cache: dict[str, Any] = {}

_ORIG_SOCKET = _socket.socket
_NAMES = ("getaddrinfo", "gethostname", "gethostbyname", "gethostbyname_ex", "gethostbyaddr",
          "getnameinfo")


def _resolve(stack: Any) -> Any:
    """A Stack or RemoteStack for ``stack`` (a path names a published stack)."""
    if stack is None or hasattr(stack, "socket"):
        return stack
    if isinstance(stack, str | os.PathLike):
        from threadnet.stack.remote import RemoteStack

        path = os.fspath(stack)
        with _lock:
            remote = _remote_cache.get(path)
            if remote is None:
                remote = _remote_cache[path] = RemoteStack(path)
        return remote
    raise TypeError(f"a default stack must be a Stack, a RemoteStack or a path, not {stack!r}")


def get_default_stack() -> Any:
    """The stack this thread's sockets use now, or None for the kernel's."""
    mine = getattr(_tls, "stack", None)
    if mine is _KERNEL:
        return None
    return mine if mine is not None else _process_default


def set_default_stack(stack: Any, scope: str = "thread") -> None:
    """Make ``stack`` the default of this thread (``scope="thread"``) or of the process.

    ``None`` removes the setting: a thread then follows the process default, and the
    process default reverts to the kernel."""
    if scope not in ("thread", "process"):
        raise ValueError(f"scope must be 'thread' or 'process', not {scope!r}")
    stack = _resolve(stack)
    install_hook()
    global _process_default
    if scope == "thread":
        _tls.stack = stack
    else:
        _process_default = stack


@contextlib.contextmanager
def use(stack: Any) -> Iterator[Any]:
    """Run this thread's sockets on ``stack`` inside the block (``None``: on the kernel)."""
    stack = _resolve(stack)
    install_hook()
    before = getattr(_tls, "stack", None)
    _tls.stack = _KERNEL if stack is None else stack
    try:
        yield stack
    finally:
        _tls.stack = before


def msocket(stack: Any, family: int = _socket.AF_INET, type: int = _socket.SOCK_STREAM,
            proto: int = 0) -> _socket.socket:
    """A socket on ``stack`` (libioth's ``ioth_msocket``, msocket(2)).

    ``stack`` is a Stack, a RemoteStack, the path of a published stack, or None for
    the calling thread's default (the kernel's stack when there is none). As in
    msocket(2), ``type=0`` (SOCK_DEFAULT) opens nothing: it makes ``stack`` the process's
    default stack and returns None."""
    if type == 0:
        set_default_stack(stack, scope="process")
        return None  # type: ignore[return-value]
    target = get_default_stack() if stack is None else _resolve(stack)
    if target is None:
        return _ORIG_SOCKET(family, type, proto)
    return target.socket(family, type, proto)


# -- the patched socket module --------------------------------------------------------------
class _SocketMeta(type(_ORIG_SOCKET)):  # type: ignore[misc]
    """``isinstance(x, socket.socket)`` stays true for every real socket object."""

    def __instancecheck__(cls, obj: object) -> bool:
        return isinstance(obj, _ORIG_SOCKET)

    def __subclasscheck__(cls, sub: type) -> bool:
        return issubclass(sub, _ORIG_SOCKET)


_AF_PACKET = getattr(_socket, "AF_PACKET", 17)


class socket(_ORIG_SOCKET, metaclass=_SocketMeta):  # noqa: N801 - it replaces socket.socket
    """Stands in for ``socket.socket`` while the hook is installed.

    ``socket(AF_INET|AF_INET6|AF_PACKET, ...)`` with no ``fileno`` gives a socket on the calling
    thread's default stack; everything else is the kernel's socket."""

    __slots__ = ()

    def __new__(cls, family: int = -1, type: int = -1, proto: int = -1,
                fileno: int | None = None) -> Any:
        if cls is socket and fileno is None:
            stack = get_default_stack()
            fam = _socket.AF_INET if family == -1 else family
            if stack is not None and fam in (_socket.AF_INET, _socket.AF_INET6, _AF_PACKET):
                return stack.socket(fam, _socket.SOCK_STREAM if type == -1 else type,
                                    0 if proto == -1 else proto)
            return _ORIG_SOCKET(family, type, proto, fileno)
        return super().__new__(cls, family, type, proto, fileno)


def _dispatch(name: str) -> Any:
    original = getattr(_socket, name)

    @functools.wraps(original)
    def call(*args: Any, **kwargs: Any) -> Any:
        stack = get_default_stack()
        if stack is None:
            return original(*args, **kwargs)
        return getattr(stack, name)(*args, **kwargs)

    call.__threadnet_original__ = original  # type: ignore[attr-defined]
    return call


def _asyncio_patches() -> dict[tuple[Any, str], Any]:
    """asyncio resolves names in an executor thread: carry the caller's stack there."""
    import asyncio.base_events as be

    cls = be.BaseEventLoop
    orig_gai, orig_gni = cls.getaddrinfo, cls.getnameinfo

    async def getaddrinfo(self: Any, host: Any, port: Any, *, family: int = 0, type: int = 0,
                          proto: int = 0, flags: int = 0) -> Any:
        stack = get_default_stack()
        if stack is None:
            return await orig_gai(self, host, port, family=family, type=type, proto=proto,
                                  flags=flags)
        return await self.run_in_executor(None, functools.partial(
            stack.getaddrinfo, host, port, family, type, proto, flags))

    async def getnameinfo(self: Any, sockaddr: Any, flags: int = 0) -> Any:
        stack = get_default_stack()
        if stack is None:
            return await orig_gni(self, sockaddr, flags)
        return await self.run_in_executor(None, stack.getnameinfo, sockaddr, flags)

    return {(cls, "getaddrinfo"): getaddrinfo, (cls, "getnameinfo"): getnameinfo}


def install_hook() -> None:
    """Route the stdlib socket module through the default stacks (idempotent)."""
    with _lock:
        if _saved:
            return
        _saved["socket"] = _socket.socket
        _socket.socket = socket  # type: ignore[misc]
        for name in _NAMES:
            _saved[name] = getattr(_socket, name)
            setattr(_socket, name, _dispatch(name))
        for (owner, attr), fn in _asyncio_patches().items():
            _saved[f"asyncio:{attr}"] = (owner, attr, owner.__dict__[attr])
            setattr(owner, attr, fn)


def uninstall_hook() -> None:
    """Put the stdlib's socket functions back; defaults stay recorded but unused."""
    with _lock:
        for key, value in _saved.items():
            if key.startswith("asyncio:"):
                owner, attr, fn = value
                setattr(owner, attr, fn)
            else:
                setattr(_socket, key, value)
        _saved.clear()


def hook_installed() -> bool:
    return bool(_saved)
