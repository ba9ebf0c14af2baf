"""A stack's protocol state is plain data (issue 9), and a runner runs a stack on the
stack's own clock.

The state (interfaces, addresses, routes, neighbors, UDP ports, TCP connections with
their buffers and timers, pings, fragments) holds no thread, lock, socket, link, file or
function: owners above the core are handles (``stack/upper.py``), links are the stack's
(``stack.links``), and what runs the state (``Stack.RUNTIME``) stays out of what pickle
and copy take. Two core stacks joined in memory on fake time build such a state; a
walker checks everything it reaches, and the state pickles, restores and goes on: a
restored stack finishes the transfer its original started.
"""

from __future__ import annotations

import copy
import enum
import functools
import io
import ipaddress
import pickle
import random
import selectors
import socket
import threading
import types
from collections import deque

import pytest

from threadnet.link import Link
from threadnet.stack.raserver import RaServer
from threadnet.stack.rdisc import RouterDiscovery
from threadnet.stack.runner import StackRunner
from threadnet.stack.stack import Stack as CoreStack
from threadnet.stack.tcp import TcpState

from stack_helpers import ListLink

STEP = 0.01
A4, B4 = "10.9.0.1", "10.9.0.2"
A6, B6 = "fc00:9::1", "fc00:9::2"

#: what protocol state must not hold
FORBIDDEN = (threading.Thread, threading.Event, threading.Condition, threading.Semaphore,
             type(threading.Lock()), type(threading.RLock()), socket.socket, Link,
             io.IOBase, selectors.BaseSelector, types.FunctionType, types.BuiltinFunctionType,
             types.MethodType, types.LambdaType, functools.partial, memoryview,
             types.GeneratorType)
LEAVES = (type(None), bool, int, float, complex, str, bytes, bytearray, enum.Enum,
          random.Random, type)


def forbidden_in(root: object) -> list[str]:
    """Paths to everything forbidden that ``root`` reaches, walking what pickle takes
    (``__getstate__``) of each object."""
    found: list[str] = []
    seen: set[int] = set()
    todo: list[tuple[object, str]] = [(root, "stack")]
    while todo:
        obj, path = todo.pop()
        if isinstance(obj, FORBIDDEN):
            found.append(f"{path}: {type(obj).__name__}")
            continue
        if isinstance(obj, LEAVES) or id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, dict):
            for k, v in obj.items():
                todo.append((k, f"{path}[key {k!r}]"))
                todo.append((v, f"{path}[{k!r}]"))
        elif isinstance(obj, list | tuple | set | frozenset | deque):
            todo += [(v, f"{path}[{i}]") for i, v in enumerate(obj)]
        else:
            state = obj.__getstate__()  # type: ignore[attr-defined]
            if isinstance(state, tuple) and len(state) == 2 and \
                    all(isinstance(x, dict | None) for x in state):
                state = {**(state[0] or {}), **(state[1] or {})}  # (__dict__, __slots__)
            if isinstance(state, dict):
                todo += [(v, f"{path}.{k}") for k, v in state.items()]
            else:  # a class's own state (a frozen dataclass's list of fields...)
                todo.append((state, f"{path}.__getstate__()"))
    return found


class Wire:
    """Core stacks on one in-memory wire, on fake time: a frame sent at t arrives at
    t + STEP; ``drop(frame)`` may lose frames."""

    def __init__(self, *configs: str, start: float = 100.0) -> None:
        self.now = start
        self.links = [ListLink() for _ in configs]
        self.stacks = [CoreStack(link=link, clock=lambda: self.now) for link in self.links]
        for s, cfg in zip(self.stacks, configs, strict=True):
            s.configure(cfg)
        self.queue: list[tuple[int, bytes]] = []
        self.drop = lambda frame: False

    def collect(self) -> None:
        for i, link in enumerate(self.links):
            frames, link.sent = link.sent, []
            for f in frames:
                for j in range(len(self.stacks)):
                    if j != i and not self.drop(f):
                        self.queue.append((j, f))

    def step(self) -> None:
        self.now += STEP
        due, self.queue = self.queue, []
        for j, f in due:
            s = self.stacks[j]
            s.input(s.interfaces[2], f, self.now)
        self.collect()
        for s in self.stacks:
            s.on_timer(self.now)
        self.collect()

    def run_until(self, cond, limit: float) -> None:
        end = self.now + limit
        while not cond():
            assert self.now < end, "no progress on fake time"
            self.step()

    def run(self, seconds: float) -> None:
        end = self.now + seconds
        while self.now < end:
            self.step()

    def close(self) -> None:
        for s in self.stacks:
            s.close()


class Events:
    """An owner in ``stack.upper``: what the core tells it (it holds a function: it
    must never be part of the state)."""

    def __init__(self) -> None:
        self.tcp = 0
        self.udp: list[bytes] = []
        self.pings: list[object] = []
        self.record = self.udp.append

    def on_tcp_event(self, ep) -> None:
        self.tcp += 1

    def on_udp(self, data, src, dst) -> None:
        self.record(data)

    def on_udp_error(self, err, dst, port) -> None:
        pass

    def on_ping_done(self, session) -> None:
        self.pings.append(session)


def _last_fragment(frame: bytes) -> bool:
    """An IPv4 fragment that is not the first and has no more after it."""
    if frame[12:14] != b"\x08\x00":
        return False
    word = int.from_bytes(frame[20:22], "big")
    return bool(word & 0x1FFF) and not word & 0x2000


DATA = bytes(range(256)) * 1200  # 300 KiB: more than a window's worth in flight


@pytest.fixture
def busy():
    """Two stacks with every kind of state, frozen mid-transfer: (wire, a, b, a's
    endpoint, b's endpoint, a's TCP owner)."""
    w = Wire(f"eth,ip={A4}/24,ip={A6}/64", f"eth,ip={B4}/24,ip={B6}/64")
    a, b = w.stacks
    try:
        w.run(2.0)  # duplicate address detection ends
        # agents: b advertises a prefix, a takes a router and SLAAC addresses from it
        b.add_agent(RaServer(2, ["fc00:8::/64"]), w.now)
        rd = a.add_agent(RouterDiscovery(2, slaac=True), w.now)
        w.run_until(lambda: any(x.origin == "ra" and x.state == "preferred"
                                for x in a.interface("eth0").v6), 10.0)
        assert rd.describe()
        a.route_add("10.99.0.0/16", via=B4)
        a.route_add("fc00:99::/48", via=B6)
        a.interface("eth0").arp.add_static(bytes((10, 9, 0, 77)), b"\x02\0\0\0\0\x77")
        a.addr_add("eth0", "10.9.1.1/24", acd=True)  # probing (RFC 5227): an Acd
        mine = Events()
        a.udp_bind(5353, a.upper.add(mine))
        a.udp_bind(5354, lambda data, src, dst: None)  # a function: in a.upper only
        b.udp_bind(7, lambda data, src, dst: None)
        listener = b.tcp.listen(4, b"", 5000, 8)
        ep = a.tcp.connect(4, None, 0, ipaddress.ip_address(B4).packed, 5000, w.now)
        owner = Events()
        ep.owner = a.upper.add(owner)
        w.run_until(lambda: ep.conn.state is TcpState.ESTABLISHED and listener.ready, 5.0)
        bep = listener.accept()
        assert bep is not None
        ep.send(DATA[:150_000], w.now)
        w.run(0.05)  # some of it acknowledged, more in flight
        # then the wire fails: data waits unacknowledged and unsent, timers run
        w.drop = lambda frame: True
        ep.send(DATA[150_000:], w.now)
        w.step()
        # a datagram in IPv4 fragments whose last one is lost: b reassembles
        w.drop = _last_fragment
        a.udp_send(b"f" * 3000, (B4, 7), 40000, now=w.now)
        w.step()
        w.drop = lambda frame: True
        a.start_ping(B6, count=3, timeout=1.0, on_done=lambda s: None)
        w.step()
        yield w, a, b, ep, bep, owner
    finally:
        w.close()


def test_the_state_of_a_busy_stack_is_plain_data(busy) -> None:
    w, a, b, ep, bep, _ = busy
    conn = ep.conn
    # every kind of state is there
    assert len(a.interfaces) == 2 and a.interface("eth0").v4 and a.interface("eth0").v6
    assert a.interface("eth0").acd4
    assert a.agents and b.agents and any(x.origin == "ra" for x in a.interface("eth0").v6)
    assert {"10.99.0.0/16", "fc00:99::/48"} <= {str(r.dst) for r in [*a.routes4, *a.routes6]}
    assert a.interface("eth0").arp.entries and a.interface("eth0").nd.entries
    assert {(b"", 5353), (b"", 5354)} <= set(a.udp)
    assert conn.state is TcpState.ESTABLISHED
    assert conn.bytes_in_flight > 0, "unacknowledged data"
    assert conn.send_queued > conn.bytes_in_flight, "unsent data"
    assert conn.next_timer() is not None and a.tcp.timers and ep._timer is not None
    assert bep.conn.recv_queued > 0, "received, unread data"
    assert a.echo_sessions and a.echo_waiters
    assert b.reasm4.buffered > 0
    # and none of it is a thread, lock, socket, link, file or function
    for s in (a, b):
        assert forbidden_in(s) == []
    # what runs it is apart: the owners hold the functions, the links table the links
    assert len(a.upper) == 4  # the TCP owner, two UDP ports, the ping
    assert isinstance(a.links[2], ListLink)
    # the walker does find what it must not: an owner held by the state
    path, ep.path = ep.path, types.SimpleNamespace(cb=lambda: None)
    try:
        found = forbidden_in(a)
    finally:
        ep.path = path
    assert len(found) == 1 and found[0].endswith(".path.cb: function"), found


def test_the_state_pickles_and_copies_without_what_runs_it(busy) -> None:
    w, a, b, ep, bep, _ = busy
    restored = pickle.loads(pickle.dumps(a))
    copied = copy.deepcopy(a)
    for s in (restored, copied):
        assert s.links == {} and len(s.upper) == 0 and s.runner is None
        assert s.lock is not a.lock and s.clock is not a.clock
        assert s.addresses() == a.addresses()
        assert [str(r) for r in s.routes4] == [str(r) for r in a.routes4]
        assert set(s.udp.items()) == set(a.udp.items())
        assert s.upper.next_handle == a.upper.next_handle  # handles stay unique
        ep2 = s.tcp.conns[ep.key]
        assert ep2.owner == ep.owner and ep2.layer.stack is s
        c1, c2 = ep.conn, ep2.conn
        assert (c2.state, c2.snd_una, c2.snd_nxt, c2.snd_max, c2.rcv_nxt) == \
            (c1.state, c1.snd_una, c1.snd_nxt, c1.snd_max, c1.rcv_nxt)
        assert c2._snd_buf == c1._snd_buf and c2.next_timer() == c1.next_timer()
        assert s.echo_sessions[0].stack is s
        assert forbidden_in(s) == []


def test_a_restored_stack_finishes_the_transfer_of_the_original(busy) -> None:
    """Live migration in small: a's state goes through pickle into a new Stack object,
    which gets a's link and an owner under the handle the endpoint names, and takes
    a's place on the wire. The connection, its unacknowledged and unsent data and its
    timers carry on, and b receives every byte, in order."""
    w, a, b, ep, bep, _ = busy
    blob = pickle.dumps(a)
    a2 = pickle.loads(blob)
    a2.clock = lambda: w.now
    a2.set_link("eth0", w.links[0])
    owner2 = Events()
    a2.upper.put(ep.owner, owner2)
    w.stacks[0] = a2
    a.links.clear()  # (the link is a2's now: a's close must not close it)
    w.drop = lambda frame: False
    ep2 = a2.tcp.conns[ep.key]
    got = bytearray()

    def drained() -> bool:
        got.extend(bep.recv(1 << 20, w.now))
        return len(got) >= len(DATA)

    w.run_until(drained, 60.0)
    assert bytes(got) == DATA
    w.run_until(lambda: ep2.conn.bytes_in_flight == 0, 5.0)
    assert owner2.tcp > 0  # the new owner hears of its connection
    ep2.close(w.now)
    bep.close(w.now)
    w.run_until(lambda: ep2.key not in a2.tcp.conns or
                ep2.conn.state is TcpState.TIME_WAIT, 5.0)
    assert len(a2.upper) == 0  # released with the connection


def test_sockets_on_a_running_stack_leave_only_handles_in_its_state() -> None:
    """``threadnet.Stack``s on a runner, with a listening socket, a connected stream
    socket pair with data under way and a UDP socket: their pumps, socket pairs and
    the runner are all outside the state (in ``upper``, ``links``, ``runner``), which
    pickles; closing the sockets empties ``upper``."""
    from threadnet import Stack
    from threadnet.link.pair import open_pair

    runner = StackRunner("test-plain-state-sockets")
    la, lb = open_pair()
    a = Stack(f"eth,ip={A4}/24", la, runner=runner)
    b = Stack(f"eth,ip={B4}/24", lb, runner=runner)
    try:
        srv = b.socket()
        srv.bind(("", 6000))
        srv.listen()
        c = a.socket()
        c.settimeout(10)
        c.connect((B4, 6000))
        s, _ = srv.accept()
        c.sendall(b"x" * 200_000)  # b does not read: data waits in b and in flight
        u = a.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.bind(("", 5353))
        for st in (a, b):
            with st.locked():
                assert forbidden_in(st) == []
                pickle.dumps(st)
        with a.locked():
            assert len(a.upper) == 2 and all(isinstance(h, int) for h in a.udp.values())
        for sock in (u, c, s, srv):
            sock.close()
        for _ in range(500):
            with a.locked(), b.locked():
                if not len(a.upper) and not len(b.upper):
                    break
            threading.Event().wait(0.01)
        else:
            pytest.fail(f"owners left: {a.upper.owners} {b.upper.owners}")
    finally:
        a.close()
        b.close()
        runner.stop()


def test_a_core_stack_on_a_runner_runs_on_its_fake_clock() -> None:
    """``Stack(clock=fake, runner=r)``: the runner feeds the stack the fake clock's time
    with its frames and timers, and arms its timers by the fake time. Before, it read
    the loop's monotonic clock: with the fake time far from it, DAD never ended (or
    ended at once) and a ping's round-trip times were the difference of two clocks."""
    from threadnet.link.pair import open_pair

    now = [1.0e7]  # far from the real monotonic clock
    runner = StackRunner("test-plain-state")
    la, lb = open_pair()
    a = CoreStack(link=la, clock=lambda: now[0], runner=runner)
    b = CoreStack(link=lb, clock=lambda: now[0], runner=runner)
    try:
        a.configure(f"eth,ip={A4}/24,ip={A6}/64")
        b.configure(f"eth,ip={B4}/24,ip={B6}/64")
        with a.locked():
            tentative = [x for x in a.interface("eth0").v6 if x.state == "tentative"]
            assert tentative and all(now[0] < x.dad_deadline < now[0] + 3 for x in tentative)
        # the fake time stands still: nothing is due, whatever the real time does
        threading.Event().wait(0.3)
        with a.locked():
            assert all(x.state == "tentative" for x in tentative)
        now[0] += 5.0  # now DAD is over, once the runner looks again
        for s in (a, b):
            runner.touch(s)
        deadline = threading.Event()
        for _ in range(200):
            with a.locked(), b.locked():
                if A6 + "/64" in a.addresses() and B6 + "/64" in b.addresses():
                    break
            deadline.wait(0.01)
        else:
            pytest.fail("DAD did not end on the fake clock")
        # a ping through the runner: its round-trip time is on the fake clock (0: it
        # stands still), and the neighbor learned expires 30 fake seconds from now
        done = threading.Event()
        with a.locked():
            session = a.start_ping(B4, count=1, timeout=5.0, on_done=lambda s: done.set())
        assert done.wait(10), "the ping did not end"
        assert session.rtts == [0.0]
        with a.locked():
            nb = a.interface("eth0").arp.entries[ipaddress.ip_address(B4).packed]
            assert nb.deadline == now[0] + a.interface("eth0").arp.reachable
    finally:
        a.close()
        b.close()
        runner.stop()
