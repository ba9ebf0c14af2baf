"""``threadnet bench wire``: microseconds per operation of the wire formats' hot paths.

Parsing one Ethernet/IPv4/TCP frame (with and without checksum verification), the
Internet checksum of 1500 bytes, and building a TCP/IPv4 segment of 1448 bytes of
payload into a reused buffer. Compare with docs' performance notes: ~0.45 µs to unpack
the three headers, ~3.9 µs per 1500-byte checksum on Debian's python3.
"""

from __future__ import annotations

import argparse
import os
import sys
import timeit

from threadnet.bench import interpreter
from threadnet.wire import checksum, ethernet, ipv4, tcp

SRC = bytes([10, 0, 0, 1])
DST = bytes([10, 0, 0, 2])


def _frame(payload_len: int) -> bytearray:
    buf = bytearray(14 + 20 + 32 + payload_len)
    ethernet.build(buf, bytes.fromhex("020000000002"), bytes.fromhex("020000000001"),
                   ethernet.ETH_P_IPV4)
    n = tcp.build(buf, SRC, DST, 40000, 80, 1, 2, tcp.ACK | tcp.PSH, 65535,
                  os.urandom(payload_len), ts=(1, 2), offset=34)
    ipv4.build(buf, SRC, DST, ipv4.PROTO_TCP, n, offset=14)
    return buf


def parse_frame(frame: bytearray | memoryview, verify: bool = True) -> int:
    """Parse Ethernet, IPv4 and TCP headers as the stack's receive path would."""
    view = memoryview(frame)
    _dst, _src, etype, _vlan, off = ethernet.parse(view)
    ip = ipv4.parse(view[off:], verify)
    seg = view[off + ip[9]:off + ip[1]]
    hdr = tcp.parse(seg, ip[7], ip[8], verify)
    if hdr[9]:
        tcp.parse_options(hdr[9])
    return len(seg) - hdr[4]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="threadnet bench wire", description=__doc__.split("\n")[0])
    p.add_argument("--number", type=int, default=100_000, help="operations per measurement")
    p.add_argument("--repeat", type=int, default=5, help="measurements (the best is shown)")
    args = p.parse_args(argv)

    small = _frame(0)
    full = _frame(1448)
    data = os.urandom(1500)
    out = bytearray(2048)
    payload = os.urandom(1448)

    def build_segment() -> None:
        n = tcp.build(out, SRC, DST, 40000, 80, 1, 2, tcp.ACK, 65535, payload, ts=(1, 2),
                      offset=34)
        ipv4.build(out, SRC, DST, ipv4.PROTO_TCP, n, offset=14)

    cases = [
        ("parse Ethernet/IPv4/TCP, 66 B, checksums verified", lambda: parse_frame(small)),
        ("parse Ethernet/IPv4/TCP, 66 B, checksums skipped", lambda: parse_frame(small, False)),
        ("parse Ethernet/IPv4/TCP, 1514 B, checksums verified", lambda: parse_frame(full)),
        ("Internet checksum of 1500 B", lambda: checksum.checksum(data)),
        ("build TCP/IPv4 segment, 1448 B payload copied", build_segment),
    ]
    print(f"interpreter: {interpreter()}")
    width = max(len(name) for name, _ in cases)
    for name, fn in cases:
        best = min(timeit.repeat(fn, number=args.number, repeat=args.repeat)) / args.number
        print(f"{name:<{width}}  {best * 1e6:7.2f} µs/op")
    return 0


if __name__ == "__main__":
    sys.exit(main())
