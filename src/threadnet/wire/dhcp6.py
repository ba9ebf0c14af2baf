"""DHCPv6 messages (RFC 8415) between clients and servers, with the DNS options of RFC 3646.

A message is a type, a 24-bit transaction id and options (RFC 8415 8, 21). ``parse``
reads a whole UDP payload into a ``Message`` whose known options are fields (client and
server DUIDs, IA_NA with their addresses and status codes, the option request list,
preference, elapsed time, rapid commit, status, server unicast, reconfigure accept, DNS
servers, the domain search list, SOL_MAX_RT, INF_MAX_RT, the information refresh
time); options it does not know (IA_TA, IA_PD, vendor options...) stay raw in
``options``, in order. ``build`` is its inverse: ``parse(build(m)) == m``.

Parsing is strict and bounded. It raises ``Dhcp6Error`` (a FrameError) naming the
problem for: a message shorter than its header, a relay or unknown message type, an
option that runs past its container, a known option of the wrong length, an option that
may appear once appearing twice, an IAADDR outside an IA_NA or twice in one, a DUID
shorter than 3 or longer than 130 bytes (RFC 8415 11.1), a status message that is not
UTF-8, or a domain list with a compressed or over-long name (RFC 8415 10: names in
options are not compressed). Nesting is fixed (message > IA_NA > IAADDR > status code),
so nothing recurses on input. Random bytes raise ``Dhcp6Error`` and nothing else.

Addresses are text (``"fd00::100"``); DUIDs are bytes (``duid_ll``, ``duid_llt``,
``duid_text``, ``parse_duid``); lifetimes and T1/T2 are seconds, ``INFINITY`` (0xffffffff)
meaning forever (RFC 8415 7.7); elapsed time is in hundredths of a second.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field

from threadnet.errors import FrameError
from threadnet.wire import dns
from threadnet.wire.checksum import Buffer

CLIENT_PORT = 546
SERVER_PORT = 547
#: All_DHCP_Relay_Agents_and_Servers (RFC 8415 7.1)
ALL_SERVERS = ipaddress.IPv6Address("ff02::1:2").packed
HEADER_LEN = 4
INFINITY = 0xFFFFFFFF

# message types (RFC 8415 7.3)
SOLICIT = 1
ADVERTISE = 2
REQUEST = 3
CONFIRM = 4
RENEW = 5
REBIND = 6
REPLY = 7
RELEASE = 8
DECLINE = 9
RECONFIGURE = 10
INFORMATION_REQUEST = 11
RELAY_FORW = 12
RELAY_REPL = 13
MESSAGE_NAMES = {SOLICIT: "SOLICIT", ADVERTISE: "ADVERTISE", REQUEST: "REQUEST",
                 CONFIRM: "CONFIRM", RENEW: "RENEW", REBIND: "REBIND", REPLY: "REPLY",
                 RELEASE: "RELEASE", DECLINE: "DECLINE", RECONFIGURE: "RECONFIGURE",
                 INFORMATION_REQUEST: "INFORMATION-REQUEST"}

# option codes (RFC 8415 21, RFC 3646 3 and 4)
OPT_CLIENTID = 1
OPT_SERVERID = 2
OPT_IA_NA = 3
OPT_IA_TA = 4
OPT_IAADDR = 5
OPT_ORO = 6
OPT_PREFERENCE = 7
OPT_ELAPSED_TIME = 8
OPT_RELAY_MSG = 9
OPT_AUTH = 11
OPT_UNICAST = 12
OPT_STATUS_CODE = 13
OPT_RAPID_COMMIT = 14
OPT_RECONF_ACCEPT = 20
OPT_DNS_SERVERS = 23
OPT_DOMAIN_LIST = 24
OPT_IA_PD = 25
OPT_INFORMATION_REFRESH_TIME = 32
OPT_SOL_MAX_RT = 82
OPT_INF_MAX_RT = 83

# status codes (RFC 8415 21.13)
SUCCESS = 0
UNSPEC_FAIL = 1
NO_ADDRS_AVAIL = 2
NO_BINDING = 3
NOT_ON_LINK = 4
USE_MULTICAST = 5
NO_PREFIX_AVAIL = 6
STATUS_NAMES = {SUCCESS: "Success", UNSPEC_FAIL: "UnspecFail", NO_ADDRS_AVAIL: "NoAddrsAvail",
                NO_BINDING: "NoBinding", NOT_ON_LINK: "NotOnLink",
                USE_MULTICAST: "UseMulticast", NO_PREFIX_AVAIL: "NoPrefixAvail"}

# DUID types (RFC 8415 11.1) and the hardware type of Ethernet (RFC 826)
DUID_LLT = 1
DUID_EN = 2
DUID_LL = 3
DUID_UUID = 4
HW_ETHERNET = 1
#: DUID-LLT times count seconds from midnight UTC, January 1, 2000 (RFC 8415 11.2)
DUID_EPOCH = 946684800
MIN_DUID = 3  # the type and at least one byte
MAX_DUID = 130  # RFC 8415 11.1: at most 128 bytes after the 2-byte type

_HDR = struct.Struct("!I")
_OPT = struct.Struct("!HH")
_IA = struct.Struct("!III")
_LIFETIMES = struct.Struct("!II")
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")

#: top-level options that may appear once in a message
_ONCE = {OPT_CLIENTID: "CLIENTID", OPT_SERVERID: "SERVERID", OPT_ORO: "ORO",
         OPT_PREFERENCE: "PREFERENCE", OPT_ELAPSED_TIME: "ELAPSED_TIME",
         OPT_UNICAST: "UNICAST", OPT_STATUS_CODE: "STATUS_CODE",
         OPT_RAPID_COMMIT: "RAPID_COMMIT", OPT_RECONF_ACCEPT: "RECONF_ACCEPT",
         OPT_DNS_SERVERS: "DNS_SERVERS", OPT_DOMAIN_LIST: "DOMAIN_LIST",
         OPT_INFORMATION_REFRESH_TIME: "INFORMATION_REFRESH_TIME",
         OPT_SOL_MAX_RT: "SOL_MAX_RT", OPT_INF_MAX_RT: "INF_MAX_RT"}
#: fixed option lengths
_SIZE = {OPT_PREFERENCE: 1, OPT_ELAPSED_TIME: 2, OPT_RAPID_COMMIT: 0, OPT_RECONF_ACCEPT: 0,
         OPT_UNICAST: 16, OPT_INFORMATION_REFRESH_TIME: 4, OPT_SOL_MAX_RT: 4,
         OPT_INF_MAX_RT: 4}


class Dhcp6Error(FrameError):
    """A DHCPv6 message or option that is malformed (on the wire or as given to build)."""


@dataclass(slots=True)
class Status:
    """A Status Code option (RFC 8415 21.13)."""

    code: int
    message: str = ""

    def __str__(self) -> str:
        name = STATUS_NAMES.get(self.code, f"status {self.code}")
        return f"{name}: {self.message}" if self.message else name


@dataclass(slots=True)
class IaAddress:
    """An IA Address option (RFC 8415 21.6): an address with its lifetimes in seconds."""

    address: str
    preferred: int = 0
    valid: int = 0
    status: Status | None = None
    #: options inside it that are not a status code, raw
    options: list[tuple[int, bytes]] = field(default_factory=list)


@dataclass(slots=True)
class IaNa:
    """An Identity Association for Non-temporary Addresses (RFC 8415 21.4)."""

    iaid: int
    t1: int = 0
    t2: int = 0
    addresses: list[IaAddress] = field(default_factory=list)
    status: Status | None = None
    #: options inside it that are neither an address nor a status code, raw
    options: list[tuple[int, bytes]] = field(default_factory=list)


@dataclass(slots=True)
class Message:
    """A client/server message (RFC 8415 8): type, transaction id, options."""

    msg_type: int
    xid: int
    client_id: bytes | None = None
    server_id: bytes | None = None
    ia_na: list[IaNa] = field(default_factory=list)
    oro: list[int] | None = None
    preference: int | None = None
    elapsed: int | None = None  # hundredths of a second
    rapid_commit: bool = False
    status: Status | None = None
    unicast: str | None = None
    reconf_accept: bool = False
    dns_servers: list[str] | None = None
    domains: list[str] | None = None
    sol_max_rt: int | None = None
    inf_max_rt: int | None = None
    refresh_time: int | None = None
    #: options not above, raw, in order
    options: list[tuple[int, bytes]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return MESSAGE_NAMES.get(self.msg_type, f"type {self.msg_type}")

    def ia(self, iaid: int) -> IaNa | None:
        return next((ia for ia in self.ia_na if ia.iaid == iaid), None)


# -- DUIDs ---------------------------------------------------------------------------------

def duid_ll(mac: bytes) -> bytes:
    """DUID-LL (RFC 8415 11.4) of an Ethernet MAC."""
    return struct.pack("!HH", DUID_LL, HW_ETHERNET) + bytes(mac)


def duid_llt(mac: bytes, unix_time: float) -> bytes:
    """DUID-LLT (RFC 8415 11.2) of an Ethernet MAC at ``unix_time`` (seconds since 1970)."""
    return struct.pack("!HHI", DUID_LLT, HW_ETHERNET,
                       int(unix_time - DUID_EPOCH) & 0xFFFFFFFF) + bytes(mac)


def duid_mac(duid: bytes) -> bytes | None:
    """The Ethernet MAC inside a DUID-LL or DUID-LLT, else None."""
    if len(duid) == 10 and duid[:4] == struct.pack("!HH", DUID_LL, HW_ETHERNET):
        return bytes(duid[4:])
    if len(duid) == 14 and duid[:4] == struct.pack("!HH", DUID_LLT, HW_ETHERNET):
        return bytes(duid[8:])
    return None


def duid_text(duid: bytes) -> str:
    """A DUID as dnsmasq and dhclient print it: hex bytes joined by colons."""
    return ":".join(f"{b:02x}" for b in duid)


def parse_duid(text: str) -> bytes:
    """A DUID from hex (``00:03:00:01:...``, ``00-03-...`` or plain); ValueError if bad."""
    raw = text.strip().replace(":", "").replace("-", "")
    try:
        duid = bytes.fromhex(raw)
    except ValueError:
        raise ValueError(f"bad DUID {text!r}: not hex") from None
    if not MIN_DUID <= len(duid) <= MAX_DUID:
        raise ValueError(f"bad DUID {text!r}: {len(duid)} bytes, not {MIN_DUID}..{MAX_DUID}")
    return duid


# -- parsing -------------------------------------------------------------------------------

def _options(data: Buffer, start: int, end: int, where: str):
    """(code, start, end) of each option in data[start:end]."""
    off = start
    while off < end:
        if off + 4 > end:
            raise Dhcp6Error(f"option header cut short in {where}")
        code, size = _OPT.unpack_from(data, off)
        off += 4
        if off + size > end:
            raise Dhcp6Error(f"option {code} of {size} bytes runs past the end of {where}")
        yield code, off, off + size
        off += size


def _status(data: Buffer, start: int, end: int) -> Status:
    if end - start < 2:
        raise Dhcp6Error(f"STATUS_CODE of {end - start} bytes (at least 2)")
    try:
        text = bytes(data[start + 2:end]).decode("utf-8")
    except UnicodeDecodeError:
        raise Dhcp6Error("STATUS_CODE message is not UTF-8") from None
    return Status(_U16.unpack_from(data, start)[0], text)


def _address(data: Buffer, start: int) -> str:
    return str(ipaddress.IPv6Address(bytes(data[start:start + 16])))


def _duid(data: Buffer, start: int, end: int, name: str) -> bytes:
    if not MIN_DUID <= end - start <= MAX_DUID:
        raise Dhcp6Error(f"{name} DUID of {end - start} bytes (RFC 8415 11.1: "
                         f"{MIN_DUID}..{MAX_DUID})")
    return bytes(data[start:end])


def _iaaddr(data: Buffer, start: int, end: int) -> IaAddress:
    if end - start < 24:
        raise Dhcp6Error(f"IAADDR of {end - start} bytes (at least 24)")
    preferred, valid = _LIFETIMES.unpack_from(data, start + 16)
    a = IaAddress(_address(data, start), preferred, valid)
    for code, s, e in _options(data, start + 24, end, "an IAADDR"):
        if code == OPT_STATUS_CODE:
            if a.status is not None:
                raise Dhcp6Error("two STATUS_CODE options in one IAADDR")
            a.status = _status(data, s, e)
        else:
            a.options.append((code, bytes(data[s:e])))
    return a


def _ia_na(data: Buffer, start: int, end: int) -> IaNa:
    if end - start < 12:
        raise Dhcp6Error(f"IA_NA of {end - start} bytes (at least 12)")
    ia = IaNa(*_IA.unpack_from(data, start))
    seen: set[str] = set()
    for code, s, e in _options(data, start + 12, end, "an IA_NA"):
        if code == OPT_IAADDR:
            a = _iaaddr(data, s, e)
            if a.address in seen:
                raise Dhcp6Error(f"address {a.address} twice in IA_NA {ia.iaid}")
            seen.add(a.address)
            ia.addresses.append(a)
        elif code == OPT_STATUS_CODE:
            if ia.status is not None:
                raise Dhcp6Error(f"two STATUS_CODE options in IA_NA {ia.iaid}")
            ia.status = _status(data, s, e)
        else:
            ia.options.append((code, bytes(data[s:e])))
    return ia


def _domain_list(data: Buffer, start: int, end: int) -> list[str]:
    """Uncompressed names one after another (RFC 8415 10, RFC 1035 3.1)."""
    names: list[str] = []
    labels: list[bytes] = []
    total = 1
    off = start
    while off < end:
        length = data[off]
        if length == 0:
            names.append(dns.name_from_labels(labels))
            labels, total = [], 1
            off += 1
            continue
        if length > dns.MAX_LABEL:
            raise Dhcp6Error(f"DOMAIN_LIST: label type 0x{length & 0xC0:02x} or length "
                             f"{length} (names here are not compressed)")
        total += length + 1
        if total > dns.MAX_NAME:
            raise Dhcp6Error("DOMAIN_LIST: a name longer than 255 bytes")
        if off + 1 + length > end:
            raise Dhcp6Error("DOMAIN_LIST: a label runs past the end of the option")
        labels.append(bytes(data[off + 1:off + 1 + length]))
        off += 1 + length
    if labels:
        raise Dhcp6Error("DOMAIN_LIST: the last name has no root label")
    return names


def parse(data: Buffer) -> Message:
    """Parse a whole client/server message. Raises Dhcp6Error when it is malformed."""
    n = len(data)
    if n < HEADER_LEN:
        raise Dhcp6Error(f"DHCPv6 message of {n} bytes is shorter than its header")
    word = _HDR.unpack_from(data)[0]
    msg_type = word >> 24
    if msg_type in (RELAY_FORW, RELAY_REPL):
        raise Dhcp6Error(f"relay message (type {msg_type}): relays are not supported")
    if msg_type not in MESSAGE_NAMES:
        raise Dhcp6Error(f"unknown message type {msg_type}")
    msg = Message(msg_type, word & 0xFFFFFF)
    seen: set[int] = set()
    iaids: set[int] = set()
    for code, s, e in _options(data, HEADER_LEN, n, "the message"):
        size = e - s
        if code in _ONCE:
            if code in seen:
                raise Dhcp6Error(f"option {_ONCE[code]} appears twice")
            seen.add(code)
        want = _SIZE.get(code)
        if want is not None and size != want:
            raise Dhcp6Error(f"option {_ONCE[code]} of {size} bytes (must be {want})")
        if code == OPT_CLIENTID:
            msg.client_id = _duid(data, s, e, "CLIENTID")
        elif code == OPT_SERVERID:
            msg.server_id = _duid(data, s, e, "SERVERID")
        elif code == OPT_IA_NA:
            ia = _ia_na(data, s, e)
            if ia.iaid in iaids:
                raise Dhcp6Error(f"two IA_NA options with IAID {ia.iaid}")
            iaids.add(ia.iaid)
            msg.ia_na.append(ia)
        elif code == OPT_IAADDR:
            raise Dhcp6Error("IAADDR outside an IA_NA")
        elif code == OPT_ORO:
            if size % 2:
                raise Dhcp6Error(f"ORO of {size} bytes (not a list of 2-byte codes)")
            msg.oro = [_U16.unpack_from(data, i)[0] for i in range(s, e, 2)]
        elif code == OPT_PREFERENCE:
            msg.preference = data[s]
        elif code == OPT_ELAPSED_TIME:
            msg.elapsed = _U16.unpack_from(data, s)[0]
        elif code == OPT_RAPID_COMMIT:
            msg.rapid_commit = True
        elif code == OPT_RECONF_ACCEPT:
            msg.reconf_accept = True
        elif code == OPT_STATUS_CODE:
            msg.status = _status(data, s, e)
        elif code == OPT_UNICAST:
            msg.unicast = _address(data, s)
        elif code == OPT_DNS_SERVERS:
            if size % 16:
                raise Dhcp6Error(f"DNS_SERVERS of {size} bytes (not a list of addresses)")
            msg.dns_servers = [_address(data, i) for i in range(s, e, 16)]
        elif code == OPT_DOMAIN_LIST:
            msg.domains = _domain_list(data, s, e)
        elif code == OPT_SOL_MAX_RT:
            msg.sol_max_rt = _U32.unpack_from(data, s)[0]
        elif code == OPT_INF_MAX_RT:
            msg.inf_max_rt = _U32.unpack_from(data, s)[0]
        elif code == OPT_INFORMATION_REFRESH_TIME:
            msg.refresh_time = _U32.unpack_from(data, s)[0]
        else:
            msg.options.append((code, bytes(data[s:e])))
    return msg


# -- building ------------------------------------------------------------------------------

def _put(buf: bytearray, code: int, body: bytes | bytearray) -> None:
    if len(body) > 0xFFFF:
        raise Dhcp6Error(f"option {code} longer than 65535 bytes")
    buf += _OPT.pack(code, len(body))
    buf += body


def _packed6(text: str) -> bytes:
    try:
        return ipaddress.IPv6Address(text).packed
    except ValueError:
        raise Dhcp6Error(f"{text!r} is not an IPv6 address") from None


def _status_body(st: Status) -> bytes:
    return _U16.pack(st.code) + st.message.encode("utf-8")


def _ia_body(ia: IaNa) -> bytearray:
    body = bytearray(_IA.pack(ia.iaid, ia.t1, ia.t2))
    for a in ia.addresses:
        inner = bytearray(_packed6(a.address) + _LIFETIMES.pack(a.preferred, a.valid))
        if a.status is not None:
            _put(inner, OPT_STATUS_CODE, _status_body(a.status))
        for code, raw in a.options:
            _put(inner, code, raw)
        _put(body, OPT_IAADDR, inner)
    if ia.status is not None:
        _put(body, OPT_STATUS_CODE, _status_body(ia.status))
    for code, raw in ia.options:
        _put(body, code, raw)
    return body


def encode_domains(names: list[str]) -> bytes:
    """A domain list's wire form: each name uncompressed (RFC 8415 10)."""
    try:
        return b"".join(dns.encode_name(name) for name in names)
    except dns.DnsError as exc:
        raise Dhcp6Error(f"DOMAIN_LIST: {exc}") from None


def build(msg: Message) -> bytes:
    """The wire form of ``msg``. Raises Dhcp6Error for a value it cannot encode."""
    try:
        if msg.msg_type not in MESSAGE_NAMES or not 0 <= msg.xid <= 0xFFFFFF:
            raise Dhcp6Error(f"bad message type {msg.msg_type} or transaction id {msg.xid}")
        buf = bytearray(_HDR.pack(msg.msg_type << 24 | msg.xid))
        for code, duid in ((OPT_CLIENTID, msg.client_id), (OPT_SERVERID, msg.server_id)):
            if duid is not None:
                if not MIN_DUID <= len(duid) <= MAX_DUID:
                    raise Dhcp6Error(f"a DUID of {len(duid)} bytes")
                _put(buf, code, duid)
        for ia in msg.ia_na:
            _put(buf, OPT_IA_NA, _ia_body(ia))
        if msg.oro is not None:
            _put(buf, OPT_ORO, b"".join(_U16.pack(c) for c in msg.oro))
        if msg.preference is not None:
            _put(buf, OPT_PREFERENCE, bytes([msg.preference]))
        if msg.elapsed is not None:
            _put(buf, OPT_ELAPSED_TIME, _U16.pack(msg.elapsed))
        if msg.rapid_commit:
            _put(buf, OPT_RAPID_COMMIT, b"")
        if msg.reconf_accept:
            _put(buf, OPT_RECONF_ACCEPT, b"")
        if msg.status is not None:
            _put(buf, OPT_STATUS_CODE, _status_body(msg.status))
        if msg.unicast is not None:
            _put(buf, OPT_UNICAST, _packed6(msg.unicast))
        if msg.dns_servers is not None:
            _put(buf, OPT_DNS_SERVERS, b"".join(_packed6(a) for a in msg.dns_servers))
        if msg.domains is not None:
            _put(buf, OPT_DOMAIN_LIST, encode_domains(msg.domains))
        for code, value in ((OPT_SOL_MAX_RT, msg.sol_max_rt), (OPT_INF_MAX_RT, msg.inf_max_rt),
                            (OPT_INFORMATION_REFRESH_TIME, msg.refresh_time)):
            if value is not None:
                _put(buf, code, _U32.pack(value))
        for code, raw in msg.options:
            if code in _ONCE or code in (OPT_IA_NA, OPT_IAADDR):
                raise Dhcp6Error(f"option {code} given raw: use its field")
            _put(buf, code, raw)
    except (struct.error, ValueError, TypeError, OverflowError) as exc:
        if isinstance(exc, Dhcp6Error):
            raise
        raise Dhcp6Error(f"cannot encode {msg.name}: {exc}") from None
    return bytes(buf)
