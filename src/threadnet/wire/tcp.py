"""The TCP header and options (RFC 9293, RFC 7323, RFC 2018) over IPv4 and IPv6.

The checksum covers a pseudo-header; its sum is the same formula for both IP versions,
so the functions take the two addresses (4 or 16 bytes) and need no version flag.
``parse`` returns the options as a view; ``parse_options`` reads them when the
connection needs them (on SYNs, and for timestamps and SACK on established ones).

The stack's hot path has fast helpers here too, each tested against scapy and the
general functions: ``parse_header`` (what the stack's TCP input reads of every segment,
``parse`` is built on it), ``set_checksums``/``set_partial_checksums`` (the output of
established connections, a batch at a time, after ``HEADER``/``HEADER_TS``), and for
receive coalescing ``GRO4``, ``verify_frames4`` and ``coalesce4``.
"""

from __future__ import annotations

import struct

from threadnet.errors import FrameError
from threadnet.wire.checksum import Buffer, checksum, pseudo_header

HEADER_LEN = 20
MAX_HEADER_LEN = 60
MAX_OPTIONS_LEN = 40
PROTO_TCP = 6

FIN = 0x01
SYN = 0x02
RST = 0x04
PSH = 0x08
ACK = 0x10
URG = 0x20
ECE = 0x40
CWR = 0x80

OPT_EOL = 0
OPT_NOP = 1
OPT_MSS = 2
OPT_WSCALE = 3
OPT_SACK_PERMITTED = 4
OPT_SACK = 5
OPT_TIMESTAMPS = 8

MAX_WSCALE = 14  # RFC 7323 2.3
MAX_SACK_BLOCKS = 4  # (40 - 2) // 8

_HDR = struct.Struct("!HHIIHHHH")
_FIXED = struct.Struct("!HHIIHH")  # ports, seq, ack, data offset + flags, window
_QUOTED = struct.Struct("!HHI")  # ports, seq: what an ICMP error quotes at least
_CSUM_URG = struct.Struct("!HH")
_CSUM = struct.Struct("!H")
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_TS = struct.Struct("!II")
_BLOCK = struct.Struct("!II")
_NOP_NOP_TS = struct.Struct("!III")
# option writers
_MSS = struct.Struct("!BBH")
_SACKOK_TS = struct.Struct("!BBBBII")  # SACK-permitted + timestamps, or NOP NOP + timestamps
_NOP_WS = struct.Struct("!BBBB")
_NOP_NOP_HEAD = struct.Struct("!BBBB")  # NOP NOP then a 2-byte option head

#: the hot path's fixed headers (``stack/tcplayer.py`` packs them into a frame after the
#: IP layer's headroom): a TCP header without options, and one with the timestamps option
#: as every segment of a connection that negotiated it carries it (NOP NOP TS, RFC 7323
#: appendix A): ports, seq, ack, data offset + flags, window, checksum, urgent (+ the
#: option's first word ``NOP_NOP_TS``, TSval, TSecr)
HEADER = struct.Struct("!HHIIHHHH")
HEADER_TS = struct.Struct("!HHIIHHHHIII")
#: the data offset of ``HEADER`` (5 words) and ``HEADER_TS`` (8), in the data offset +
#: flags word: OR the flags in
HEADER_OFFSET = 5 << 12
HEADER_TS_OFFSET = 8 << 12
NOP_NOP_TS = 0x0101080A
TS_HEAD = b"\x01\x01\x08\x0a"  # the first 4 bytes of such an option block
TS_OPTION = struct.Struct("!III")  # NOP NOP kind len, TSval, TSecr
#: what receive coalescing (``stack/gro.py``) reads of an Ethernet + IPv4 (no options) +
#: TCP frame with the timestamps option, in one call: destination MAC, EtherType,
#: version/IHL, total length, flags+offset, protocol, addresses, ports, seq, ack,
#: data offset + flags, window, the 12 option bytes
GRO4 = struct.Struct("!6s6xHBxH2xHxB2x8s4sIIHH4x12s")
#: a GRO4 frame's headers: Ethernet, IPv4 without options, TCP with timestamps; the
#: payload starts here
GRO4_HEADERS_LEN = 14 + 20 + 32
#: a segment receive coalescing may merge has, under this mask of its data offset +
#: flags word, ``GRO4_MERGEABLE``: a 32-byte header (timestamps) and ACK, with or
#: without PSH, and no other flag (the reserved bits are not looked at)
GRO4_MERGEABLE_MASK = 0xF0F7
GRO4_MERGEABLE = HEADER_TS_OFFSET | ACK

_KNOWN_LENGTHS = {OPT_MSS: 4, OPT_WSCALE: 3, OPT_SACK_PERMITTED: 2, OPT_TIMESTAMPS: 10}


def parse_header(data: Buffer, src: bytes, dst: bytes, verify: bool = True
                 ) -> tuple[int, int, int, int, int, int, int]:
    """The fields of the TCP header of ``data`` that a receiver acts on, checked as
    ``parse`` checks them, with no object made but the tuple: the stack's TCP input.

    Returns ``(sport, dport, seq, ack, data_offset, flags, window)``; the options are
    ``data[20:data_offset]`` and the payload ``data[data_offset:]``. Raises FrameError
    as ``parse`` does.
    """
    n = len(data)
    if n < HEADER_LEN:
        raise FrameError(f"TCP segment of {n} bytes is shorter than its 20-byte header")
    sport, dport, seq, ack, off_flags, window = _FIXED.unpack_from(data)
    hl = (off_flags >> 12) << 2
    if hl < HEADER_LEN:
        raise FrameError(f"TCP data offset {hl} is below the 20-byte minimum")
    if hl > n:
        raise FrameError(f"TCP data offset {hl} exceeds the {n}-byte segment")
    if verify:
        # checksum.verify with the pseudo-header's sum inlined (see
        # checksum.pseudo_header); never 0: proto is 6
        v = int.from_bytes(data, "big") % 0xFFFF  # reduced first: a sum would copy it
        if n & 1:
            v <<= 8
        if (v + int.from_bytes(src, "big") + int.from_bytes(dst, "big") + PROTO_TCP + n) % 0xFFFF:
            raise FrameError("TCP checksum mismatch")
    return sport, dport, seq, ack, hl, off_flags & 0xFF, window


def parse_quoted(data: Buffer) -> tuple[int, int, int]:
    """The ports and sequence number of the TCP header that an ICMP error quotes (its
    first 8 bytes, all that RFC 792 and RFC 4443 promise): ``(sport, dport, seq)``.
    Raises FrameError when fewer than 8 bytes are there."""
    if len(data) < 8:
        raise FrameError(f"quoted TCP header of {len(data)} bytes is shorter than 8 bytes")
    return _QUOTED.unpack_from(data)


def parse(data: Buffer, src: bytes, dst: bytes, verify: bool = True
          ) -> tuple[int, int, int, int, int, int, int, int, int, memoryview | bytes]:
    """Parse the TCP header of ``data``, exactly the IP payload of the packet from
    ``src`` to ``dst`` (4-byte addresses for IPv4, 16 for IPv6).

    Returns ``(sport, dport, seq, ack, data_offset, flags, window, checksum, urgent,
    options)``: ``data_offset`` is the header length in bytes, so the payload is
    ``data[data_offset:]``; ``flags`` holds FIN..CWR; ``options`` is a view of the
    option bytes (``b""`` when there are none).
    Raises FrameError on a short segment, a data offset below 20 or past the segment,
    or a wrong checksum (unless ``verify`` is false).
    """
    sport, dport, seq, ack, hl, flags, window = parse_header(data, src, dst, verify)
    csum, urgent = _CSUM_URG.unpack_from(data, 16)
    options = memoryview(data)[HEADER_LEN:hl] if hl > HEADER_LEN else b""
    return sport, dport, seq, ack, hl, flags, window, csum, urgent, options


def parse_options(options: Buffer
                  ) -> tuple[int | None, int | None, bool, tuple[tuple[int, int], ...],
                             int | None, int | None]:
    """Read TCP options.

    Returns ``(mss, wscale, sack_permitted, sack_blocks, ts_val, ts_ecr)``; absent
    values are None (``sack_blocks`` is a tuple of ``(left, right)``, empty when absent).
    A window scale above 14 is read as 14 (RFC 7323 2.3). Unknown options are skipped;
    an option without its length byte, with a length below 2 or running past the end,
    or a known option with the wrong length raises FrameError.
    """
    n = len(options)
    if n == 12:  # NOP NOP timestamps: what every established segment carries
        head, ts_val, ts_ecr = _NOP_NOP_TS.unpack_from(options)
        if head == 0x0101080A:
            return None, None, False, (), ts_val, ts_ecr
    mss = wscale = ts_val = ts_ecr = None
    sack_permitted = False
    blocks: tuple[tuple[int, int], ...] = ()
    i = 0
    while i < n:
        kind = options[i]
        if kind == OPT_EOL:
            break
        if kind == OPT_NOP:
            i += 1
            continue
        if i + 1 >= n:
            raise FrameError(f"TCP option {kind} at offset {i} has no length byte")
        length = options[i + 1]
        if length < 2 or i + length > n:
            raise FrameError(f"TCP option {kind} at offset {i} has bad length {length}")
        if kind == OPT_SACK:
            if length < 10 or (length - 2) % 8:
                raise FrameError(f"TCP SACK option of length {length} is not 2 + 8n bytes")
            blocks = tuple(_BLOCK.unpack_from(options, j) for j in range(i + 2, i + length, 8))
        else:
            expected = _KNOWN_LENGTHS.get(kind)
            if expected is not None:
                if length != expected:
                    raise FrameError(f"TCP option {kind} of length {length} "
                                     f"(expected {expected})")
                if kind == OPT_TIMESTAMPS:
                    ts_val, ts_ecr = _TS.unpack_from(options, i + 2)
                elif kind == OPT_MSS:
                    (mss,) = _U16.unpack_from(options, i + 2)
                elif kind == OPT_WSCALE:
                    wscale = min(options[i + 2], MAX_WSCALE)
                else:
                    sack_permitted = True
        i += length
    return mss, wscale, sack_permitted, blocks, ts_val, ts_ecr


def options_length(mss: int | None = None, wscale: int | None = None,
                   sack_permitted: bool = False, sack_blocks: tuple[tuple[int, int], ...] = (),
                   ts: tuple[int, int] | None = None) -> int:
    """The length of the options ``build`` writes for these values (a multiple of 4)."""
    n = 0
    if mss is not None:
        n += 4
    if ts is not None:
        n += 12  # SACK-permitted fits in the two bytes that are NOPs otherwise
    elif sack_permitted:
        n += 4
    if wscale is not None:
        n += 4
    if sack_blocks:
        n += 4 + 8 * len(sack_blocks)
    return n


def _write_options(buf: bytearray | memoryview, pos: int, mss: int | None, wscale: int | None,
                   sack_permitted: bool, sack_blocks: tuple[tuple[int, int], ...],
                   ts: tuple[int, int] | None) -> int:
    # Linux's layout: every option starts aligned so that its fields are, NOPs fill in
    if mss is not None:
        _MSS.pack_into(buf, pos, OPT_MSS, 4, mss)
        pos += 4
    if ts is not None:
        if sack_permitted:
            _SACKOK_TS.pack_into(buf, pos, OPT_SACK_PERMITTED, 2, OPT_TIMESTAMPS, 10, ts[0], ts[1])
        else:
            _SACKOK_TS.pack_into(buf, pos, OPT_NOP, OPT_NOP, OPT_TIMESTAMPS, 10, ts[0], ts[1])
        pos += 12
    elif sack_permitted:
        _NOP_NOP_HEAD.pack_into(buf, pos, OPT_NOP, OPT_NOP, OPT_SACK_PERMITTED, 2)
        pos += 4
    if wscale is not None:
        _NOP_WS.pack_into(buf, pos, OPT_NOP, OPT_WSCALE, 3, wscale)
        pos += 4
    if sack_blocks:
        _NOP_NOP_HEAD.pack_into(buf, pos, OPT_NOP, OPT_NOP, OPT_SACK, 2 + 8 * len(sack_blocks))
        pos += 4
        for left, right in sack_blocks:
            _BLOCK.pack_into(buf, pos, left, right)
            pos += 8
    return pos


def build_header(buf: bytearray | memoryview, src: bytes, dst: bytes, sport: int, dport: int,
                 seq: int, ack: int, flags: int, window: int, payload_len: int, *,
                 urgent: int = 0, mss: int | None = None, wscale: int | None = None,
                 sack_permitted: bool = False, sack_blocks: tuple[tuple[int, int], ...] = (),
                 ts: tuple[int, int] | None = None, offset: int = 0) -> int:
    """Write a TCP header with options at ``offset`` for the ``payload_len`` bytes already
    in ``buf`` after it (at ``offset + 20 + options_length(...)``), with the checksum.

    Options: ``mss``, ``wscale`` (0..14), ``sack_permitted``, ``sack_blocks`` (up to 4
    ``(left, right)`` pairs, 3 with timestamps) and ``ts`` = ``(ts_val, ts_ecr)``, laid
    out on 4-byte boundaries with NOPs. Returns the header length.
    """
    opt_len = options_length(mss, wscale, sack_permitted, sack_blocks, ts)
    if opt_len > MAX_OPTIONS_LEN:
        raise ValueError(f"TCP options of {opt_len} bytes exceed 40 bytes")
    if wscale is not None and not 0 <= wscale <= MAX_WSCALE:
        raise ValueError(f"TCP window scale {wscale} out of range 0..14")
    hl = HEADER_LEN + opt_len
    end = offset + hl + payload_len
    if end > len(buf) or payload_len < 0:
        raise ValueError(f"TCP segment of {hl + payload_len} bytes does not fit the buffer")
    _write_header(buf, offset, sport, dport, seq, ack, flags, window, urgent, mss, wscale,
                  sack_permitted, sack_blocks, ts, hl)
    csum = checksum(memoryview(buf)[offset:end], pseudo_header(src, dst, PROTO_TCP, end - offset))
    _CSUM.pack_into(buf, offset + 16, csum)
    return hl


def _write_header(buf: bytearray | memoryview, offset: int, sport: int, dport: int, seq: int,
                  ack: int, flags: int, window: int, urgent: int, mss: int | None,
                  wscale: int | None, sack_permitted: bool,
                  sack_blocks: tuple[tuple[int, int], ...], ts: tuple[int, int] | None,
                  hl: int) -> None:
    _HDR.pack_into(buf, offset, sport, dport, seq, ack, (hl << 10) | flags, window, 0, urgent)
    if hl > HEADER_LEN:
        _write_options(buf, offset + HEADER_LEN, mss, wscale, sack_permitted, sack_blocks, ts)


def build(buf: bytearray | memoryview, src: bytes, dst: bytes, sport: int, dport: int,
          seq: int, ack: int, flags: int, window: int, payload: Buffer = b"", *,
          urgent: int = 0, mss: int | None = None, wscale: int | None = None,
          sack_permitted: bool = False, sack_blocks: tuple[tuple[int, int], ...] = (),
          ts: tuple[int, int] | None = None, offset: int = 0) -> int:
    """Write a TCP segment, header and options (as ``build_header``) and a copy of
    ``payload``, into ``buf`` at ``offset``. Returns the segment length."""
    opt_len = options_length(mss, wscale, sack_permitted, sack_blocks, ts)
    if opt_len > MAX_OPTIONS_LEN:
        raise ValueError(f"TCP options of {opt_len} bytes exceed 40 bytes")
    if wscale is not None and not 0 <= wscale <= MAX_WSCALE:
        raise ValueError(f"TCP window scale {wscale} out of range 0..14")
    hl = HEADER_LEN + opt_len
    start = offset + hl
    n = len(payload)
    end = start + n
    if end > len(buf):
        raise ValueError(f"TCP segment of {hl + n} bytes does not fit the buffer")
    buf[start:end] = payload
    _write_header(buf, offset, sport, dport, seq, ack, flags, window, urgent, mss, wscale,
                  sack_permitted, sack_blocks, ts, hl)
    # Sum the header and the caller's payload apart: the header has an even length, so
    # the payload's words stay aligned, and reading ``payload`` (bytes, usually) directly
    # saves copying the segment out of ``buf`` for int.from_bytes.
    v = int.from_bytes(payload, "big") % 0xFFFF  # reduced first: a sum would copy it
    if n & 1:
        v <<= 8  # RFC 1071: an odd last byte is padded to a word
    v += (int.from_bytes(memoryview(buf)[offset:start], "big")
          + int.from_bytes(src, "big") + int.from_bytes(dst, "big") + PROTO_TCP + hl + n)
    s = v % 0xFFFF
    _CSUM.pack_into(buf, offset + 16, 0xFFFF - s if s else 0)  # v > 0: proto is 6
    return hl + n


# -- the output of established connections (stack/tcplayer.py) -----------------------------
def set_checksums(frames: list[bytearray], payloads: list[Buffer], start: int,
                  psum: int) -> None:
    """Write the TCP checksum of each of ``frames``: its TCP segment runs from ``start``
    to its end (the checksum field zero) and ends with the data ``payloads[i]``, which
    the caller copied in (``HEADER``/``HEADER_TS`` before it). ``psum`` is the sum of
    the pseudo-header without its length (``checksum.pseudo_header(src, dst,
    PROTO_TCP, 0)`` of the flow's addresses). One call per batch.

    The header and the data are summed apart, the data from the caller's object (a view
    of a send buffer, say), as ``build`` does: its integer is reduced before anything is
    added to it, and data of zeros makes the integer 0, whose reduction costs nothing,
    where a sum over the whole segment would take as long as for any data (the header's
    bits make it a full-size integer)."""
    from_bytes = int.from_bytes
    pack = _CSUM.pack_into
    for frame, payload in zip(frames, payloads, strict=True):
        n = len(payload)
        body = len(frame) - n
        v = from_bytes(frame[start:body], "big") + psum + body - start + n
        if n:
            d = from_bytes(payload, "big") % 0xFFFF  # reduced first: a sum would copy it
            # RFC 1071: an odd last byte is padded to a word (the header's length is even)
            v += d << 8 if n & 1 else d
        s = v % 0xFFFF
        pack(frame, start + 16, 0xFFFF - s if s else 0)  # the sum is never +0: proto is 6


def set_partial_checksums(frames: list[bytearray], start: int, psum: int) -> None:
    """``set_checksums`` for an offload link (``vnet.F_NEEDS_CSUM``): each checksum field
    gets the uncomplemented sum of the pseudo-header, its length included, and the link
    (the kernel) completes it over the segment."""
    pack = _CSUM.pack_into
    for frame in frames:
        pack(frame, start + 16, (psum + len(frame) - start) % 0xFFFF)


# -- receive coalescing (stack/gro.py) ----------------------------------------------------
def verify_frames4(frames: list[memoryview], src: bytes, dst: bytes) -> bool:
    """Whether every one of ``frames`` (Ethernet, IPv4 without options, TCP: what GRO4
    reads, each exactly its IP datagram long) has a right IPv4 header checksum and a
    right TCP checksum for a segment from ``src`` to ``dst``. One call per run."""
    from_bytes = int.from_bytes
    psum = from_bytes(src, "big") + from_bytes(dst, "big") + PROTO_TCP
    for f in frames:
        if from_bytes(f[14:34], "big") % 0xFFFF:  # ipv4.checksum_ok inlined
            return False
        n = len(f) - 34
        v = from_bytes(f[34:], "big") % 0xFFFF  # reduced first: a sum would copy it
        if n & 1:
            v <<= 8
        if (v + psum + n) % 0xFFFF:
            return False
    return True


def coalesce4(frames: list[memoryview]) -> bytearray:
    """One TCP segment from a run of GRO4 frames that continue each other: the first
    frame's TCP header, with the last frame's flags (a PSH), then every frame's payload
    in order. Its checksum field is the first frame's, not the merged segment's: the
    caller has checked each frame (``verify_frames4``) and passes it on as checked."""
    th = GRO4_HEADERS_LEN - 32  # where the TCP header starts
    seg = bytearray(frames[0][th:GRO4_HEADERS_LEN])
    seg[13] = frames[-1][th + 13]  # the flags
    seg += b"".join([f[GRO4_HEADERS_LEN:] for f in frames])
    return seg
