"""glibc's getaddrinfo vocabulary, with no network in it: the AI_/NI_ flags, the EAI_ and
h_errno codes with their texts (so errors read as the stdlib's do), ``LookupFailed`` and
the numeric address forms glibc accepts.
"""

from __future__ import annotations

import socket as _socket

AF_UNSPEC, AF_INET, AF_INET6 = _socket.AF_UNSPEC, _socket.AF_INET, _socket.AF_INET6
SOCK_STREAM, SOCK_DGRAM, SOCK_RAW = _socket.SOCK_STREAM, _socket.SOCK_DGRAM, _socket.SOCK_RAW
SOCK_SEQPACKET, SOCK_DCCP = 5, 6
IPPROTO_TCP, IPPROTO_UDP, IPPROTO_DCCP, IPPROTO_SCTP, IPPROTO_UDPLITE = 6, 17, 33, 132, 136

EAI_BADFLAGS = _socket.EAI_BADFLAGS
EAI_NONAME = _socket.EAI_NONAME
EAI_AGAIN = _socket.EAI_AGAIN
EAI_FAIL = _socket.EAI_FAIL
EAI_FAMILY = _socket.EAI_FAMILY
EAI_SOCKTYPE = _socket.EAI_SOCKTYPE
EAI_SERVICE = _socket.EAI_SERVICE
EAI_NODATA = getattr(_socket, "EAI_NODATA", -5)
EAI_ADDRFAMILY = getattr(_socket, "EAI_ADDRFAMILY", -9)

# glibc's gai_strerror and hstrerror texts, so errors read as the stdlib's do
_GAI_TEXT = {
    EAI_BADFLAGS: "Bad value for ai_flags",
    EAI_NONAME: "Name or service not known",
    EAI_AGAIN: "Temporary failure in name resolution",
    EAI_FAIL: "Non-recoverable failure in name resolution",
    EAI_FAMILY: "ai_family not supported",
    EAI_SOCKTYPE: "ai_socktype not supported",
    EAI_SERVICE: "Servname not supported for ai_socktype",
    EAI_NODATA: "No address associated with hostname",
    EAI_ADDRFAMILY: "Address family for hostname not supported",
}
HOST_NOT_FOUND, TRY_AGAIN, NO_RECOVERY, NO_DATA = 1, 2, 3, 4
_H_TEXT = {HOST_NOT_FOUND: "Unknown host", TRY_AGAIN: "Host name lookup failure",
           NO_RECOVERY: "Unknown server error", NO_DATA: "No address associated with name"}

AI_PASSIVE, AI_CANONNAME, AI_NUMERICHOST = 0x1, 0x2, 0x4
AI_V4MAPPED, AI_ALL, AI_ADDRCONFIG, AI_NUMERICSERV = 0x8, 0x10, 0x20, 0x400
_AI_KNOWN = 0x7FF  # glibc accepts the IDN flags (0x40..0x200) too
NI_NUMERICHOST, NI_NUMERICSERV, NI_NOFQDN, NI_NAMEREQD, NI_DGRAM = 1, 2, 4, 8, 16
_NI_KNOWN = 0xFF

_LOOP4 = b"\x7f\x00\x00\x01"
_LOOP6 = bytes(15) + b"\x01"
_OWN4 = b"\x7f\x00\x01\x01"  # 127.0.1.1: a host name with no other address, as Debian
_ANY4 = bytes(4)
_ANY6 = bytes(16)
_MAPPED = bytes(10) + b"\xff\xff"


def gaierror(code: int, detail: str = "") -> _socket.gaierror:
    text = _GAI_TEXT.get(code, "Unknown error")
    return _socket.gaierror(code, f"{text} ({detail})" if detail else text)


def herror(code: int) -> _socket.herror:
    return _socket.herror(code, _H_TEXT.get(code, "Resolver internal error"))


class LookupFailed(Exception):
    """A name or address was not found; ``status`` says why: ``nxdomain`` (no such name),
    ``nodata`` (the name has no records of the types asked), ``again`` (no server
    answered, or all failed) or ``fail`` (a server answered with an error)."""

    _EAI = {"nxdomain": EAI_NONAME, "nodata": EAI_NODATA, "again": EAI_AGAIN,
            "fail": EAI_FAIL}
    _HERR = {"nxdomain": HOST_NOT_FOUND, "nodata": NO_DATA, "again": TRY_AGAIN,
             "fail": NO_RECOVERY}

    def __init__(self, status: str, detail: str = "") -> None:
        super().__init__(status, detail)
        self.status = status
        self.detail = detail

    def gaierror(self) -> _socket.gaierror:
        return gaierror(self._EAI[self.status], self.detail)

    def herror(self) -> _socket.herror:
        return herror(self._HERR[self.status])


def inet_aton_exact(text: str) -> bytes | None:
    """An IPv4 address in any form glibc's getaddrinfo takes as numeric (``inet_aton``:
    1 to 4 parts, each decimal, octal with a leading 0 or hex with 0x, the last part
    filling the remaining bytes, nothing after it); None if ``text`` is not one."""
    parts = text.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    values = []
    for p in parts:
        if not p or not p.isascii() or not p[0].isdigit():
            return None
        if p[:2] in ("0x", "0X"):
            digits, base, ok = p[2:], 16, "0123456789abcdefABCDEF"
        elif p[0] == "0":
            digits, base, ok = p, 8, "01234567"
        else:
            digits, base, ok = p, 10, "0123456789"
        if not digits or any(c not in ok for c in digits):
            return None  # strtoul stopped early: a character is left over
        values.append(int(digits, base))
    last = values.pop()
    if any(v > 0xFF for v in values) or last > 0xFFFFFFFF >> (8 * len(values)):
        return None
    n = 0
    for v in values:
        n = (n << 8) | v
    return ((n << (8 * (4 - len(values)))) | last).to_bytes(4, "big")


def ntop(packed: bytes) -> str:
    """An address as glibc's inet_ntop writes it (``::ffff:1.2.3.4``, ``::1.2.3.4``)."""
    return _socket.inet_ntop(AF_INET if len(packed) == 4 else AF_INET6, packed)


def _pton6(text: str) -> bytes | None:
    try:
        return _socket.inet_pton(AF_INET6, text)
    except (OSError, ValueError):
        return None

