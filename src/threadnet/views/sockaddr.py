"""struct sockaddr_in / sockaddr_in6 <-> the published stack's address lists (sans-IO)."""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct
from typing import Any

AF_INET, AF_INET6, AF_UNSPEC = socket.AF_INET, socket.AF_INET6, socket.AF_UNSPEC
_IN = struct.Struct("=H2s4s8x")  # family (host order), port (network order), address
_IN6 = struct.Struct("=H2s4s16sI")  # family, port, flowinfo (network order), address, scope
SIZE = {AF_INET: _IN.size, AF_INET6: _IN6.size}


def decode(raw: bytes, family: int) -> list[Any]:
    """A sockaddr from a program, for a socket of ``family``: [host, port] or
    [host, port, flowinfo, scope_id]. OSError as the kernel would fail."""
    if len(raw) < 2:
        raise OSError(errno.EINVAL, "Invalid argument")
    fam = struct.unpack_from("=H", raw)[0]
    if fam != family:
        # as Linux: an AF_INET6 socket refuses AF_INET addresses, and both refuse others
        raise OSError(errno.EAFNOSUPPORT, "Address family not supported by protocol")
    if fam == AF_INET:
        if len(raw) < _IN.size:
            raise OSError(errno.EINVAL, "Invalid argument")
        _, port, addr = _IN.unpack_from(raw)
        return [str(ipaddress.IPv4Address(addr)), int.from_bytes(port, "big")]
    if len(raw) < 24:  # sockaddr_in6 without sin6_scope_id (RFC 2133's), as Linux allows
        raise OSError(errno.EINVAL, "Invalid argument")
    raw = raw[:_IN6.size].ljust(_IN6.size, b"\0")
    _, port, flow, addr, scope = _IN6.unpack_from(raw)
    return [str(ipaddress.IPv6Address(addr)), int.from_bytes(port, "big"),
            int.from_bytes(flow, "big"), scope]


def encode(addr: Any, family: int) -> bytes:
    """The sockaddr for an address as the stack gives it ((host, port[, flow, scope]))."""
    host, port = addr[0], int(addr[1])
    if family == AF_INET:
        return _IN.pack(AF_INET, port.to_bytes(2, "big"),
                        ipaddress.IPv4Address(host or "0.0.0.0").packed)
    flow = int(addr[2]) if len(addr) > 2 else 0
    scope = int(addr[3]) if len(addr) > 3 else 0
    return _IN6.pack(AF_INET6, port.to_bytes(2, "big"), flow.to_bytes(4, "big"),
                     ipaddress.IPv6Address((host or "::").split("%", 1)[0]).packed, scope)
