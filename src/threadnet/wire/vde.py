"""The vde_switch control protocol (vde-2 datasock.c, libvdeplug): request_v3 and sockaddr_un.

A client connects a SOCK_STREAM socket to ``DIR/ctl`` and writes one request:

    uint32 magic 0xfeedface; uint32 version 3; uint32 type; struct sockaddr_un sock; char descr[]

in host byte order (little-endian on every machine we run on), with the description
unterminated. ``type & 0xff`` is the request (0 = new port, 1 = port 0) and ``type >> 8``
the wanted port (0 = first free). The switch answers with exactly 110 bytes: the
``sockaddr_un`` of the datagram socket that serves the client's port.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from threadnet.errors import FrameError

SWITCH_MAGIC = 0xFEEDFACE
VERSION = 3
REQ_NEW_CONTROL = 0
REQ_NEW_PORT0 = 1
MAXDESCR = 128
SUN_PATH_LEN = 108
SOCKADDR_UN_LEN = 110  # sa_family_t (u16) + sun_path[108]
AF_UNIX = 1
# The switch reads a request with a single read() of at most 256 bytes.
MAX_REQUEST = 256

_HEAD = struct.Struct("=III")
_SUN = struct.Struct("=H108s")
HEADER_LEN = _HEAD.size + _SUN.size  # 122
# Legacy v1 layout: magic, type, 6-byte MAC, sockaddr_un, description (no version).
_V1 = struct.Struct("=II6s")
V1_HEADER_LEN = _V1.size + _SUN.size


@dataclass(frozen=True, slots=True)
class Request:
    """A parsed control request."""

    kind: int  # REQ_NEW_CONTROL or REQ_NEW_PORT0
    port: int  # wanted port, 0 = any
    path: str  # the client's datagram socket
    description: str
    version: int = VERSION


def pack_sockaddr_un(path: str | bytes) -> bytes:
    """Build a 110-byte Linux ``struct sockaddr_un`` for ``path``."""
    raw = path.encode() if isinstance(path, str) else path
    if len(raw) >= SUN_PATH_LEN:
        raise ValueError(f"unix socket path too long ({len(raw)} bytes, max {SUN_PATH_LEN - 1})")
    return _SUN.pack(AF_UNIX, raw)


def parse_sockaddr_un(data: bytes | bytearray | memoryview) -> str:
    """Parse a 110-byte ``struct sockaddr_un`` and return its path."""
    if len(data) < SOCKADDR_UN_LEN:
        raise FrameError(f"sockaddr_un of {len(data)} bytes, expected {SOCKADDR_UN_LEN}")
    family, raw = _SUN.unpack_from(data, 0)
    if family != AF_UNIX:
        raise FrameError(f"sockaddr_un with family {family}, expected AF_UNIX")
    path = raw.split(b"\0", 1)[0]
    if not path:
        raise FrameError("sockaddr_un with an empty path")
    return path.decode(errors="surrogateescape")


def pack_request(path: str, description: str = "", port: int = 0,
                 kind: int = REQ_NEW_CONTROL) -> bytes:
    """Build a request_v3 as libvdeplug sends it (description without NUL)."""
    if not 0 <= port <= 0xFFFFFF:
        raise ValueError(f"port {port} out of range")
    descr = description.encode(errors="replace")[: MAXDESCR - 1]
    return _HEAD.pack(SWITCH_MAGIC, VERSION, kind | (port << 8)) + pack_sockaddr_un(path) + descr


def parse_request(data: bytes | bytearray | memoryview) -> Request:
    """Parse a control request (v3, or the legacy v1 layout). Raises FrameError."""
    n = len(data)
    if n < 8:
        raise FrameError(f"control request of {n} bytes is too short")
    magic, second = struct.unpack_from("=II", data, 0)
    if magic != SWITCH_MAGIC:
        raise FrameError(f"bad magic 0x{magic:08x} in control request")
    if second == VERSION:
        if n < HEADER_LEN:
            raise FrameError(f"request_v3 of {n} bytes, expected at least {HEADER_LEN}")
        _, _, rtype = _HEAD.unpack_from(data, 0)
        path = parse_sockaddr_un(memoryview(data)[_HEAD.size:HEADER_LEN])
        descr = bytes(data[HEADER_LEN:]).split(b"\0", 1)[0]
        version = VERSION
    elif second == 2:
        raise FrameError("control protocol version 2 is not supported")
    else:
        # Legacy v1: the second word is the request type itself.
        if n < V1_HEADER_LEN:
            raise FrameError(f"request_v1 of {n} bytes, expected at least {V1_HEADER_LEN}")
        _, rtype, _mac = _V1.unpack_from(data, 0)
        path = parse_sockaddr_un(memoryview(data)[_V1.size:V1_HEADER_LEN])
        descr = bytes(data[V1_HEADER_LEN:]).split(b"\0", 1)[0]
        version = 1
    kind = rtype & 0xFF
    if kind not in (REQ_NEW_CONTROL, REQ_NEW_PORT0):
        raise FrameError(f"unknown request type {kind}")
    return Request(kind, rtype >> 8, path, descr.decode(errors="replace"), version)
