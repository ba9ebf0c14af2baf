"""iothpy's API on threadnet: run a program written for iothpy by changing one import.

    import threadnet.compat.iothpy as iothpy

    stack = iothpy.Stack("vdestack", "vde:///tmp/sw")
    ifindex = stack.if_nametoindex("vde0")
    stack.linksetupdown(ifindex, 1)
    stack.ipaddr_add(iothpy.AF_INET, "10.0.0.1", 24, ifindex)
    stack.iproute_add(iothpy.AF_INET, "10.0.0.254")
    sock = stack.socket(iothpy.AF_INET, iothpy.SOCK_STREAM)    # a real socket.socket

iothpy (PyPI ``iothpy`` 1.3.x) binds libioth, iothconf and iothdns. This module gives the
same names, signatures, defaults and return values on threadnet stacks:

* ``Stack(stack, vdeurl=None, config_dns=None)``. ``stack`` names a libioth plugin:
  ``vdestack``, ``picox``, ``picoxnet``, ``lwipv6`` (or ``threadnet``) all make a
  ``threadnet.Stack``; ``kernel`` is the host's own stack, as libioth's kernel plugin is.
  ``vdeurl`` (a str, bytes or a list of them) gives one interface per URL, named ``vde0``,
  ``vde1``... as vdestack names them; any threadnet link URL works. With ``vdeurl=None``,
  ``stack`` is an iothconf ``ioth_newstackc`` string such as
  ``"stack=vdestack,vnl=vde:///tmp/sw,eth,ip=10.0.0.1/24,gw=10.0.0.254"``, or a bare stack
  name (a stack with no interface). ``config_dns`` is a resolv.conf path (it contains a
  ``/``) or resolv.conf text; None means ``/etc/resolv.conf``, as in iothdns.
* The netlink-style calls (``linksetupdown``, ``ipaddr_add``, ``iproute_add``...), the
  iothconf calls (``ioth_config``, ``ioth_resolvconf``), the resolver calls (``getaddrinfo``,
  ``getnameinfo``, ``iothdns_update``) and ``socket``.
* ``override_socket_module(stack)``: the stdlib ``socket`` module makes its sockets on
  ``stack``. Here that is ``threadnet.set_default_stack(..., scope="process")``, so it also
  covers ``getaddrinfo`` and friends, and threads with their own ``threadnet.use()`` keep it.
* The module's constants and helpers are the stdlib ``socket`` module's.

Where threadnet differs, on purpose:

* Failures are ``OSError`` with the errno a kernel's netlink would give (ENODEV for an
  unknown interface, EEXIST, EADDRNOTAVAIL, ESRCH, EINVAL...), where iothpy raises a bare
  ``Exception`` with a message; ``except Exception`` still catches them. Argument errors are
  ``ValueError``/``TypeError`` as in iothpy.
* ``if_nameindex()`` and ``if_indextoname()`` work (iothpy raises NotImplementedError).
* ``iplink_add(ifindex, "vde", url, ifname)`` adds an interface on a link URL; iothpy's
  vdestack refuses it. ``iplink_del`` removes one.
* ``ioth_config`` follows iothconf: ``ip=`` without a prefix gets /24 (IPv4) or /64 (IPv6),
  static settings replace the previous static set of that interface, ``eth`` with ``fqdn=``
  and no ``mac=`` takes iothconf's MD5-based MAC. A ``gw=ADDR/N`` (as in iothpy's
  newstackc example) is taken as ``ADDR``; real iothconf drops it silently. ``mtu=`` is a
  threadnet addition. ``dhcp``, ``dhcp6``, ``rd`` and ``slaac`` start threadnet's agents
  (``stack/autoconf.py``); a method threadnet has no agent for raises NotImplementedError.
* Name resolution (``getaddrinfo``, ``getnameinfo``, ``iothdns_update``, ``config_dns``) uses
  the threadnet stack's own resolver (``threadnet.Stack.resolver``), never the host's.
* ``Stack.socket(fileno=...)`` raises NotImplementedError: a threadnet socket's state lives
  in its Python object, so a bare descriptor cannot be adopted.
* ``getdefaulttimeout``/``setdefaulttimeout`` are the stdlib's (iothpy keeps its own copy):
  one default timeout for kernel and threadnet sockets alike.
* ``Stack.close()`` (also ``with Stack(...) as s:``) stops the threadnet stack; iothpy never
  frees a stack. ``override_socket_module(None)`` puts the kernel back.
* The ``IFLA_*`` constants of iothpy's ``_const_linkadd`` are not provided.
"""

from __future__ import annotations

import errno
import hashlib
import ipaddress
import itertools
import operator
import os
import socket as _socket
import sys
import threading
from dataclasses import dataclass, field
from typing import Any

from threadnet.errors import URLError
from threadnet.hook import _NAMES as _HOOKED_NAMES
from threadnet.hook import _ORIG_SOCKET, set_default_stack
from threadnet.link import Link, open_link
from threadnet.stack import autoconf
from threadnet.stack.api import Stack as _ThreadnetStack
from threadnet.stack.config import Config, ConfigError, parse_config, parse_mac
from threadnet.stack.socket import StackSocket
from threadnet.stack.stack import Interface, check_mtu
from threadnet.wire.ethernet import mac_from_str, mac_to_str

# -- the module-level names iothpy re-exports from the stdlib socket module -----------------
AddressFamily = _socket.AddressFamily
SocketKind = _socket.SocketKind
error = _socket.error
herror = _socket.herror
gaierror = _socket.gaierror
timeout = _socket.timeout  # TimeoutError: what threadnet sockets raise on a timeout
getdefaulttimeout = _socket.getdefaulttimeout
setdefaulttimeout = _socket.setdefaulttimeout
close = _socket.close  # close an integer descriptor (iothpy's ioth_close)
CMSG_LEN = _socket.CMSG_LEN
CMSG_SPACE = _socket.CMSG_SPACE
inet_aton, inet_ntoa = _socket.inet_aton, _socket.inet_ntoa
inet_pton, inet_ntop = _socket.inet_pton, _socket.inet_ntop
ntohl, ntohs, htonl, htons = _socket.ntohl, _socket.ntohs, _socket.htonl, _socket.htons
getfqdn = _socket.getfqdn
getprotobyname = _socket.getprotobyname
getservbyname, getservbyport = _socket.getservbyname, _socket.getservbyport
sethostname = _socket.sethostname


def _kernel_function(name: str) -> Any:
    """The stdlib's own function (iothpy's module-level resolvers are the kernel's), even
    while threadnet's socket hook has replaced it with a per-thread dispatcher."""
    fn = getattr(_socket, name)
    return getattr(fn, "__threadnet_original__", fn)


getaddrinfo = _kernel_function("getaddrinfo")
getnameinfo = _kernel_function("getnameinfo")
gethostname = _kernel_function("gethostname")
gethostbyname = _kernel_function("gethostbyname")
gethostbyname_ex = _kernel_function("gethostbyname_ex")
gethostbyaddr = _kernel_function("gethostbyaddr")
assert set(_HOOKED_NAMES) <= set(globals())  # every hooked resolver is covered above

# every integer constant of the socket module: AF_*, SOCK_*, SOL_*, SO_*, IPPROTO_*, MSG_*...
_CONSTANTS = [n for n in dir(_socket)
              if n.isupper() and not n.startswith("_") and isinstance(getattr(_socket, n), int)]
globals().update({n: getattr(_socket, n) for n in _CONSTANTS})
AF_INET = _socket.AF_INET
AF_INET6 = _socket.AF_INET6
SOCK_STREAM = _socket.SOCK_STREAM
SOCK_DGRAM = _socket.SOCK_DGRAM

#: libioth plugin names that become a threadnet.Stack (user-space stacks)
USER_STACKS = frozenset({"vdestack", "picox", "picoxnet", "lwipv6", "threadnet"})
#: libioth's kernel plugin: the host's own network stack
KERNEL = "kernel"
DEFAULT_INTERFACE = "vde0"  # iothconf's default iface=
_stack_ids = itertools.count(1)


def _fail(code: int, message: str) -> OSError:
    return OSError(code, f"{os.strerror(code)}: {message}")


def _check_mtu(ts: _ThreadnetStack, iface: Interface, mtu: int) -> None:
    """The stack's own rule (``check_mtu``: 68..65535 and no more than the link carries,
    when it knows), as OSError(EINVAL)."""
    try:
        check_mtu(ts.links.get(iface.index), mtu, iface.name)
    except ValueError as exc:
        raise _fail(errno.EINVAL, str(exc)) from None


# -- iothconf configuration strings: threadnet.stack.config's parser, lenient as iothconf --
def parse_ioth_config(text: str, *, newstackc: bool = False) -> Config:
    """Parse an iothconf string with iothconf's value rules (``ip=`` without a prefix is
    /24 or /64, see ``threadnet.stack.config``). Unknown items are OSError(EINVAL), as in
    iothconf; malformed values are too (iothconf would skip them silently). With
    ``newstackc``, ``stack=``, ``vnl=`` and a bare stack name are allowed too."""
    try:
        return parse_config(text, lenient=True,
                            stacks=USER_STACKS | {KERNEL} if newstackc else None)
    except ConfigError as exc:
        raise _fail(errno.EINVAL, str(exc)) from None


def hash_mac(fqdn: str) -> bytes:
    """iothconf's MAC for a name: octets 0-2 and 5-7 of MD5(name), locally administered
    unicast (so a node named by its fqdn gets the same MAC on every run)."""
    digest = hashlib.md5(fqdn.removesuffix(".").encode()).digest()
    mac = bytearray(digest[0:3] + digest[5:8])
    mac[0] = (mac[0] | 0x02) & ~0x01
    return bytes(mac)


def _parse_mac(addr: Any) -> bytes:
    if isinstance(addr, str):
        return parse_mac(addr)
    if not isinstance(addr, bytes | bytearray | memoryview):
        raise TypeError(f"a MAC address is a str or bytes, not {type(addr).__name__}")
    if len(addr) != 6:
        raise ValueError("MAC address must be of 6 bytes")
    return bytes(addr)


@dataclass
class _Static:
    """What the last static ``ioth_config`` of an interface put there (iothconf replaces
    it as a whole on the next static configuration)."""

    addresses: list[ipaddress.IPv4Interface | ipaddress.IPv6Interface] = field(default_factory=list)
    gateways: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = field(default_factory=list)
    dns: list[str] = field(default_factory=list)
    domains: list[str] = field(default_factory=list)


# -- sockets ---------------------------------------------------------------------------------
class MSocket(StackSocket):
    """iothpy's MSocket: a socket on a Stack, with the stdlib ``socket.socket`` API (it is
    one) plus ``stack``, the Stack it belongs to."""

    def __init__(self, stack: Stack, family: int = -1, type: int = -1, proto: int = -1,
                 fileno: int | None = None) -> None:
        if not isinstance(stack, Stack):
            raise TypeError("stack must be of type Stack")
        if fileno is not None:
            raise NotImplementedError(
                "threadnet.compat.iothpy: a socket cannot be rebuilt from a bare descriptor "
                "(its state lives in the socket object); keep and pass the socket itself")
        tstack = stack.threadnet_stack
        if tstack is None:  # pragma: no cover - Stack.socket handles the kernel itself
            raise TypeError("the kernel stack makes kernel sockets")
        super().__init__(tstack, _socket.AF_INET if family == -1 else family,
                         _socket.SOCK_STREAM if type == -1 else type, 0 if proto == -1 else proto)
        self._iothpy_stack = stack

    @property
    def stack(self) -> Stack:
        """The Stack this socket belongs to (iothpy's ``MSocket.stack``)."""
        return self._iothpy_stack

    def _accepted(self) -> StackSocket | None:
        sock = super()._accepted()
        if sock is not None:
            # the same object layout: accepted connections are MSockets of this stack too
            sock.__class__ = type(self)
            sock._iothpy_stack = self._iothpy_stack  # type: ignore[attr-defined]
        return sock

    def dup(self) -> Any:  # type: ignore[override]
        raise NotImplementedError(
            "threadnet.compat.iothpy: dup() would copy only the descriptor, not the socket's "
            "state on the stack; share the socket object instead")


class _KernelSocket(_ORIG_SOCKET):  # type: ignore[misc, valid-type]
    """A kernel socket from the ``kernel`` stack (it knows its Stack, as an MSocket does)."""

    stack: Stack | None = None


# -- the Stack --------------------------------------------------------------------------------
class Stack:
    """An Internet of Threads stack with iothpy's API (``iothpy.Stack``).

    ``Stack("vdestack", "vde:///tmp/sw")`` (one interface, ``vde0``),
    ``Stack("vdestack", [url0, url1])`` (``vde0``, ``vde1``),
    ``Stack("stack=vdestack,vnl=vde:///tmp/sw,eth,ip=10.0.0.1/24,gw=10.0.0.254")``
    (iothconf's newstackc), ``Stack("kernel")`` (the host's stack).
    """

    def __init__(self, stack: str, vdeurl: str | bytes | list[str | bytes] | None = None,
                 config_dns: str | None = None) -> None:
        if not isinstance(stack, str):
            raise TypeError(f"stack must be a str, not {type(stack).__name__}")
        self._lock = threading.RLock()
        self._static: dict[int, _Static] = {}
        self._dns_version: dict[int, int] = {}
        self._dns_seen: dict[int, int] = {}
        self._closed = False
        cfg: Config | None = None
        if vdeurl is None:
            cfg = parse_ioth_config(stack, newstackc=True)
            kind = (cfg.stack or "vdestack").lower()
            urls = [cfg.vnl] if cfg.vnl else []
        else:
            kind = stack.strip().lower()
            if "," in kind:
                raise ValueError(f"stack options are not supported: {stack!r}")
            urls = _urls(vdeurl)
        if kind != KERNEL and kind not in USER_STACKS:
            raise _fail(errno.ENOENT, f"no ioth stack implementation {kind!r} (threadnet.compat."
                        f"iothpy knows {', '.join(sorted(USER_STACKS | {KERNEL}))})")
        self.stack_type = kind
        self._tstack: _ThreadnetStack | None = None
        if kind == KERNEL:
            # libioth's kernel plugin ignores the VNL: the host's interfaces are what it has
            if cfg is not None and cfg.items:
                raise NotImplementedError("the 'kernel' stack is the host's own network: "
                                          "configure it with ip(8), not ioth_config")
        else:
            self._tstack = _ThreadnetStack(name=f"iothpy{next(_stack_ids)}-{kind}")
            try:
                for url in urls:
                    self._add_link(url, None)
                if cfg is not None and cfg.items:
                    self._apply_config(cfg)
            except BaseException:
                self._tstack.close()
                raise
        try:
            if config_dns is not None:
                self._set_dns(config_dns)
            elif self._resolver("resolv_conf") and \
                    os.path.exists("/etc/resolv.conf"):
                try:  # iothdns's default; a host file the resolver cannot use is no error
                    self._set_dns("/etc/resolv.conf")
                except (OSError, ValueError):
                    pass
        except BaseException:
            self.close()
            raise

    # -- helpers ---------------------------------------------------------------------------
    @property
    def threadnet_stack(self) -> _ThreadnetStack | None:
        """The ``threadnet.Stack`` underneath (None for the kernel stack)."""
        return self._tstack

    def _net(self, what: str) -> _ThreadnetStack:
        """The threadnet stack, for a call that changes the configuration."""
        if self._tstack is None:
            raise NotImplementedError(f"{what}: the 'kernel' stack is the host's own network; "
                                      "configure it with ip(8)")
        if self._closed:
            raise _fail(errno.EBADF, "the stack is closed")
        return self._tstack

    def _iface(self, ts: _ThreadnetStack, ifindex: Any) -> Interface:
        index = operator.index(ifindex)
        iface = ts.interfaces.get(index)
        if iface is None:
            raise _fail(errno.ENODEV, f"no interface with index {index}")
        return iface

    def _by_name(self, ts: _ThreadnetStack, name: str) -> Interface | None:
        return next((i for i in ts.interfaces.values() if i.name == name), None)

    def _add_link(self, url: str, ifname: str | None, index: int = 0) -> Interface:
        """A new interface on the link ``url``, named ``ifname`` (default: the next free
        ``vdeN``, as vdestack names them), numbered ``index`` if positive."""
        ts = self._net("iplink_add")
        try:
            link = open_link(url, description=f"threadnet iothpy {ts.name} pid={os.getpid()}")
        except URLError as exc:
            raise _fail(errno.EINVAL, str(exc)) from exc
        try:
            with ts.locked():
                if index > 0 and index in ts.interfaces:
                    raise _fail(errno.EEXIST, f"interface index {index} is taken")
                if ifname is None:
                    used = {i.name for i in ts.interfaces.values()}
                    ifname = next(f"vde{n}" for n in itertools.count() if f"vde{n}" not in used)
                elif self._by_name(ts, ifname) is not None:
                    raise _fail(errno.EEXIST, f"interface {ifname!r} exists")
                iface = ts.add_interface(link, name=ifname)
                if index > 0 and iface.index != index:
                    del ts.interfaces[iface.index]
                    ts.links[index] = ts.links.pop(iface.index)
                    iface.index = index
                    ts.interfaces[index] = iface
                return iface
        except BaseException:
            if not any(opened is link for opened in ts.links.values()):
                link.close()
            raise

    def _resolver(self, name: str) -> Any:
        """The threadnet stack's resolver method ``name`` (or the kernel's; the kernel has
        no ``resolv_conf``: None)."""
        if self._tstack is None:
            return None if name == "resolv_conf" else _kernel_function(name)
        return getattr(self._tstack, name)

    # -- interfaces --------------------------------------------------------------------------
    def if_nametoindex(self, if_name: str | bytes) -> int:
        """The index of the interface named ``if_name`` (OSError ENODEV if there is none)."""
        name = os.fsdecode(if_name)
        if self._tstack is None:
            return _socket.if_nametoindex(name)
        iface = self._by_name(self._tstack, name)
        if iface is None:
            raise _fail(errno.ENODEV, f"no interface named {name!r}")
        return iface.index

    def if_indextoname(self, if_index: int) -> str:
        """The name of the interface ``if_index`` (OSError ENXIO if there is none, as in
        the stdlib). iothpy raises NotImplementedError here; threadnet can answer."""
        index = operator.index(if_index)
        if self._tstack is None:
            return _socket.if_indextoname(index)
        iface = self._tstack.interfaces.get(index)
        if iface is None:
            raise _fail(errno.ENXIO, f"no interface with index {index}")
        return iface.name

    def if_nameindex(self) -> list[tuple[int, str]]:
        """All interfaces as (index, name), like ``socket.if_nameindex()``. iothpy raises
        NotImplementedError here; threadnet can answer."""
        if self._tstack is None:
            return _socket.if_nameindex()
        return sorted((i.index, i.name) for i in list(self._tstack.interfaces.values()))

    def linksetupdown(self, ifindex: int, updown: Any) -> None:
        """Bring the interface up (``updown`` true) or down."""
        ts = self._net("linksetupdown")
        with ts.locked():
            iface = self._iface(ts, ifindex)
            if updown:
                ts.link_up(iface.index)
            else:
                ts.link_down(iface.index)

    def linksetaddr(self, ifindex: int, addr: str | bytes) -> None:
        """Set the MAC address: ``"80:00:42:0e:e7:3a"`` or six bytes."""
        mac = _parse_mac(addr)
        ts = self._net("linksetaddr")
        with ts.locked():
            iface = self._iface(ts, ifindex)
            if iface.loopback:
                raise _fail(errno.EOPNOTSUPP, "the loopback interface has no MAC address")
            if mac[0] & 1:
                raise _fail(errno.EADDRNOTAVAIL, f"{mac_to_str(mac)} is a multicast address")
            ts.set_mac(iface.index, mac)

    def linkgetaddr(self, ifindex: int) -> bytes:
        """The interface's MAC address (6 bytes)."""
        if self._tstack is None:
            name = _socket.if_indextoname(operator.index(ifindex))
            with open(f"/sys/class/net/{name}/address") as f:
                return mac_from_str(f.read().strip())
        with self._tstack.locked():
            return bytes(self._iface(self._tstack, ifindex).mac)

    def linksetmtu(self, ifindex: int, mtu: int) -> None:
        """Set the interface's MTU: 68 up to what its link carries (``Link.max_mtu``) or,
        when the link does not know (a tap), up to 65535, as the stack allows; EINVAL
        otherwise."""
        mtu = operator.index(mtu)
        ts = self._net("linksetmtu")
        with ts.locked():
            iface = self._iface(ts, ifindex)
            _check_mtu(ts, iface, mtu)
            ts.set_mtu(iface.index, mtu)

    def iplink_add(self, ifindex: int, type: str, data: Any = None,
                   ifname: str | None = None) -> int:
        """Add a link: ``type`` ``"vde"`` with ``data`` a VNL (any threadnet link URL), named
        ``ifname`` (default the next free ``vdeN``), with index ``ifindex`` when positive
        (-1 or 0: the next free one). Returns the new interface's index."""
        index = operator.index(ifindex)
        if not isinstance(type, str):
            raise TypeError("type must be a str")
        if type.lower() != "vde":
            raise _fail(errno.EOPNOTSUPP, f"link type {type!r}: threadnet stacks add 'vde' "
                        "links (data = a VNL URL; any threadnet link URL works)")
        url = _vnl_from_data(data)
        with self._lock:
            return self._add_link(url, ifname, index).index

    def iplink_add_vde(self, ifindex: int, vnl: str, ifname: str | None = None) -> int:
        """``iplink_add(ifindex, "vde", vnl, ifname)`` (iothpy's shortcut)."""
        return self.iplink_add(ifindex, "vde", vnl, ifname)

    def iplink_del(self, ifname: str | None = None, ifindex: int = 0) -> int:
        """Remove a link, named by ``ifname`` or ``ifindex`` (or both, which must agree)."""
        index = operator.index(ifindex)
        if not ifname and not index:
            raise _fail(errno.EINVAL, "iplink_del needs ifname or ifindex")
        ts = self._net("iplink_del")
        with self._lock, ts.locked():
            iface = self._by_name(ts, ifname) if ifname else self._iface(ts, index)
            if iface is None:
                raise _fail(errno.ENODEV, f"no interface named {ifname!r}")
            if index and iface.index != index:
                raise _fail(errno.EINVAL, f"{ifname!r} is not interface {index}")
            if iface.loopback:
                raise _fail(errno.EOPNOTSUPP, "the loopback interface cannot be removed")
            del ts.interfaces[iface.index]
            link = ts.links.pop(iface.index, None)
            iface.up = False
            ts.routes4.flush_interface(iface.index)
            ts.routes6.flush_interface(iface.index)
            self._static.pop(iface.index, None)
        if link is not None:
            _close_link(ts, link)
        return 0

    # -- addresses and routes ------------------------------------------------------------------
    def ipaddr_add(self, family: int, addr: str, prefix_len: int, if_index: int) -> None:
        """Add ``addr/prefix_len`` to interface ``if_index`` (AF_INET or AF_INET6)."""
        net = _interface(family, addr, prefix_len)
        ts = self._net("ipaddr_add")
        with ts.locked():
            iface = self._iface(ts, if_index)
            try:
                ts.addr_add(iface.index, str(net))
            except FileExistsError as exc:
                raise _fail(errno.EEXIST, str(exc)) from None

    def ipaddr_del(self, family: int, addr: str, prefix_len: int, if_index: int) -> None:
        """Remove ``addr/prefix_len`` from interface ``if_index`` (EADDRNOTAVAIL if absent)."""
        net = _interface(family, addr, prefix_len)
        ts = self._net("ipaddr_del")
        with ts.locked():
            iface = self._iface(ts, if_index)
            ts.addr_del(iface.index, str(net))

    def iproute_add(self, family: int, gw_addr: str | None, dst_addr: str | None = None,
                    dst_prefix: int = 0, ifindex: int = 0) -> None:
        """Add a route to ``dst_addr/dst_prefix`` (default route if ``dst_addr`` is None)
        through ``gw_addr``; ``ifindex`` pins the interface (needed for a link-local
        gateway). ``gw_addr=None`` with an ``ifindex`` is an on-link route."""
        dst, gw = _route_args(family, gw_addr, dst_addr, dst_prefix, ifindex)
        ts = self._net("iproute_add")
        with ts.locked():
            dev = self._iface(ts, ifindex).index if ifindex else None
            try:
                ts.route_add(str(dst), str(gw) if gw is not None else None, dev=dev)
            except FileExistsError as exc:
                raise _fail(errno.EEXIST, str(exc)) from None

    def iproute_del(self, family: int, gw_addr: str | None, dst_addr: str | None = None,
                    dst_prefix: int = 0, ifindex: int = 0) -> None:
        """Remove the route that ``iproute_add`` with the same arguments added (ESRCH if
        there is none)."""
        dst, gw = _route_args(family, gw_addr, dst_addr, dst_prefix, ifindex)
        ts = self._net("iproute_del")
        with ts.locked():
            dev = self._iface(ts, ifindex).index if ifindex else None
            table = ts.routes4 if dst.version == 4 else ts.routes6
            try:
                table.delete(dst, gateway=gw, ifindex=dev)
            except LookupError:
                raise _fail(errno.ESRCH, f"no route to {dst} via {gw}") from None

    # -- iothconf ----------------------------------------------------------------------------------
    def ioth_config(self, config: str) -> None:
        """Configure with an iothconf string: ``"eth,ip=10.0.0.1/24,gw=10.0.0.254"``,
        ``iface=``/``ifindex=`` (default ``vde0``), ``mac=``, ``fqdn=``, ``dns=``,
        ``domain=``, ``-static``, ``-eth``... (see the module's notes)."""
        cfg = parse_ioth_config(config)
        if cfg.items == 0:
            raise _fail(errno.EINVAL, "empty configuration")
        self._apply_config(cfg)

    def _config_iface(self, ts: _ThreadnetStack, cfg: Config) -> Interface:
        if cfg.ifindex:
            return self._iface(ts, cfg.ifindex)
        name = cfg.iface or DEFAULT_INTERFACE
        iface = self._by_name(ts, name)
        if iface is None:
            raise _fail(errno.ENODEV, f"no interface {name!r} to configure (iothconf's "
                        "default is vde0; name one with iface= or ifindex=)")
        return iface

    def _apply_config(self, cfg: Config) -> None:
        ts = self._net("ioth_config")
        autoconf.check(cfg)
        with self._lock, ts.locked():
            iface = self._config_iface(ts, cfg)
            if "static" in cfg.clean:
                self._replace_static(ts, iface, _Static())
            if "eth" in cfg.clean:
                ts.link_down(iface.index)
            if cfg.mtu is not None:
                _check_mtu(ts, iface, cfg.mtu)
                ts.set_mtu(iface.index, cfg.mtu)
            if cfg.eth:
                mac = cfg.mac or (hash_mac(cfg.fqdn) if cfg.fqdn else None)
                if mac is not None and not iface.loopback:
                    ts.set_mac(iface.index, mac)
                ts.link_up(iface.index)
            if cfg.static:
                self._replace_static(ts, iface, _Static(cfg.addresses, cfg.gateways, cfg.dns,
                                                        cfg.domains))
            autoconf.apply(ts, iface, cfg, ts._api_now(None))
            if cfg.debug:
                print("\n".join(ts.describe()), file=sys.stderr)

    def _replace_static(self, ts: _ThreadnetStack, iface: Interface, new: _Static) -> None:
        """Make the interface's static set ``new``: what the last one had and ``new`` has
        not is removed, what is new is added (iothconf's timestamped update)."""
        old = self._static.get(iface.index, _Static())
        self._static[iface.index] = _Static([], [], new.dns, new.domains)
        done = self._static[iface.index]
        for gw in old.gateways:
            if gw not in new.gateways:
                table = ts.routes4 if gw.version == 4 else ts.routes6
                try:
                    table.delete(ipaddress.ip_network("0.0.0.0/0" if gw.version == 4 else "::/0"),
                                 gateway=gw)
                except LookupError:
                    pass  # removed by hand meanwhile
        for a in old.addresses:
            if a not in new.addresses:
                try:
                    ts.addr_del(iface.index, str(a))
                except OSError:
                    pass  # removed by hand meanwhile
        for a in sorted(new.addresses, key=lambda a: -a.version):  # iothconf: IPv6 first
            if a not in old.addresses:
                try:
                    ts.addr_add(iface.index, str(a))
                except FileExistsError:
                    pass  # already there: that is what was asked
            done.addresses.append(a)
        for gw in sorted(new.gateways, key=lambda g: -g.version):
            if gw not in old.gateways:
                try:
                    ts.route_add("::/0" if gw.version == 6 else "0.0.0.0/0", str(gw),
                                 dev=iface.index if gw.version == 6 else None)
                except FileExistsError:
                    pass
            done.gateways.append(gw)
        if (new.dns, new.domains) != (old.dns, old.domains):
            self._dns_version[iface.index] = self._dns_version.get(iface.index, 0) + 1

    def ioth_resolvconf(self, config: str | None = None) -> str | None:
        """resolv.conf text from the ``dns=`` and ``domain=`` of the interface's static
        configuration (``config``: ``iface=``/``ifindex=``, default ``vde0``), or None if
        nothing changed since the previous call (iothconf's ``ioth_resolvconf``)."""
        cfg = parse_ioth_config(config or "")
        if (cfg.eth or cfg.clean or cfg.dynamic or cfg.static or cfg.mac or cfg.fqdn
                or cfg.mtu is not None or cfg.debug):
            raise _fail(errno.EINVAL, f"ioth_resolvconf takes iface= and ifindex= only: {config!r}")
        ts = self._net("ioth_resolvconf")
        with self._lock:
            iface = self._config_iface(ts, cfg)
            version = self._dns_version.get(iface.index, 0)
            if version == self._dns_seen.get(iface.index, 0):
                return None
            self._dns_seen[iface.index] = version
            static = self._static.get(iface.index, _Static())
            lines = [f"search {' '.join(dict.fromkeys(static.domains))}"] if static.domains else []
            lines += [f"nameserver {ns}" for ns in static.dns]
            return "".join(line + "\n" for line in lines)

    # -- name resolution (iothdns) ---------------------------------------------------------------
    def _set_dns(self, config: str) -> None:
        if not isinstance(config, str):
            raise TypeError("the DNS configuration is a path or resolv.conf text (a str)")
        if self._tstack is None:
            raise NotImplementedError("the 'kernel' stack resolves names with the host's "
                                      "resolver (/etc/resolv.conf); it takes no DNS configuration")
        resolv_conf = self._resolver("resolv_conf")
        if "/" in config:  # a path, as iothdns decides
            with open(config) as f:
                config = f.read()
        resolv_conf(config)

    def iothdns_update(self, config: str) -> None:
        """Replace the resolver's configuration: a resolv.conf path or resolv.conf text."""
        self._set_dns(config)

    def getaddrinfo(self, host: Any, port: Any, family: int = 0, type: int = 0, proto: int = 0,
                    flags: int = 0) -> list[tuple[Any, Any, int, str, tuple]]:
        """``socket.getaddrinfo`` resolved through this stack (socket.gaierror on failure)."""
        fn = self._resolver("getaddrinfo")
        out = []
        for af, kind, pr, canon, sa in fn(host, port, family, type, proto, flags):
            out.append((_intenum(af, AddressFamily), _intenum(kind, SocketKind), pr, canon, sa))
        return out

    def getnameinfo(self, sockaddr: tuple, flags: int = 0) -> tuple[str, str]:
        """``socket.getnameinfo`` resolved through this stack."""
        return self._resolver("getnameinfo")(sockaddr, flags)

    # -- sockets ---------------------------------------------------------------------------------
    def socket(self, family: int = -1, type: int = -1, proto: int = -1,
               fileno: int | None = None) -> _socket.socket:
        """A socket on this stack: ``Stack.socket(family=AF_INET, type=SOCK_STREAM, proto=0)``,
        with the stdlib socket API (it is a ``socket.socket``)."""
        if self._tstack is None:
            sock = _KernelSocket(family, type, proto, fileno)
            sock.stack = self
            return sock
        if self._closed:
            raise _fail(errno.EBADF, "the stack is closed")
        return MSocket(self, family, type, proto, fileno)

    # -- life ------------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the stack and close its links (a threadnet addition: iothpy never frees
        a stack). Its sockets then see their peer vanish."""
        if self._closed:
            return
        self._closed = True
        if self._tstack is not None:
            self._tstack.close()

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        inner = "the host's network" if self._tstack is None else repr(self._tstack)
        return f"<iothpy.Stack {self.stack_type} on {inner}>"

    __str__ = __repr__


# -- functions ------------------------------------------------------------------------------------
def override_socket_module(stack: Stack | None) -> None:
    """Make the stdlib ``socket`` module create its sockets on ``stack`` (in every thread
    that has not chosen its own with ``threadnet.use``). Import the modules that use
    sockets after this call, as iothpy advises. ``None`` (a threadnet addition) puts the
    kernel back."""
    if stack is None:
        set_default_stack(None, scope="process")
        return
    if not isinstance(stack, Stack):
        raise TypeError("stack must be of type Stack")
    if stack._closed:
        raise _fail(errno.EBADF, "the stack is closed")
    set_default_stack(stack.threadnet_stack, scope="process")  # None: the kernel's


def _urls(vdeurl: Any) -> list[str]:
    if isinstance(vdeurl, str | bytes):
        return [os.fsdecode(vdeurl)]
    if isinstance(vdeurl, list | tuple) and all(isinstance(u, str | bytes) for u in vdeurl):
        return [os.fsdecode(u) for u in vdeurl]
    raise ValueError("vdeurl argument must be a string or a list of strings")


def _vnl_from_data(data: Any) -> str:
    """The VNL in iplink_add's ``data``: a str, or iothpy's (tag, value) pairs."""
    if isinstance(data, str | bytes):
        return os.fsdecode(data)
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[1], str | bytes):
        return os.fsdecode(data[1])
    if isinstance(data, list):
        values = [v for pair in data if isinstance(pair, tuple) and len(pair) == 2
                  for v in pair[1:] if isinstance(v, str | bytes)]
        if len(values) == 1:
            return os.fsdecode(values[0])
    raise ValueError("a 'vde' link needs its VNL as data (a str such as 'vde:///tmp/sw')")


def _family_version(family: int) -> int:
    if family == _socket.AF_INET:
        return 4
    if family == _socket.AF_INET6:
        return 6
    raise ValueError(f"invalid address family {family}")


def _address(version: int, text: Any, what: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    if not isinstance(text, str):
        raise TypeError(f"{what} must be a str, not {type(text).__name__}")
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"invalid {what} string {text!r}") from None
    if ip.version != version:
        raise ValueError(f"{what} {text!r} is not an IPv{version} address")
    return ip


def _interface(family: int, addr: Any, prefix_len: Any
               ) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
    version = _family_version(family)
    ip = _address(version, addr, "address")
    plen = operator.index(prefix_len)
    if not 0 <= plen <= (32 if version == 4 else 128):
        raise _fail(errno.EINVAL, f"prefix length {plen} for IPv{version}")
    return ipaddress.ip_interface(f"{ip}/{plen}")


def _route_args(family: int, gw_addr: Any, dst_addr: Any, dst_prefix: Any, ifindex: Any
                ) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network,
                           ipaddress.IPv4Address | ipaddress.IPv6Address | None]:
    version = _family_version(family)
    gw = None if gw_addr is None else _address(version, gw_addr, "gw_addr")
    if gw is None and not operator.index(ifindex):
        raise ValueError("a route needs gw_addr or an ifindex")
    plen = operator.index(dst_prefix)
    if dst_addr is None:
        if plen:
            raise ValueError("dst_prefix without dst_addr")
        return ipaddress.ip_network("0.0.0.0/0" if version == 4 else "::/0"), gw
    dst = _address(version, dst_addr, "dst_addr")
    if not 0 <= plen <= dst.max_prefixlen:
        raise _fail(errno.EINVAL, f"prefix length {plen} for IPv{version}")
    try:
        return ipaddress.ip_network(f"{dst}/{plen}"), gw
    except ValueError:
        raise _fail(errno.EINVAL, f"{dst}/{plen} has host bits set") from None


def _close_link(ts: _ThreadnetStack, link: Link) -> None:
    """Take a removed interface's link off the runner's loop (on its thread), then close it."""
    runner = ts.runner
    if runner is None:
        if not link.closed:
            link.close()
        return
    done = threading.Event()

    def unregister() -> None:
        try:
            if not link.closed:
                runner.loop.remove_reader(link.fileno())  # type: ignore[attr-defined]
                link.close()
        finally:
            done.set()

    runner.call_soon(unregister)  # type: ignore[attr-defined]
    done.wait(5)


def _intenum(value: Any, enum: Any) -> Any:
    try:
        return enum(value)
    except ValueError:
        return value


__all__ = sorted({
    "Stack", "MSocket", "override_socket_module", "AddressFamily", "SocketKind", "error",
    "herror", "gaierror", "timeout", "getdefaulttimeout", "setdefaulttimeout", "close",
    "CMSG_LEN", "CMSG_SPACE", "inet_aton", "inet_ntoa", "inet_pton", "inet_ntop", "ntohl",
    "ntohs", "htonl", "htons", "getfqdn", "getprotobyname", "getservbyname", "getservbyport",
    "sethostname", "getaddrinfo", "getnameinfo", "gethostname", "gethostbyname",
    "gethostbyname_ex", "gethostbyaddr", "hash_mac", "parse_ioth_config", *_CONSTANTS})
