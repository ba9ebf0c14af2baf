"""DNS messages (RFC 1035 4.1): header, questions, resource records, name compression.

Sans-IO and strict. ``parse`` reads a whole message (a UDP payload, or a TCP message
without its 2-byte length) and raises ``DnsError`` for anything malformed: a short
header or record, a label or name too long, a compression pointer that does not point
strictly before the previous one (so no pointer chain can loop), record data whose
length does not match its type, or bytes after the last record. Random input raises
``DnsError`` and nothing else.

Names are text without the trailing dot (the root is ``""``), in the presentation form
of RFC 1035 5.1: a ``.`` or ``\\`` inside a label is escaped with a backslash, and bytes
outside printable ASCII are written ``\\DDD``, so every label parses and prints back to the
same bytes. Names compare case-insensitively (RFC 4343): use ``name_key``.

Record data is decoded for the types a stub resolver needs: A and AAAA give the address
as text, NS, CNAME and PTR give a name, MX gives ``(preference, name)``, SOA gives
``(mname, rname, serial, refresh, retry, expire, minimum)``. Other types keep their raw
``bytes``.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field

from threadnet.errors import FrameError
from threadnet.wire.checksum import Buffer

HEADER_LEN = 12
MAX_NAME = 255  # RFC 1035 2.3.4: octets of a name on the wire, length bytes included
MAX_LABEL = 63
MAX_POINTERS = 128  # a name has at most 127 labels: more pointers than that is an attack
MAX_UDP = 512  # RFC 1035 4.2.1: UDP messages without EDNS
PORT = 53

TYPE_A = 1
TYPE_NS = 2
TYPE_CNAME = 5
TYPE_SOA = 6
TYPE_PTR = 12
TYPE_MX = 15
TYPE_TXT = 16
TYPE_AAAA = 28
TYPE_OPT = 41
TYPE_ANY = 255
CLASS_IN = 1

RCODE_NOERROR = 0
RCODE_FORMERR = 1
RCODE_SERVFAIL = 2
RCODE_NXDOMAIN = 3
RCODE_NOTIMP = 4
RCODE_REFUSED = 5

FLAG_QR = 0x8000
FLAG_AA = 0x0400
FLAG_TC = 0x0200
FLAG_RD = 0x0100
FLAG_RA = 0x0080
OPCODE_QUERY = 0

_HDR = struct.Struct("!HHHHHH")
_QTAIL = struct.Struct("!HH")
_RRTAIL = struct.Struct("!HHIH")
_SOATAIL = struct.Struct("!IIIII")
_U16 = struct.Struct("!H")
_NAMED = (TYPE_NS, TYPE_CNAME, TYPE_PTR)
_PLAIN = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_*/+=")

RecordData = str | bytes | tuple


class DnsError(FrameError):
    """A DNS message or name that is malformed (on the wire or as given to build)."""


@dataclass(slots=True)
class Question:
    name: str
    qtype: int
    qclass: int = CLASS_IN


@dataclass(slots=True)
class Record:
    name: str
    rtype: int
    rclass: int
    ttl: int
    data: RecordData


@dataclass(slots=True)
class Message:
    id: int
    flags: int = 0
    questions: list[Question] = field(default_factory=list)
    answers: list[Record] = field(default_factory=list)
    authorities: list[Record] = field(default_factory=list)
    additionals: list[Record] = field(default_factory=list)

    @property
    def qr(self) -> bool:
        return bool(self.flags & FLAG_QR)

    @property
    def opcode(self) -> int:
        return (self.flags >> 11) & 0xF

    @property
    def tc(self) -> bool:
        return bool(self.flags & FLAG_TC)

    @property
    def rcode(self) -> int:
        return self.flags & 0xF


# -- names -------------------------------------------------------------------------------

def _label_text(label: bytes) -> str:
    out = []
    for b in label:
        if b in _PLAIN:
            out.append(chr(b))
        elif 0x21 <= b <= 0x7E:
            out.append("\\" + chr(b))
        else:
            out.append(f"\\{b:03d}")
    return "".join(out)


def name_from_labels(labels: list[bytes]) -> str:
    """The presentation form of a name given as its labels (the inverse of name_labels)."""
    return ".".join(_label_text(x) for x in labels)


def name_labels(name: str) -> list[bytes]:
    """The labels of a name in presentation form (``\\.``, ``\\DDD`` escapes; one trailing
    dot allowed). Raises DnsError for an empty or too long label, a bad escape, a name
    over 255 octets or characters outside ASCII (encode with the ``idna`` codec first)."""
    if name in ("", "."):
        return []
    labels: list[bytes] = []
    cur = bytearray()
    i, n = 0, len(name)
    while i < n:
        c = name[i]
        if c == "\\":
            if i + 1 >= n:
                raise DnsError(f"name {name!r} ends in a lone backslash")
            d = name[i + 1:i + 4]
            if d[:1].isdigit():
                if len(d) < 3 or not d.isdigit() or int(d) > 255:
                    raise DnsError(f"bad \\DDD escape in name {name!r}")
                cur.append(int(d))
                i += 4
                continue
            c = name[i + 1]
            i += 2
        elif c == ".":
            if not cur:
                raise DnsError(f"empty label in name {name!r}")
            labels.append(bytes(cur))
            cur = bytearray()
            i += 1
            if i == n:
                break  # the one trailing dot of an absolute name
            continue
        else:
            i += 1
        if ord(c) > 0x7F:
            raise DnsError(f"name {name!r} is not ASCII (encode it with the idna codec)")
        cur.append(ord(c))
        if len(cur) > MAX_LABEL:
            raise DnsError(f"label longer than 63 bytes in name {name!r}")
    if cur:
        labels.append(bytes(cur))
    if sum(len(x) + 1 for x in labels) + 1 > MAX_NAME:
        raise DnsError(f"name {name!r} is longer than 255 bytes on the wire")
    return labels


def encode_name(name: str) -> bytes:
    """A name's uncompressed wire form, root label included."""
    return b"".join(bytes([len(x)]) + x for x in name_labels(name)) + b"\0"


def name_key(name: str) -> bytes:
    """A key that compares names as DNS does: case-insensitive ASCII (RFC 4343)."""
    return encode_name(name).lower()


def reverse_name(address: str | bytes) -> str:
    """The PTR name of an IPv4 or IPv6 address (RFC 1035 3.5, RFC 3596 2.5)."""
    ip = ipaddress.ip_address(address)
    return ip.reverse_pointer


def _read_name(data: Buffer, off: int) -> tuple[str, int]:
    """The name at ``off`` and the offset after it (after its first pointer, if any).

    RFC 1035 4.1.4 compression: each pointer must point strictly before the previous
    one's target (the first: before the name's start), so a chain of pointers always
    ends; a compressor only ever points back into names it has written already.
    """
    n = len(data)
    labels: list[str] = []
    total = 1
    end = -1
    limit = off
    pos = off
    hops = 0
    while True:
        if pos >= n:
            raise DnsError("name runs past the end of the message")
        length = data[pos]
        if length >= 0xC0:
            if pos + 1 >= n:
                raise DnsError("compression pointer cut short")
            target = ((length & 0x3F) << 8) | data[pos + 1]
            if end < 0:
                end = pos + 2
            if target >= limit:
                raise DnsError(f"compression pointer to {target} does not point backwards")
            hops += 1
            if hops > MAX_POINTERS:
                raise DnsError("too many compression pointers in one name")
            limit = pos = target
            continue
        if length & 0xC0:
            raise DnsError(f"unknown label type 0x{length & 0xC0:02x}")
        if length == 0:
            return ".".join(labels), (end if end >= 0 else pos + 1)
        total += length + 1
        if total > MAX_NAME:
            raise DnsError("name longer than 255 bytes")
        if pos + 1 + length > n:
            raise DnsError("label runs past the end of the message")
        labels.append(_label_text(bytes(data[pos + 1:pos + 1 + length])))
        pos += 1 + length


# -- parsing -----------------------------------------------------------------------------

def _read_rdata(data: Buffer, rtype: int, start: int, end: int) -> RecordData:
    size = end - start
    if rtype == TYPE_A:
        if size != 4:
            raise DnsError(f"A record data of {size} bytes (must be 4)")
        return str(ipaddress.IPv4Address(bytes(data[start:end])))
    if rtype == TYPE_AAAA:
        if size != 16:
            raise DnsError(f"AAAA record data of {size} bytes (must be 16)")
        return str(ipaddress.IPv6Address(bytes(data[start:end])))
    if rtype in _NAMED:
        name, after = _read_name(data, start)
        if after != end:
            raise DnsError(f"type {rtype} record data does not end with its name")
        return name
    if rtype == TYPE_MX:
        if size < 3:
            raise DnsError("MX record data too short")
        name, after = _read_name(data, start + 2)
        if after != end:
            raise DnsError("MX record data does not end with its name")
        return (_U16.unpack_from(data, start)[0], name)
    if rtype == TYPE_SOA:
        mname, pos = _read_name(data, start)
        if pos >= end:
            raise DnsError("SOA record data too short")
        rname, pos = _read_name(data, pos)
        if pos + _SOATAIL.size != end:
            raise DnsError("SOA record data does not end with its five numbers")
        return (mname, rname, *_SOATAIL.unpack_from(data, pos))
    return bytes(data[start:end])


def _read_record(data: Buffer, off: int) -> tuple[Record, int]:
    name, off = _read_name(data, off)
    if off + _RRTAIL.size > len(data):
        raise DnsError("resource record cut short")
    rtype, rclass, ttl, rdlen = _RRTAIL.unpack_from(data, off)
    off += _RRTAIL.size
    end = off + rdlen
    if end > len(data):
        raise DnsError(f"record data of {rdlen} bytes runs past the end of the message")
    return Record(name, rtype, rclass, ttl, _read_rdata(data, rtype, off, end)), end


def parse(data: Buffer) -> Message:
    """Parse a whole DNS message. Raises DnsError when it is malformed in any way."""
    if len(data) < HEADER_LEN:
        raise DnsError(f"DNS message of {len(data)} bytes is shorter than its header")
    ident, flags, qd, an, ns, ar = _HDR.unpack_from(data)
    msg = Message(ident, flags)
    off = HEADER_LEN
    for _ in range(qd):
        name, off = _read_name(data, off)
        if off + 4 > len(data):
            raise DnsError("question cut short")
        qtype, qclass = _QTAIL.unpack_from(data, off)
        off += 4
        msg.questions.append(Question(name, qtype, qclass))
    for count, section in ((an, msg.answers), (ns, msg.authorities), (ar, msg.additionals)):
        for _ in range(count):
            rr, off = _read_record(data, off)
            section.append(rr)
    if off != len(data):
        raise DnsError(f"{len(data) - off} bytes after the last record")
    return msg


# -- building ----------------------------------------------------------------------------

class _Writer:
    """A message being built, with RFC 1035 4.1.4 compression of names."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.suffixes: dict[bytes, int] = {}

    def name(self, name: str, compress: bool = True) -> None:
        labels = name_labels(name)
        for i in range(len(labels)):
            key = b".".join(labels[i:])  # case kept: parse(build(m)) == m exactly
            at = self.suffixes.get(key)
            if at is not None and compress:
                self.buf += _U16.pack(0xC000 | at)
                return
            if len(self.buf) < 0x4000:
                self.suffixes.setdefault(key, len(self.buf))
            self.buf.append(len(labels[i]))
            self.buf += labels[i]
        self.buf.append(0)

    def rdata(self, rtype: int, data: RecordData) -> None:
        at = len(self.buf)
        self.buf += b"\0\0"
        try:
            if rtype in (TYPE_A, TYPE_AAAA):
                ip = ipaddress.ip_address(data)  # type: ignore[arg-type]
                if ip.version != (4 if rtype == TYPE_A else 6):
                    raise DnsError(f"{data!r} is not an address for type {rtype}")
                self.buf += ip.packed
            elif rtype in _NAMED:
                self.name(data)  # type: ignore[arg-type]
            elif rtype == TYPE_MX:
                pref, target = data  # type: ignore[misc]
                self.buf += _U16.pack(pref)
                self.name(target)
            elif rtype == TYPE_SOA:
                mname, rname, *nums = data  # type: ignore[misc]
                self.name(mname)
                self.name(rname)
                self.buf += _SOATAIL.pack(*nums)
            else:
                self.buf += bytes(data)  # type: ignore[arg-type]
        except DnsError:
            raise
        except (TypeError, ValueError, struct.error):
            raise DnsError(f"bad data for a type {rtype} record: {data!r}") from None
        size = len(self.buf) - at - 2
        if size > 0xFFFF:
            raise DnsError("record data longer than 65535 bytes")
        _U16.pack_into(self.buf, at, size)


def build(msg: Message, compress: bool = True) -> bytes:
    """The wire form of ``msg``. Raises DnsError for a name or record it cannot encode."""
    w = _Writer()
    counts = [len(msg.questions), len(msg.answers), len(msg.authorities), len(msg.additionals)]
    if max(counts) > 0xFFFF:
        raise DnsError("more than 65535 entries in a section")
    w.buf += _HDR.pack(msg.id & 0xFFFF, msg.flags & 0xFFFF, *counts)
    for q in msg.questions:
        w.name(q.name, compress)
        w.buf += _QTAIL.pack(q.qtype, q.qclass)
    for rr in (*msg.answers, *msg.authorities, *msg.additionals):
        w.name(rr.name, compress)
        try:
            w.buf += _RRTAIL.pack(rr.rtype, rr.rclass, rr.ttl, 0)[:-2]
        except struct.error:
            raise DnsError(f"bad type, class or TTL in {rr!r}") from None
        w.rdata(rr.rtype, rr.data)
    return bytes(w.buf)


def build_query(ident: int, name: str, qtype: int, *, rd: bool = True) -> bytes:
    """A standard query for one question (what a stub resolver sends)."""
    return build(Message(ident, FLAG_RD if rd else 0, [Question(name, qtype)]))


def build_response(query: Message, answers: list[Record] | None = None, *,
                   rcode: int = RCODE_NOERROR, authorities: list[Record] | None = None,
                   aa: bool = True, tc: bool = False) -> bytes:
    """An answer to ``query`` with its id, question and RD flag (for servers and tests)."""
    flags = (FLAG_QR | (query.flags & (0xF << 11)) | (query.flags & FLAG_RD) | FLAG_RA
             | (FLAG_AA if aa else 0) | (FLAG_TC if tc else 0) | (rcode & 0xF))
    return build(Message(query.id, flags, list(query.questions), list(answers or []),
                         list(authorities or [])))
