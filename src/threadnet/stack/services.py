"""getaddrinfo's service step: glibc's table of socket types and protocols
(gaih_inet_typeproto) and the service names and numbers it accepts.
"""

from __future__ import annotations

import socket as _socket

from threadnet.stack.gai import (
    AI_NUMERICSERV,
    EAI_NONAME,
    EAI_SERVICE,
    EAI_SOCKTYPE,
    IPPROTO_DCCP,
    IPPROTO_SCTP,
    IPPROTO_TCP,
    IPPROTO_UDP,
    IPPROTO_UDPLITE,
    SOCK_DCCP,
    SOCK_DGRAM,
    SOCK_RAW,
    SOCK_SEQPACKET,
    SOCK_STREAM,
    gaierror,
)

# glibc's gaih_inet_typeproto: (socktype, protocol, any protocol, no service, by default, name)
_TYPEPROTO = (
    (SOCK_STREAM, IPPROTO_TCP, False, False, True, "tcp"),
    (SOCK_DGRAM, IPPROTO_UDP, False, False, True, "udp"),
    (SOCK_DCCP, IPPROTO_DCCP, False, False, False, "dccp"),
    (SOCK_DGRAM, IPPROTO_UDPLITE, False, False, False, "udplite"),
    (SOCK_STREAM, IPPROTO_SCTP, False, False, False, "sctp"),
    (SOCK_SEQPACKET, IPPROTO_SCTP, False, False, False, "sctp"),
    (SOCK_RAW, 0, True, True, True, "raw"),
)


def service_ports(serv: str | None, socktype: int, proto: int, flags: int
                  ) -> list[tuple[int, int, int]]:
    """glibc's gaih_inet service step: (socktype, protocol, port) tuples, or gaierror."""
    num: int | None = None
    if serv is not None:
        # strtoul(serv, 10) must take the whole string; a "negative" value is a name
        s = serv.lstrip(" \t\n\v\f\r")
        body = s[1:] if s[:1] in ("+", "-") else s
        if body.isdigit() and body.isascii():
            mag = int(body)
            if mag >= 1 << 64:
                v = (1 << 64) - 1  # ERANGE: ULONG_MAX
            else:
                v = -mag % (1 << 64) if s[:1] == "-" else mag
            v &= 0xFFFFFFFF  # then stored in an int: negative means "a name"
            if v < 0x80000000:
                num = v
        elif flags & AI_NUMERICSERV:
            raise gaierror(EAI_NONAME)
    chosen = None
    if socktype or proto:
        chosen = next((tp for tp in _TYPEPROTO
                       if (not socktype or socktype == tp[0])
                       and (not proto or tp[2] or proto == tp[1])), None)
        if chosen is None:
            raise gaierror(EAI_SOCKTYPE if socktype else EAI_SERVICE)
    if serv is not None:
        if chosen is not None and chosen[3]:
            raise gaierror(EAI_SERVICE)
        if num is None:
            candidates = [chosen] if chosen is not None else [
                tp for tp in _TYPEPROTO if not tp[3]
                and (not socktype or socktype == tp[0])
                and (not proto or tp[2] or proto == tp[1])]
            out = []
            for tp in candidates:
                try:
                    port = _socket.getservbyname(serv, tp[5])
                except (OSError, UnicodeError, ValueError):
                    continue
                out.append((tp[0], proto if tp[2] else tp[1], port))
            if not out:
                raise gaierror(EAI_SERVICE)
            return out
    port = (num or 0) & 0xFFFF
    if chosen is not None:
        return [(chosen[0], proto if chosen[2] else chosen[1], port)]
    return [(tp[0], tp[1], port) for tp in _TYPEPROTO if tp[4]]

