"""DHCPv4 messages (RFC 2131, the BOOTP format of RFC 951) and their options (RFC 2132).

``parse`` reads one message (a UDP payload) and is strict and bounded: a message shorter
than the fixed part and the magic cookie, a hardware address length beyond the 16-byte
``chaddr`` field, an option that runs past its field, options without their end option,
or an option we decode whose length is wrong for its type (a lease time that is not 4
bytes, a router list that is not a multiple of 4, a message type outside 1..18) raises
``FrameError`` naming the problem. Random input raises ``FrameError`` and nothing else.

Options are kept as ``code -> bytes``. An option that appears more than once is the
concatenation of its parts (RFC 3396); ``build`` splits a value longer than 255 bytes
the same way. Option overload (52) is honoured: the options carried in the ``file`` and
``sname`` fields are read after the options field, in that order (RFC 2132 9.3), and
``file``/``sname`` then read as empty. ``build`` never overloads.

The decoded views of the options a client and a server need are the message's properties
(``message_type``, ``server_id``, ``lease_time``, ``routers``...); each is None when the
option is absent.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from threadnet.errors import FrameError
from threadnet.wire.checksum import Buffer

SERVER_PORT = 67
CLIENT_PORT = 68

BOOTREQUEST = 1
BOOTREPLY = 2
HTYPE_ETHER = 1
FLAG_BROADCAST = 0x8000
MAGIC = b"\x63\x82\x53\x63"  # RFC 2131 3: 99.130.83.99
FIXED_LEN = 236  # op .. file, before the magic cookie
MIN_LEN = FIXED_LEN + 4
#: RFC 1542 2.1: BOOTP relays may drop messages shorter than 300 bytes; build pads to it
MIN_BUILD_LEN = 300
#: RFC 2131 2: a client must be able to take a message of 576 - 28 bytes of UDP payload
MIN_MAX_SIZE = 576

# message types (option 53)
DISCOVER, OFFER, REQUEST, DECLINE, ACK, NAK, RELEASE, INFORM = range(1, 9)
TYPE_NAMES = {DISCOVER: "DISCOVER", OFFER: "OFFER", REQUEST: "REQUEST", DECLINE: "DECLINE",
              ACK: "ACK", NAK: "NAK", RELEASE: "RELEASE", INFORM: "INFORM"}

# options (RFC 2132)
OPT_PAD = 0
OPT_SUBNET_MASK = 1
OPT_ROUTER = 3
OPT_DNS = 6
OPT_HOST_NAME = 12
OPT_DOMAIN_NAME = 15
OPT_MTU = 26
OPT_BROADCAST = 28
OPT_REQUESTED_IP = 50
OPT_LEASE_TIME = 51
OPT_OVERLOAD = 52
OPT_MESSAGE_TYPE = 53
OPT_SERVER_ID = 54
OPT_PARAM_LIST = 55
OPT_MESSAGE = 56
OPT_MAX_SIZE = 57
OPT_T1 = 58
OPT_T2 = 59
OPT_CLIENT_ID = 61
OPT_END = 255

#: a lease time (and T1, T2) of all ones is infinite (RFC 2132 9.2)
INFINITE = 0xFFFFFFFF

_FIXED = struct.Struct("!BBBBIHH4s4s4s4s16s64s128s")
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")

# the options whose form is checked by parse: code -> (name, kind); kinds: "u8" (one
# byte), "u16", "u32", "ip" (4 bytes), "ips" (a non-empty multiple of 4), "text" (at
# least one byte), "list" (at least one byte)
_FORMS: dict[int, tuple[str, str]] = {
    OPT_SUBNET_MASK: ("subnet mask", "ip"), OPT_ROUTER: ("router", "ips"),
    OPT_DNS: ("DNS server", "ips"), OPT_HOST_NAME: ("host name", "text"),
    OPT_DOMAIN_NAME: ("domain name", "text"), OPT_MTU: ("interface MTU", "u16"),
    OPT_BROADCAST: ("broadcast address", "ip"), OPT_REQUESTED_IP: ("requested address", "ip"),
    OPT_LEASE_TIME: ("lease time", "u32"), OPT_OVERLOAD: ("option overload", "u8"),
    OPT_MESSAGE_TYPE: ("message type", "u8"), OPT_SERVER_ID: ("server identifier", "ip"),
    OPT_PARAM_LIST: ("parameter request list", "list"), OPT_MAX_SIZE: ("maximum size", "u16"),
    OPT_T1: ("renewal time", "u32"), OPT_T2: ("rebinding time", "u32"),
    OPT_CLIENT_ID: ("client identifier", "cid"),
}
_SIZES = {"u8": 1, "u16": 2, "u32": 4, "ip": 4}


@dataclass(slots=True)
class DhcpMessage:
    """One BOOTP/DHCP message. Addresses are 4 packed bytes; ``chaddr`` is the client's
    hardware address (``hlen`` bytes, 6 for Ethernet); ``options`` maps a code to its
    value (without the code and length bytes), in the order they are sent."""

    op: int = BOOTREQUEST
    xid: int = 0
    chaddr: bytes = bytes(6)
    htype: int = HTYPE_ETHER
    hops: int = 0
    secs: int = 0
    flags: int = 0
    ciaddr: bytes = bytes(4)
    yiaddr: bytes = bytes(4)
    siaddr: bytes = bytes(4)
    giaddr: bytes = bytes(4)
    sname: bytes = b""
    file: bytes = b""
    options: dict[int, bytes] = field(default_factory=dict)

    # -- decoded options --------------------------------------------------------------
    @property
    def message_type(self) -> int | None:
        v = self.options.get(OPT_MESSAGE_TYPE)
        return v[0] if v else None

    @property
    def server_id(self) -> bytes | None:
        return self.options.get(OPT_SERVER_ID)

    @property
    def requested_ip(self) -> bytes | None:
        return self.options.get(OPT_REQUESTED_IP)

    @property
    def subnet_mask(self) -> bytes | None:
        return self.options.get(OPT_SUBNET_MASK)

    @property
    def lease_time(self) -> int | None:
        return self._u32(OPT_LEASE_TIME)

    @property
    def t1(self) -> int | None:
        return self._u32(OPT_T1)

    @property
    def t2(self) -> int | None:
        return self._u32(OPT_T2)

    @property
    def routers(self) -> list[bytes]:
        return self._ips(OPT_ROUTER)

    @property
    def dns_servers(self) -> list[bytes]:
        return self._ips(OPT_DNS)

    @property
    def domain_name(self) -> str | None:
        return self._text(OPT_DOMAIN_NAME)

    @property
    def host_name(self) -> str | None:
        return self._text(OPT_HOST_NAME)

    @property
    def mtu(self) -> int | None:
        v = self.options.get(OPT_MTU)
        return None if v is None else _U16.unpack(v)[0]

    @property
    def max_size(self) -> int | None:
        v = self.options.get(OPT_MAX_SIZE)
        return None if v is None else _U16.unpack(v)[0]

    @property
    def client_id(self) -> bytes | None:
        return self.options.get(OPT_CLIENT_ID)

    @property
    def param_list(self) -> bytes:
        return self.options.get(OPT_PARAM_LIST, b"")

    @property
    def message(self) -> str | None:
        return self._text(OPT_MESSAGE)

    @property
    def hwaddr(self) -> bytes:
        """``chaddr``: the client's hardware address (its MAC on Ethernet)."""
        return self.chaddr

    def _u32(self, code: int) -> int | None:
        v = self.options.get(code)
        return None if v is None else _U32.unpack(v)[0]

    def _ips(self, code: int) -> list[bytes]:
        v = self.options.get(code, b"")
        return [v[i:i + 4] for i in range(0, len(v), 4)]

    def _text(self, code: int) -> str | None:
        v = self.options.get(code)
        if v is None:
            return None
        # RFC 2132 2: NUL-terminated strings are tolerated; a receiver must not need it
        return v.split(b"\x00", 1)[0].decode("utf-8", "replace")


def _check_form(code: int, value: bytes) -> None:
    form = _FORMS.get(code)
    if form is None:
        return
    name, kind = form
    n = len(value)
    size = _SIZES.get(kind)
    if size is not None and n != size:
        raise FrameError(f"DHCP option {code} ({name}) has length {n}, not {size}")
    if kind == "ips" and (n == 0 or n % 4):
        raise FrameError(f"DHCP option {code} ({name}) has length {n}, not a multiple of 4")
    if kind in ("text", "list") and n == 0:
        raise FrameError(f"DHCP option {code} ({name}) is empty")
    if kind == "cid" and n < 2:  # RFC 2132 9.14: a type byte and at least one more
        raise FrameError(f"DHCP option {code} ({name}) has length {n}, less than 2")
    if code == OPT_MESSAGE_TYPE and not 1 <= value[0] <= 18:
        raise FrameError(f"DHCP message type {value[0]} is not 1..18")
    if code == OPT_OVERLOAD and not 1 <= value[0] <= 3:
        raise FrameError(f"DHCP option overload {value[0]} is not 1..3")


def _read_options(mv: memoryview, where: str, parts: dict[int, list[bytes]]) -> None:
    """Read one options field (TLVs up to the end option) into ``parts``."""
    i, n = 0, len(mv)
    while True:
        if i >= n:
            raise FrameError(f"DHCP options in {where} have no end option")
        code = mv[i]
        if code == OPT_END:
            return  # RFC 2131 4.1: what follows the end option is padding
        if code == OPT_PAD:
            i += 1
            continue
        if i + 1 >= n:
            raise FrameError(f"DHCP option {code} in {where} has no length byte")
        length = mv[i + 1]
        if i + 2 + length > n:
            raise FrameError(f"DHCP option {code} in {where} of {length} bytes runs past "
                             f"the field's end ({n - i - 2} left)")
        parts.setdefault(code, []).append(bytes(mv[i + 2:i + 2 + length]))
        i += 2 + length


def _cstring(raw: bytes) -> bytes:
    return raw.split(b"\x00", 1)[0]


def parse(data: Buffer) -> DhcpMessage:
    """Parse one DHCP message (a UDP payload). Raises FrameError (see the module's notes)."""
    mv = memoryview(data)
    n = len(mv)
    if n < MIN_LEN:
        raise FrameError(f"DHCP message of {n} bytes is shorter than its {MIN_LEN}-byte "
                         "fixed part and magic cookie")
    (op, htype, hlen, hops, xid, secs, flags, ciaddr, yiaddr, siaddr, giaddr, chaddr,
     sname, file) = _FIXED.unpack_from(mv)
    if op not in (BOOTREQUEST, BOOTREPLY):
        raise FrameError(f"BOOTP op {op} is neither a request (1) nor a reply (2)")
    if hlen > 16:
        raise FrameError(f"BOOTP hardware address length {hlen} exceeds the 16-byte chaddr")
    if mv[FIXED_LEN:MIN_LEN] != MAGIC:
        raise FrameError(f"no DHCP magic cookie: {bytes(mv[FIXED_LEN:MIN_LEN]).hex()}")
    parts: dict[int, list[bytes]] = {}
    _read_options(mv[MIN_LEN:], "the options field", parts)
    overload = parts.get(OPT_OVERLOAD)
    if overload is not None:
        value = b"".join(overload)
        _check_form(OPT_OVERLOAD, value)
        # RFC 2132 9.3: the file field first, then sname
        if value[0] & 1:
            _read_options(mv[108:236], "the file field", parts)
            file = b""
        if value[0] & 2:
            _read_options(mv[44:108], "the sname field", parts)
            sname = b""
    options = {}
    for code, values in parts.items():
        value = b"".join(values)  # RFC 3396: parts of one long option
        _check_form(code, value)
        options[code] = value
    return DhcpMessage(op=op, xid=xid, chaddr=chaddr[:hlen], htype=htype, hops=hops,
                       secs=secs, flags=flags, ciaddr=ciaddr, yiaddr=yiaddr, siaddr=siaddr,
                       giaddr=giaddr, sname=_cstring(sname), file=_cstring(file),
                       options=options)


def options_length(options: dict[int, bytes]) -> int:
    """Bytes the options take on the wire, the end option included."""
    total = 1
    for value in options.values():
        chunks = max(1, -(-len(value) // 255))
        total += 2 * chunks + len(value)
    return total


def build_length(msg: DhcpMessage) -> int:
    """Bytes ``build`` writes for ``msg`` (padded to 300)."""
    return max(MIN_BUILD_LEN, MIN_LEN + options_length(msg.options))


def build(buf: bytearray | memoryview, msg: DhcpMessage, offset: int = 0) -> int:
    """Write ``msg`` into ``buf`` at ``offset``: the fixed part, the cookie, its options
    in order (one longer than 255 bytes split in parts, RFC 3396), the end option, and
    zero padding up to 300 bytes. Returns the length. ValueError if a field does not fit
    (a ``chaddr`` over 16 bytes, an ``sname`` over 63, a ``file`` over 127, a code that
    is pad or end) or ``buf`` is too small."""
    if len(msg.chaddr) > 16:
        raise ValueError(f"chaddr of {len(msg.chaddr)} bytes exceeds 16")
    if len(msg.sname) > 63 or len(msg.file) > 127:
        raise ValueError("sname is at most 63 bytes and file 127 (NUL-terminated)")
    length = build_length(msg)
    if offset + length > len(buf):
        raise ValueError(f"DHCP message of {length} bytes does not fit the buffer")
    _FIXED.pack_into(buf, offset, msg.op, msg.htype, len(msg.chaddr), msg.hops, msg.xid,
                     msg.secs, msg.flags, msg.ciaddr, msg.yiaddr, msg.siaddr, msg.giaddr,
                     msg.chaddr, msg.sname, msg.file)
    i = offset + FIXED_LEN
    buf[i:i + 4] = MAGIC
    i += 4
    for code, value in msg.options.items():
        if code in (OPT_PAD, OPT_END) or not 0 <= code <= 255:
            raise ValueError(f"option code {code} cannot carry a value")
        chunks = [value[j:j + 255] for j in range(0, len(value), 255)] or [b""]
        for chunk in chunks:
            buf[i] = code
            buf[i + 1] = len(chunk)
            buf[i + 2:i + 2 + len(chunk)] = chunk
            i += 2 + len(chunk)
    buf[i] = OPT_END
    i += 1
    end = offset + length
    buf[i:end] = bytes(end - i)
    return length


def to_bytes(msg: DhcpMessage) -> bytes:
    """``msg`` built into a new buffer."""
    buf = bytearray(build_length(msg))
    build(buf, msg)
    return bytes(buf)


# -- option values ---------------------------------------------------------------------

def u32(value: int) -> bytes:
    return _U32.pack(value)


def u16(value: int) -> bytes:
    return _U16.pack(value)


def mask_of(plen: int) -> bytes:
    """The subnet mask of a prefix length (24 -> 255.255.255.0)."""
    return u32((0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF)


def prefix_of(mask: bytes) -> int | None:
    """The prefix length of a contiguous subnet mask, or None if it is not one."""
    v = _U32.unpack(mask)[0]
    plen = 32 - (((~v) & 0xFFFFFFFF) + 1).bit_length() + 1
    return plen if mask_of(plen) == mask else None
