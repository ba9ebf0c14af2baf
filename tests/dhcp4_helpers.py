"""Helpers of the DHCPv4 tests: a scripted server (or client) agent that records what
reaches its port and answers as a test tells it, and running a FakeLan from event to
event so that hours of lease timers take milliseconds."""

from __future__ import annotations

import ipaddress
import math

from threadnet.stack.agents import Agent
from threadnet.wire import dhcp4
from threadnet.wire.dhcp4 import DhcpMessage

from stack_helpers import FakeLan


def ip(text: str) -> bytes:
    return ipaddress.IPv4Address(text).packed


class Scripted(Agent):
    """Records the DHCP messages that reach ``port`` on its interface:
    ``got`` = [(time, src, dst, message)]."""

    kind = "scripted"

    def __init__(self, ifindex: int, port: int = dhcp4.SERVER_PORT) -> None:
        super().__init__(ifindex)
        self.udp_ports = ((4, port),)
        self.got: list[tuple[float, bytes, bytes, DhcpMessage]] = []

    def on_udp(self, stack, iface, family, src, sport, dst, dport, data, now):
        self.got.append((now, src, dst, dhcp4.parse(data)))

    def of_type(self, kind: int) -> list[tuple[float, bytes, bytes, DhcpMessage]]:
        return [g for g in self.got if g[3].message_type == kind]


def answer(stack, req: DhcpMessage, kind: int, yiaddr: str = "0.0.0.0", *,
           server: str = "10.9.0.1", dst: bytes | None = None, xid: int | None = None,
           chaddr: bytes | None = None, **options: bytes) -> DhcpMessage:
    """Send a server's reply to ``req`` from ``stack``'s eth0 (to ``yiaddr`` at the
    client's MAC unless ``dst``); ``options`` by name: opt_51=..., or the shortcuts
    lease=, t1=, t2=, mask=, router=, dns=, domain=, hostname=, mtu=, sid=."""
    names = {"lease": dhcp4.OPT_LEASE_TIME, "t1": dhcp4.OPT_T1, "t2": dhcp4.OPT_T2,
             "mask": dhcp4.OPT_SUBNET_MASK, "router": dhcp4.OPT_ROUTER, "dns": dhcp4.OPT_DNS,
             "domain": dhcp4.OPT_DOMAIN_NAME, "hostname": dhcp4.OPT_HOST_NAME,
             "mtu": dhcp4.OPT_MTU, "sid": dhcp4.OPT_SERVER_ID}
    opts = {dhcp4.OPT_MESSAGE_TYPE: bytes([kind]), dhcp4.OPT_SERVER_ID: ip(server)}
    for name, value in options.items():
        code = int(name[4:]) if name.startswith("opt_") else names[name]
        if value is None:
            opts.pop(code, None)  # (sid=None: a reply without its server identifier)
        else:
            opts[code] = value
    msg = DhcpMessage(op=dhcp4.BOOTREPLY, xid=req.xid if xid is None else xid,
                      chaddr=req.chaddr if chaddr is None else chaddr,
                      yiaddr=ip(yiaddr), options=opts)
    iface = stack.interfaces[2]
    target = dst if dst is not None else (ip(yiaddr) if kind != dhcp4.NAK else b"\xff" * 4)
    stack.send_udp_on(iface, ip(server), dhcp4.SERVER_PORT, target, dhcp4.CLIENT_PORT,
                      dhcp4.to_bytes(msg), req.chaddr if kind != dhcp4.NAK else None)
    return msg


def run(lan: FakeLan, cond, limit: float) -> None:
    """``lan.run_until``, but when no frame is on the wire the clock jumps to just before
    the stacks' next deadline: hours of timers in a few thousand steps."""
    end = lan.now + limit
    while not cond():
        assert lan.now < end, "no progress on fake time"
        lan.collect()  # what the test sent between steps
        if not lan.queue:
            times = [d for d in (s.next_deadline() for s in lan.stacks) if d is not None]
            target = min(min(times, default=end), end)
            k = math.floor((target - lan._start) / lan.STEP + 1e-9) - 1
            if k > lan.ticks:
                lan.ticks = k
        lan.step()


def settle(lan: FakeLan, seconds: float) -> None:
    """Run the LAN for ``seconds`` (jumping over quiet times)."""
    end = lan.now + seconds
    run(lan, lambda: lan.now >= end - 1e-9, seconds + 1)
