"""A slirp gateway: user-mode networking from a virtual LAN to the host's own sockets.

The LAN side is a threadnet stack (the gateway, 10.0.2.2) in catch-all mode
(``Stack.catch_all``): it terminates every TCP connection, UDP flow and ICMP echo the
guests send, whatever their destination. The host side re-originates each as an
ordinary kernel socket, as libslirp and passt do: TCP on the stack's runner thread,
the rest on the gateway's own event loop thread, none of it blocking:

- TCP: the stack holds the guest's SYN (``TcpLayer.held``) while a non-blocking kernel
  socket connects to its destination, as libslirp does; then it releases it: the
  connection opens on the catch-all listener (its local address is the original
  destination), or the guest gets a RST (refused) or an ICMP unreachable. All of that
  runs on the stack's runner thread, under its lock, with no hand-off: the SYN's arrival
  starts the connect, the host socket's writability releases the SYN, and the guest's
  ACK makes a ``TcpSplice`` (``tcpsplice.py``) that copies between the connection's
  buffers and the host socket; a full buffer stops reading its side, so the TCP window
  closes (backpressure).
- UDP: one connected kernel socket per flow (guest address and port, destination), in a
  bounded table with an idle timeout (``flows.py``).
- ICMP echo: to the gateway's own addresses the stack answers; elsewhere through the
  host's unprivileged ping sockets, where ``net.ipv4.ping_group_range`` allows them,
  else not at all.
- the gateway's addresses (10.0.2.2, fd00::2) lead to the host's loopback (option
  ``restrict`` turns that off); 10.0.2.3:53 and fd00::3:53 forward the raw DNS query
  over a kernel UDP socket to the host's nameservers (resolv.conf's, or ``nameserver=``).
- host-to-guest forwards: a kernel listener per ``hostfwd``, whose connections are
  opened inside the stack toward the guest.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import select
import socket
import struct
import threading
import time
from typing import Any

from threadnet.loop import EventLoop
from threadnet.slirp.flows import FlowTable
from threadnet.slirp.options import SlirpOptions, host_nameservers
from threadnet.slirp.tcpsplice import CHUNK as TCP_CHUNK
from threadnet.slirp.tcpsplice import CatchAllListener, TcpSplice
from threadnet.stack.api import Stack
from threadnet.stack.tcplayer import CATCH_ALL
from threadnet.stack.upper import UdpCallbacks
from threadnet.wire import icmp4, icmp6, ipv4, ipv6

log = logging.getLogger("threadnet.slirp")

#: bytes each direction of a spliced connection holds before it stops reading its source
SPLICE_BUF = 256 * 1024
CHUNK = 65536
UDP_BATCH = 64


class Splice:
    """Two connected stream sockets copied into each other, non-blocking, on the gateway's
    loop: ``ends[i]``'s data waits in ``bufs[i]`` for ``ends[1 - i]``. (The host's
    forwards; the guests' own connections are ``TcpSplice``s.)"""

    __slots__ = ("gw", "ends", "bufs", "eof", "shut", "connecting", "closed", "regs")

    def __init__(self, gw: Gateway, a: socket.socket, b: socket.socket,
                 connecting: int | None = None) -> None:
        self.gw = gw
        self.ends = (a, b)
        self.bufs = (bytearray(), bytearray())
        self.eof = [False, False]
        self.shut = [False, False]
        #: the end whose connect is under way (writable = done), or None
        self.connecting = connecting
        self.closed = False
        self.regs: list[tuple[bool, bool]] = [(False, False), (False, False)]
        self.update()

    def update(self) -> None:
        """Watch each end for what it can do now: read while its buffer has room, write
        while the other's has data."""
        if self.closed:
            return
        loop = self.gw.loop
        for i, s in enumerate(self.ends):
            if self.connecting is not None:
                want = (False, i == self.connecting)
            else:
                want = (not self.eof[i] and len(self.bufs[i]) < SPLICE_BUF,
                        bool(self.bufs[1 - i]))
            if want == self.regs[i]:
                continue
            rd, wr = want
            if rd:
                loop.add_reader(s, lambda i=i: self._read(i))
            elif self.regs[i][0]:
                loop.remove_reader(s)
            if wr:
                loop.add_writer(s, lambda i=i: self._write(i))
            elif self.regs[i][1]:
                loop.remove_writer(s)
            self.regs[i] = want

    def _read(self, i: int) -> None:
        s = self.ends[i]
        buf = self.bufs[i]
        try:
            data = s.recv(CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.abort(i)
            return
        if data:
            if buf:
                buf += data
            else:  # try at once: most chunks go straight through, with no copy of ours
                try:
                    n = self.ends[1 - i].send(data)
                except (BlockingIOError, InterruptedError):
                    n = 0
                except OSError:
                    self.abort(1 - i)
                    return
                if n < len(data):
                    buf += memoryview(data)[n:]
        else:
            self.eof[i] = True
            self._maybe_shut(i)
        self.update()

    def _write(self, j: int) -> None:
        if j == self.connecting:
            err = self.ends[j].getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self.gw.refused(self, j, err)
                return
            self.connecting = None
            self.update()
            return
        i = 1 - j
        buf = self.bufs[i]
        try:
            n = self.ends[j].send(buf)
            del buf[:n]
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.abort(j)
            return
        self._maybe_shut(i)
        self.update()

    def _maybe_shut(self, i: int) -> None:
        """``ends[i]`` said EOF: once its data is out, pass the FIN on."""
        if self.eof[i] and not self.bufs[i] and not self.shut[i]:
            self.shut[i] = True
            try:
                self.ends[1 - i].shutdown(socket.SHUT_WR)
            except OSError:
                pass
            if all(self.shut):
                self.close()

    def abort(self, failed: int) -> None:
        """``ends[failed]`` broke (reset): reset the other too."""
        other = self.ends[1 - failed]
        try:
            other.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
        except OSError:
            pass
        self.close()

    def close(self) -> None:
        if self.closed:
            return
        loop = self.gw.loop
        for i, s in enumerate(self.ends):
            rd, wr = self.regs[i]
            if rd:
                loop.remove_reader(s)
            if wr:
                loop.remove_writer(s)
            try:
                s.close()
            except OSError:
                pass
        self.closed = True
        self.gw.splices.discard(self)


class _CatchAllOwner:
    """The owner of the stack's catch-all mode: echo requests to addresses not ours, and
    SYNs held for the catch-all listener."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw

    def on_echo(self, family: int, src: bytes, dst: bytes, rest: int, data: bytes) -> None:
        self.gw.loop.call_soon_threadsafe(lambda: self.gw.echo(family, src, dst, rest, data))

    def on_syn(self, key: tuple) -> None:
        self.gw.syn(key)  # (the runner's thread, under the lock: no hand-off)


class Gateway:
    """A slirp gateway on ``link`` (a Link or URL): its stack, flows and loop thread.

    ``Gateway(link, SlirpOptions.parse("hostfwd=tcp::8080-:80"))``, then ``start()``
    (a daemon thread) or ``run()`` (this thread); ``close()`` ends it."""

    def __init__(self, link: Any, options: SlirpOptions | None = None, *,
                 stack: Stack | None = None) -> None:
        self.options = o = options or SlirpOptions()
        self.nameservers = o.nameservers or host_nameservers()
        self.stack = stack or Stack(o.config(), link=link, name="slirp")
        self.loop = EventLoop()
        self.loop.on_error = lambda exc: log.exception("slirp: %s", exc, exc_info=exc)
        #: the spliced connections: the guests' (``TcpSplice``) and the forwards' (``Splice``)
        self.splices: set[Splice | TcpSplice] = set()
        #: host connections made for held SYNs, until the guest's side is accepted:
        #: (local address, port, remote address, port) -> (socket, when); this and
        #: ``_connecting`` (connects under way) under the stack's lock
        self.pending: dict[tuple, tuple[socket.socket, float]] = {}
        self._connecting: dict[tuple, socket.socket] = {}
        #: where ``TcpSplice``s receive from host sockets (under the stack's lock)
        self.rx_view = memoryview(bytearray(TCP_CHUNK))
        self.udp = FlowTable(o.max_udp)
        self.counters = {"tcp": 0, "tcp_refused": 0, "tcp_dropped": 0, "udp": 0,
                         "udp_evicted": 0, "echo": 0, "dns": 0, "hostfwd": 0}
        self._thread: threading.Thread | None = None
        self._listeners: list[socket.socket] = []
        self._host4 = ipaddress.ip_address(o.host).packed
        self._dns4 = ipaddress.ip_address(o.dns).packed
        self._host6 = ipaddress.ip_address(o.host6).packed
        self._dns6 = ipaddress.ip_address(o.dns6).packed
        self._net4 = ipaddress.ip_network(o.net, strict=False)
        self._net6 = ipaddress.ip_network(o.prefix6, strict=False)
        st = self.stack
        if st.runner is None:
            raise ValueError("a slirp gateway's stack needs a runner")
        self.runner = st.runner
        with st.locked():
            # the catch-all TCP listener, owned by the gateway itself (no StackSocket)
            self._tcp_listener = st.tcp.listen(4, CATCH_ALL[0], CATCH_ALL[1], 256,
                                               st.upper.add(CatchAllListener(self)),
                                               reuse=True)
            st.udp[CATCH_ALL] = st.upper.add(UdpCallbacks(self._udp_in))
            st.catch_all = st.upper.add(_CatchAllOwner(self))
        for fwd in o.hostfwd:
            self._add_hostfwd(fwd)
        self._expiry = self.loop.call_every(1.0, self._expire)

    # -- running ---------------------------------------------------------------------------
    def start(self) -> Gateway:
        self._thread = threading.Thread(target=self.run, name="slirp", daemon=True)
        self._thread.start()
        return self

    def run(self) -> None:
        self.loop.run()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self._close_all)
        self.loop.stop()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)
        self._close_all()
        self.stack.close()

    def _close_all(self) -> None:
        for sp in list(self.splices):
            sp.close()
        for _, flow in self.udp.expire(float("inf")):
            self._close_flow(flow)
        with self.stack.locked():
            for host, _ in self.pending.values():
                host.close()
            self.pending.clear()
            connecting = list(self._connecting.values())
            self._connecting.clear()
            self._tcp_listener.close()
        loop = self.runner.loop

        def close() -> None:
            for host in connecting:
                loop.remove_writer(host.fileno())
                host.close()

        if connecting:
            self.runner.call_soon(close)
        for s in self._listeners:
            s.close()
        self._listeners.clear()

    def report(self, exc: BaseException) -> None:
        """A bug met on the runner's thread: to the loop's error handler (tests count
        them), else the log."""
        handler = self.loop.on_error
        if handler is not None:
            handler(exc)
        else:
            log.error("slirp: %r", exc)

    def __enter__(self) -> Gateway:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- where a destination leads ---------------------------------------------------------
    def host_target(self, dst: bytes, port: int, proto: str) -> tuple[int, str, int] | None:
        """The host socket address for a guest's flow to ``dst``:``port``: (family,
        address, port), or None when nothing answers there (refused)."""
        o = self.options
        if dst in (self._host4, self._host6):
            if not o.loopback:
                return None
            return (socket.AF_INET, "127.0.0.1", port) if len(dst) == 4 else \
                (socket.AF_INET6, "::1", port)
        if dst in (self._dns4, self._dns6):
            if port != 53 or not self.nameservers:
                return None
            addr, nsport = self.nameservers[0]
            fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
            return fam, addr, nsport
        a = ipaddress.ip_address(dst)
        if a in self._net4 or a in self._net6 or a.is_multicast or a.is_unspecified \
                or a.is_loopback or (a.version == 4 and a == self._net4.broadcast_address):
            return None  # the virtual LAN's other hosts are not the host's business
        return (socket.AF_INET if a.version == 4 else socket.AF_INET6), str(a), port

    # -- TCP (the runner's thread, under the stack's lock) -------------------------------------
    def accepted(self, ep: Any) -> None:
        """A guest's connection is established on the catch-all listener: splice it to
        the host socket its held SYN was connected on."""
        entry = self.pending.pop(ep.key, None)
        if entry is None:  # (its host connection expired meanwhile)
            ep.abort(now=self.stack.clock())
            return
        self.counters["tcp"] += 1
        TcpSplice(self, ep, entry[0])

    def syn(self, key: tuple) -> None:
        """A guest's SYN, held by the stack: connect to where it leads first, and answer
        it as the host's answer goes (open, reset, or ICMP unreachable). The connect's
        completion is watched on the runner's loop."""
        dst, dport = key[0], key[1]
        target = self.host_target(dst, dport, "tcp")
        if target is None:
            self.counters["tcp_refused"] += 1
            self._release(key, errno.ECONNREFUSED)
            return
        if len(self.splices) + len(self.pending) + len(self._connecting) >= self.options.max_tcp:
            self.counters["tcp_dropped"] += 1
            self._release(key, errno.ECONNREFUSED)
            return
        fam, addr, port = target
        try:
            host = socket.socket(fam, socket.SOCK_STREAM)
        except OSError:
            self._release(key, errno.ECONNREFUSED)
            return
        host.setblocking(False)
        host.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        err = host.connect_ex((addr, port))
        if err not in (0, errno.EINPROGRESS):
            host.close()
            self.counters["tcp_refused"] += 1
            self._release(key, err)
            return
        if err == 0 or _writable_now(host):
            # done already (the loopback's handshake completes within connect): answer
            # the SYN now, with no trip through the loop
            self._answer(key, host)
            return
        self._connecting[key] = host
        fd = host.fileno()  # (see TcpSplice.fd)
        self.runner.call_soon(lambda: self.runner.loop.add_writer(
            fd, lambda: self._connected(key, host)))

    def _connected(self, key: tuple, host: socket.socket) -> None:
        st = self.stack
        with st.locked():
            self.runner.loop.remove_writer(host.fileno())
            if self._connecting.pop(key, None) is not host:
                return  # the gateway closed meanwhile (and closes the socket)
            self._answer(key, host)

    def _answer(self, key: tuple, host: socket.socket) -> None:
        """``host``'s connect is over: release the held SYN as it went."""
        err = host.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            host.close()
            self.counters["tcp_refused"] += 1
        else:
            self.pending[key] = (host, time.monotonic())
        self._release(key, err)

    def _release(self, key: tuple, err: int) -> None:
        st = self.stack
        with st.locked():
            st.tcp.release_syn(key, err, st.clock())

    def refused(self, sp: Splice, j: int, err: int) -> None:
        """A host connection failed (refused, unreachable, timed out): reset the guest's."""
        self.counters["tcp_refused"] += 1
        sp.abort(j)

    def _add_hostfwd(self, fwd: Any) -> None:
        fam = socket.AF_INET6 if ":" in fwd.host_addr else socket.AF_INET
        if fwd.proto == "udp":
            s = socket.socket(fam, socket.SOCK_DGRAM)
            s.bind((fwd.host_addr, fwd.host_port))
            s.setblocking(False)
            self._listeners.append(s)
            self.loop.add_reader(s, lambda: self._hostfwd_udp(s, fwd))
            return
        s = socket.socket(fam, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((fwd.host_addr, fwd.host_port))
        s.listen(128)
        s.setblocking(False)
        self._listeners.append(s)
        self.loop.add_reader(s, lambda: self._hostfwd_accept(s, fwd))

    def hostfwd_ports(self) -> list[int]:
        """The host ports the forwards listen on (``hostfwd=tcp::0-:80`` picks one)."""
        return [s.getsockname()[1] for s in self._listeners]

    def _hostfwd_accept(self, lsock: socket.socket, fwd: Any) -> None:
        try:
            host, _ = lsock.accept()
        except OSError:
            return
        if len(self.splices) >= self.options.max_tcp:
            _reset(host)
            return
        host.setblocking(False)
        fam = socket.AF_INET6 if ":" in fwd.guest_addr else socket.AF_INET
        guest = self.stack.socket(fam, socket.SOCK_STREAM)
        guest.setblocking(False)
        err = guest.connect_ex((fwd.guest_addr, fwd.guest_port))
        if err not in (0, errno.EINPROGRESS):
            guest.close()
            _reset(host)
            return
        self.counters["hostfwd"] += 1
        self.splices.add(Splice(self, host, guest, connecting=1))

    def _hostfwd_udp(self, lsock: socket.socket, fwd: Any) -> None:
        # QEMU's udp hostfwd: datagrams to the host port go to the guest from the gateway;
        # replies go back to the last sender
        for _ in range(UDP_BATCH):
            try:
                data, peer = lsock.recvfrom(65535)
            except OSError:
                return
            key = ("fwd", fwd.host_port, peer)
            if self.udp.get(key) is None:
                gs = self.stack.socket(socket.AF_INET, socket.SOCK_DGRAM)
                gs.setblocking(False)
                self._add_flow(key, ("fwd", gs, lsock, peer), self.options.udp_timeout)
                self.loop.add_reader(gs, lambda gs=gs, peer=peer, key=key: self._fwd_reply(
                    gs, lsock, peer, key))
            flow = self.udp.get(key)
            self.udp.touch(key, time.monotonic())
            try:
                flow[1].sendto(data, (fwd.guest_addr, fwd.guest_port))
            except OSError:
                pass

    def _fwd_reply(self, gs: socket.socket, lsock: socket.socket, peer: Any, key: Any) -> None:
        for _ in range(UDP_BATCH):
            try:
                data = gs.recv(65535)
                lsock.sendto(data, peer)
            except OSError:
                return
            self.udp.touch(key, time.monotonic())

    # -- UDP -----------------------------------------------------------------------------------
    def _udp_in(self, data: bytes, src: tuple[str, int], dst: tuple[str, int]) -> None:
        """A guest's datagram to an address:port not bound on the stack (the runner's
        thread, under the stack's lock): an existing flow sends at once; a new one is
        made on the loop's thread."""
        key = (src, dst)
        flow = self.udp.get(key)
        if flow is not None:
            try:
                flow[1].send(data)
            except OSError:
                pass
            return
        self.loop.call_soon_threadsafe(lambda: self._udp_new(key, data))

    def _udp_new(self, key: tuple, data: bytes) -> None:
        flow = self.udp.get(key)
        if flow is None:
            src, dst = key
            d = ipaddress.ip_address(dst[0]).packed
            target = self.host_target(d, dst[1], "udp")
            if target is None:
                return
            fam, addr, port = target
            try:
                s = socket.socket(fam, socket.SOCK_DGRAM)
                s.setblocking(False)
                s.connect((addr, port))
            except OSError:
                return
            dns = d in (self._dns4, self._dns6)
            self.counters["dns" if dns else "udp"] += 1
            flow = ("udp", s, src, dst)
            self._add_flow(key, flow, self.options.dns_timeout if dns else self.options.udp_timeout)
            self.loop.add_reader(s, lambda: self._udp_reply(flow, key))
        try:
            flow[1].send(data)
        except OSError:
            pass

    def _udp_reply(self, flow: tuple, key: tuple) -> None:
        _, s, src, dst = flow
        got = []
        for _ in range(UDP_BATCH):
            try:
                got.append(s.recv(65535))
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                # the flow ends (the guest's next datagram opens a new one); a refusal
                # (the host's ICMP port unreachable) goes on to the guest as one
                self._drop_flow(key)
                if exc.errno == errno.ECONNREFUSED:
                    self._port_unreachable(src, dst)
                return
        if not got:
            return
        self.udp.touch(key, time.monotonic())
        st = self.stack
        with st.locked():
            for data in got:
                try:
                    st.udp_send(data, src, dst[1], src=dst[0])
                except OSError:
                    pass

    def _port_unreachable(self, src: tuple[str, int], dst: tuple[str, int]) -> None:
        """Tell the guest its datagram from ``src`` to ``dst`` met a closed port: an ICMP
        port unreachable quoting the IP and UDP headers of such a datagram."""
        s = ipaddress.ip_address(src[0]).packed
        d = ipaddress.ip_address(dst[0]).packed
        head = 20 if len(s) == 4 else ipv6.HEADER_LEN
        pkt = bytearray(head + 8)
        pkt[head:] = struct.pack("!HHHH", src[1], dst[1], 8, 0)
        st = self.stack
        with st.locked():
            now = st.clock()
            if len(s) == 4:
                ipv4.build(pkt, s, d, ipv4.PROTO_UDP, 8)
                st._icmp4_error(s, d, icmp4.DEST_UNREACHABLE, icmp4.UNREACH_PORT,
                                memoryview(pkt), now)
            else:
                ipv6.build(pkt, s, d, ipv6.PROTO_UDP, 8)
                st._icmp6_error(s, d, icmp6.DEST_UNREACHABLE, icmp6.UNREACH_PORT,
                                memoryview(pkt), now)

    def _add_flow(self, key: Any, flow: tuple, timeout: float) -> None:
        for _, old in self.udp.add(key, flow, timeout, time.monotonic()):
            self.counters["udp_evicted"] += 1
            self._close_flow(old)

    def _drop_flow(self, key: Any) -> None:
        flow = self.udp.remove(key)
        if flow is not None:
            self._close_flow(flow)

    def _close_flow(self, flow: tuple) -> None:
        s = flow[1]
        try:
            self.loop.remove_reader(s)
        except (KeyError, ValueError, OSError):
            pass
        try:
            s.close()
        except OSError:
            pass

    def _expire(self) -> None:
        now = time.monotonic()
        for _, flow in self.udp.expire(now):
            self._close_flow(flow)
        with self.stack.locked():
            for key, (host, when) in list(self.pending.items()):
                if now - when > 75:  # the guest never completed its handshake
                    del self.pending[key]
                    host.close()

    # -- ICMP echo -------------------------------------------------------------------------------
    def echo(self, family: int, src: bytes, dst: bytes, rest: int, data: bytes) -> None:
        """An echo request to ``dst``, not the gateway: through a ping socket of the host's
        (``net.ipv4.ping_group_range``), else dropped."""
        target = self.host_target(dst, 0, "icmp")
        if target is None:
            return
        fam, addr, _ = target
        key = ("echo", src, dst, rest >> 16)
        flow = self.udp.get(key)
        if flow is None:
            try:
                s = socket.socket(fam, socket.SOCK_DGRAM,
                                  socket.IPPROTO_ICMP if fam == socket.AF_INET
                                  else socket.IPPROTO_ICMPV6)
                s.setblocking(False)
                s.connect((addr, 0))
            except OSError:
                return  # no ping sockets for us
            flow = ("echo", s, src, dst, rest >> 16, family)
            self._add_flow(key, flow, self.options.dns_timeout)
            self.loop.add_reader(s, lambda: self._echo_reply(flow, key))
        self.counters["echo"] += 1
        out = bytearray(8 + len(data))
        if family == 4:
            icmp4.build_echo(out, rest >> 16, rest & 0xFFFF, data)
        else:
            out[0] = icmp6.ECHO_REQUEST
            out[4:6] = (rest >> 16).to_bytes(2, "big")
            out[6:8] = (rest & 0xFFFF).to_bytes(2, "big")
            out[8:] = data  # the kernel fills in the checksum of ICMPv6
        try:
            flow[1].send(out)
        except OSError:
            pass

    def _echo_reply(self, flow: tuple, key: Any) -> None:
        _, s, src, dst, ident, family = flow
        try:
            reply = s.recv(65535)
        except OSError:
            return
        if len(reply) < 8:
            return
        seq = int.from_bytes(reply[6:8], "big")
        body = reply[8:]
        st = self.stack
        with st.locked():
            out = bytearray(8 + len(body))
            try:
                if family == 4:
                    icmp4.build_echo(out, ident, seq, body, reply=True)
                    st.send_ip4(dst, src, ipv4.PROTO_ICMP, out)
                else:
                    icmp6.build_echo(out, dst, src, ident, seq, body, reply=True)
                    st.send_ip6(dst, src, ipv6.PROTO_ICMPV6, out)
            except OSError:
                pass


def _writable_now(s: socket.socket) -> bool:
    p = select.poll()
    p.register(s, select.POLLOUT)
    return bool(p.poll(0))


def _reset(s: socket.socket) -> None:
    """Close with a reset (SO_LINGER 0), as a refused connection looks."""
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
    except OSError:
        pass
    try:
        s.close()
    except OSError:
        pass
