"""The pcap writer and reader, checked against themselves and against tshark."""

from __future__ import annotations

import io
import shutil
import struct
import subprocess
import threading

import pytest

from threadnet.errors import FrameError
from threadnet.wire.pcap import (
    DEFAULT_SNAPLEN,
    LINKTYPE_ETHERNET,
    PcapReader,
    PcapWriter,
    read_pcap,
)

MAC_A = bytes.fromhex("020000000001")
MAC_B = bytes.fromhex("020000000002")


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def arp_request() -> bytes:
    arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, MAC_A, bytes([10, 0, 0, 1]),
                      b"\0" * 6, bytes([10, 0, 0, 2]))
    return (b"\xff" * 6 + MAC_A + b"\x08\x06" + arp).ljust(60, b"\0")


def udp_frame(payload: bytes = b"hello, threadnet") -> bytes:
    udp = struct.pack("!HHHH", 5000, 6000, 8 + len(payload), 0) + payload  # checksum 0: none
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0x4000, 64, 17, 0,
                               bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])))
    struct.pack_into("!H", ip, 10, _checksum(bytes(ip)))
    return (MAC_B + MAC_A + b"\x08\x00" + bytes(ip) + udp).ljust(60, b"\0")


def vlan_arp() -> bytes:
    frame = arp_request()
    return frame[:12] + b"\x81\x00\x00\x07" + frame[12:]


def test_global_header_layout() -> None:
    buf = io.BytesIO()
    PcapWriter(buf).close()
    assert buf.getvalue() == struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1)


def test_record_header_layout() -> None:
    buf = io.BytesIO()
    with PcapWriter(buf) as w:
        w.write(b"abcd", 1700000000.25)
    rec = buf.getvalue()[24:]
    assert rec == struct.pack("<IIII", 1700000000, 250000, 4, 4) + b"abcd"


def test_round_trip(tmp_path) -> None:
    path = tmp_path / "rt.pcap"
    frames = [(1700000000.000001 + i * 0.5, bytes([i]) * (60 + i * 97)) for i in range(20)]
    with PcapWriter(path) as w:
        for ts, frame in frames:
            w.write(frame, ts)
        assert w.count == 20
    with PcapReader(path) as r:
        assert r.snaplen == DEFAULT_SNAPLEN and r.linktype == LINKTYPE_ETHERNET
        assert r.byteorder == "little" and not r.nanosecond
        got = list(r)
    assert [f for _, f in got] == [f for _, f in frames]
    for (ts, _), (want, _) in zip(got, frames, strict=True):
        assert ts == pytest.approx(want, abs=1e-6)


def test_usec_rounding_carries_into_seconds() -> None:
    buf = io.BytesIO()
    with PcapWriter(buf) as w:
        w.write(b"x", 9.9999999)
    assert struct.unpack_from("<II", buf.getvalue(), 24) == (10, 0)


def test_snaplen_truncates_and_keeps_original_length() -> None:
    buf = io.BytesIO()
    with PcapWriter(buf, snaplen=64) as w:
        w.write(b"y" * 1000, 1.0)
        w.write(b"z" * 10, 2.0)
    buf.seek(0)
    assert struct.unpack_from("<II", buf.getvalue(), 24 + 8) == (64, 1000)
    assert read_pcap(buf) == [(1.0, b"y" * 64), (2.0, b"z" * 10)]


def test_fileobj_is_left_open_and_writes_after_close_fail() -> None:
    buf = io.BytesIO()
    w = PcapWriter(buf)
    w.write(b"a", 0.0)
    w.close()
    w.close()  # idempotent
    assert not buf.closed
    with pytest.raises(ValueError):
        w.write(b"b", 0.0)


def test_threads_never_interleave_records() -> None:
    buf = io.BytesIO()
    w = PcapWriter(buf)

    def writer(tag: int) -> None:
        for i in range(500):
            w.write(bytes([tag]) * (14 + (i % 300)), float(i))

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    w.close()
    buf.seek(0)
    records = read_pcap(buf)
    assert len(records) == 2000
    for _, frame in records:
        assert frame == frame[:1] * len(frame)


@pytest.mark.parametrize("order,magic,scale", [(">", 0xA1B2C3D4, 1e6), ("<", 0xA1B23C4D, 1e9),
                                               (">", 0xA1B23C4D, 1e9)])
def test_reader_accepts_other_byte_orders_and_nanoseconds(order, magic, scale) -> None:
    data = struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, 65535, 1)
    data += struct.pack(order + "IIII", 5, int(0.5 * scale), 3, 3) + b"abc"
    assert read_pcap(io.BytesIO(data)) == [(5.5, b"abc")]


def _good_file() -> bytes:
    buf = io.BytesIO()
    with PcapWriter(buf) as w:
        w.write(b"0123456789", 3.0)
    return buf.getvalue()


@pytest.mark.parametrize("data,message", [
    (b"", "too short"),
    (b"\xd4\xc3\xb2\xa1\x02\x00", "truncated pcap file header"),
    (b"GIF89a" + b"\0" * 30, "not a pcap file"),
    (struct.pack("<I", 0x0A0D0D0A) + b"\0" * 28, "pcapng"),
    (_good_file()[:30], "truncated record header"),
    (_good_file()[:-1], "truncated"),
    (_good_file()[:24] + struct.pack("<IIII", 0, 0, 20, 10) + b"x" * 20, "bad lengths"),
    (_good_file()[:24] + struct.pack("<IIII", 0, 0, 300000, 300000), "bad lengths"),
    (_good_file()[:24] + struct.pack("<IIII", 0, 1000000, 1, 1) + b"x", "timestamp"),
    (struct.pack("<IHHiIII", 0xA1B2C3D4, 3, 0, 0, 0, 65535, 1), "version"),
])
def test_reader_is_strict(data: bytes, message: str) -> None:
    with pytest.raises(FrameError, match=message):
        read_pcap(io.BytesIO(data))


def test_reader_closes_its_file_on_a_bad_header(tmp_path) -> None:
    path = tmp_path / "bad.pcap"
    path.write_bytes(b"nonsense" * 4)
    with pytest.raises(FrameError):
        PcapReader(path)


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")
def test_tshark_reads_written_file(tmp_path) -> None:
    path = tmp_path / "tshark.pcap"
    frames = [arp_request(), udp_frame(), vlan_arp(), udp_frame(b"x" * 1400)]
    stamps = [1700000000.123456 + i for i in range(len(frames))]
    with PcapWriter(path) as w:
        for ts, frame in zip(stamps, frames, strict=True):
            w.write(frame, ts)
        w.write(udp_frame(b"y" * 1000), stamps[-1] + 1)
    # Same file again with a small snaplen: tshark must see truncation, not damage.
    short = tmp_path / "short.pcap"
    with PcapWriter(short, snaplen=100) as w:
        w.write(udp_frame(b"z" * 400), 1.0)

    fields = subprocess.run(
        ["tshark", "-n", "-r", str(path), "-T", "fields", "-E", "separator=;",
         "-e", "frame.len", "-e", "frame.cap_len", "-e", "frame.time_epoch",
         "-e", "frame.protocols"],
        capture_output=True, text=True, timeout=60, check=True).stdout.splitlines()
    assert len(fields) == 5
    for line, frame, ts in zip(fields, frames, stamps, strict=False):
        length, caplen, epoch, protocols = line.split(";")
        assert int(length) == int(caplen) == len(frame)
        assert float(epoch) == pytest.approx(ts, abs=1e-6)
        assert protocols.startswith("eth:ethertype:")
    assert "arp" in fields[0] and "udp" in fields[1] and "vlan" in fields[2]

    for file in (path, short):
        verbose = subprocess.run(["tshark", "-n", "-V", "-r", str(file)], capture_output=True,
                                 text=True, timeout=60)
        assert verbose.returncode == 0, verbose.stderr
        assert "Malformed" not in verbose.stdout
        assert "appears to have been cut short" not in verbose.stderr
    info = subprocess.run(["tshark", "-n", "-r", str(short), "-T", "fields", "-e", "frame.len",
                           "-e", "frame.cap_len"], capture_output=True, text=True, timeout=60,
                          check=True).stdout.split()
    assert info == [str(len(udp_frame(b"z" * 400))), "100"]


def test_switch_capture_changes_run_on_the_switchs_thread(sockdir, monkeypatch):
    """set_capture from another thread is carried out on the running switch's own thread
    (a test thread that stopped a capture closed the file while the switch's thread was
    writing a frame to it), and its errors still reach the caller."""
    import os

    from threadnet.switch.server import SwitchServer

    seen: list[threading.Thread] = []
    original = SwitchServer._set_capture

    def record(self, *args):
        seen.append(threading.current_thread())
        return original(self, *args)

    monkeypatch.setattr(SwitchServer, "_set_capture", record)
    sw = SwitchServer(os.path.join(sockdir, "sw")).start()
    try:
        pcap = os.path.join(sockdir, "all.pcap")
        sw.set_capture(None, pcap)
        sw.set_capture(None, None)
        assert seen and all(t is sw._thread for t in seen)
        with pytest.raises(OSError):
            sw.set_capture(None, os.path.join(sockdir, "no", "such", "dir.pcap"))
    finally:
        sw.close()
