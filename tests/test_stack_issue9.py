"""Issue 9 (the stack reshaping issue), defects a, b, d and e: each test here failed on
the code before its fix.

a. TCP over 127.0.0.1 with the loopback's MTU of 65536: segments must fit IPv4.
b. Duplicate address detection through the public API; IPv4 conflict detection.
d. An MTU larger than the link carries is refused.
e. Unanswered address resolution fails connect, connected UDP and ping with
   EHOSTUNREACH.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading

import pytest

from threadnet.stack.driver import Driver
from threadnet.stack.stack import Stack


@pytest.fixture
def driver():
    d = Driver("test-issue9")
    yield d
    d.stop()


# -- a. the loopback's MTU and IPv4 ------------------------------------------------------
@pytest.mark.parametrize("size", [70_000, 1_000_000])
def test_tcp_over_loopback_both_families(driver, size):
    """70 kB and 1 MB through 127.0.0.1 and ::1 on one stack, both arriving intact. Before
    the fix the IPv4 MSS (65536 - 40) made a segment of total length 65536, which the IP
    layer refused, and the IPv4 transfer stalled after its first segment."""
    s = Stack(driver=driver)
    try:
        for host, fam in (("127.0.0.1", socket.AF_INET), ("::1", socket.AF_INET6)):
            payload = os.urandom(size)
            srv = s.socket(fam)
            srv.bind((host, 0))
            srv.listen()
            got = bytearray()

            def serve(srv=srv, got=got) -> None:
                c, _ = srv.accept()
                with c:
                    c.settimeout(60)
                    while chunk := c.recv(65536):
                        got.extend(chunk)

            t = threading.Thread(target=serve, daemon=True)
            t.start()
            with s.socket(fam) as c:
                c.settimeout(60)
                c.connect((host, srv.getsockname()[1]))
                c.sendall(payload)
            t.join(60)
            srv.close()
            assert len(got) == size, f"{host}: {len(got)} of {size} bytes"
            assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest(), host
        assert not s.stats.get("driver_errors")
    finally:
        s.close()
