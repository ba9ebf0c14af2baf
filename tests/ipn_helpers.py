"""Roles of the processes that tests/test_ipn.py puts on an IPN bus.

    python ipn_helpers.py member BUS INDEX N COUNT   one of N members: sends COUNT messages
        (switch buses: a hello, then COUNT unicasts to member INDEX+1's MAC), receives what
        it should, prints a JSON report, leaves when stdin closes
    python ipn_helpers.py slow BUS STALL EXPECT      reads nothing for STALL seconds, then
        everything until EXPECT messages, or until a line on stdin (the sender is done)
        and what is left; prints a JSON report
    python ipn_helpers.py idle BUS                   joins and never reads (killed by a test)

Each prints ``joined NAME`` once it is a member.
"""

from __future__ import annotations

import json
import select
import sys
import threading
import time

from threadnet.ipn import Member

BCAST = b"\xff" * 6
ETHERTYPE = b"\x88\xb5"


def mac(index: int) -> bytes:
    return bytes([2, 0, 0, 0, 0x1B, index])


def member(bus: str, index: int, n: int, count: int) -> None:
    m = Member(bus)
    print("joined", m.name, flush=True)
    switch = m.switch
    deadline = time.monotonic() + 30
    while len(m.members()) < n - 1:
        if time.monotonic() > deadline:
            raise SystemExit(f"only {len(m.members())} other members after 30 s")
        time.sleep(0.01)
    expect = (n - 1) * count if not switch else (n - 1) + count
    got: dict[int, list[int]] = {}
    misaddressed = 0
    hellos = 0
    done = threading.Event()

    def receive() -> None:
        nonlocal misaddressed, hellos
        total = 0
        while total < expect:
            msg, _sender = m.recv()
            payload = msg[14:] if switch else msg
            if switch and msg[:6] not in (mac(index), BCAST):
                misaddressed += 1
            text = payload.rstrip(b"\0").decode()
            if text.startswith("hello"):
                hellos += 1
            else:
                src, seq = (int(x) for x in text.split(":"))
                got.setdefault(src, []).append(seq)
            total += 1
        done.set()

    t = threading.Thread(target=receive, daemon=True)
    t.start()
    if switch:
        m.send(BCAST + mac(index) + ETHERTYPE + b"hello %d" % index)
        wait = time.monotonic() + 20
        while len(m.learned()) < n - 1 and time.monotonic() < wait:
            time.sleep(0.01)
        dst = mac((index + 1) % n)
        for seq in range(count):
            m.send(dst + mac(index) + ETHERTYPE + b"%d:%d" % (index, seq) + bytes(40))
    else:
        for seq in range(count):
            m.send(b"%d:%d" % (index, seq) + bytes(50))
    ok = done.wait(30)
    time.sleep(0.3)  # anything more that arrives is extra: counted by the test from `got`
    report = {"index": index, "complete": ok, "got": {str(k): v for k, v in got.items()},
              "misaddressed": misaddressed, "hellos": hellos, "learned": len(m.learned()),
              "counters": list(m.counters[:8]), "name": m.name}
    print(json.dumps(report), flush=True)
    sys.stdin.read()  # stay a member until the test has every report
    m.close()


def slow(bus: str, stall: float, expect: int) -> None:
    m = Member(bus)
    print("joined", m.name, flush=True)
    time.sleep(stall)
    started = time.time()
    m.setblocking(False)
    seqs: list[int] = []
    done = False  # the test writes a line when its sender has finished

    def drain() -> None:
        while len(seqs) < expect:
            try:
                msg, _ = m.recv()
            except BlockingIOError:
                return
            seqs.append(int(msg.rstrip(b"\0").decode()))

    deadline = time.monotonic() + 60
    while len(seqs) < expect and not done and time.monotonic() < deadline:
        ready = select.select([m, sys.stdin], [], [], 1.0)[0]
        if sys.stdin in ready:
            done = True
            sys.stdin.readline()
        drain()
    print(json.dumps({"seqs": seqs, "counters": list(m.counters[:8]), "started": started}),
          flush=True)
    if not done:
        sys.stdin.readline()
    sys.stdin.read()
    m.close()


def idle(bus: str) -> None:
    m = Member(bus)
    print("joined", m.name, flush=True)
    while True:
        time.sleep(60)


if __name__ == "__main__":
    role, *rest = sys.argv[1:]
    if role == "member":
        member(rest[0], int(rest[1]), int(rest[2]), int(rest[3]))
    elif role == "slow":
        slow(rest[0], float(rest[1]), int(rest[2]))
    elif role == "idle":
        idle(rest[0])
    else:
        raise SystemExit(f"unknown role {role}")
