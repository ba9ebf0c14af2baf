"""slirp's options: QEMU's user-mode defaults, and the option strings of ``slirp://``
and ``threadnet slirp`` (``dhcp,hostfwd=tcp:127.0.0.1:8080-:80,...``).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from threadnet.errors import URLError


@dataclass(frozen=True)
class HostForward:
    """A host-to-guest port forward, QEMU's ``hostfwd=PROTO:[HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT``."""

    proto: str  # "tcp" or "udp"
    host_addr: str
    host_port: int
    guest_addr: str
    guest_port: int

    @classmethod
    def parse(cls, text: str, default_guest: str) -> HostForward:
        proto, sep, rest = text.partition(":")
        if not sep:
            proto, rest = "tcp", text
        proto = proto.lower() or "tcp"
        if proto not in ("tcp", "udp"):
            raise URLError(f"hostfwd {text!r}: protocol must be tcp or udp")
        host, sep, guest = rest.partition("-")
        if not sep:
            raise URLError(f"hostfwd {text!r}: expected [HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT")
        try:
            haddr, _, hport = host.rpartition(":")
            gaddr, _, gport = guest.rpartition(":")
            haddr = haddr.strip("[]") or "127.0.0.1"
            gaddr = gaddr.strip("[]") or default_guest
            ipaddress.ip_address(haddr)
            ipaddress.ip_address(gaddr)
            hp, gp = int(hport), int(gport)
        except ValueError:
            raise URLError(f"hostfwd {text!r}: bad address or port") from None
        if not (0 <= hp < 65536 and 0 < gp < 65536):
            raise URLError(f"hostfwd {text!r}: port out of range")
        return cls(proto, haddr, hp, gaddr, gp)


@dataclass
class SlirpOptions:
    """What a slirp gateway is: QEMU's ``-netdev user`` defaults unless said otherwise."""

    #: the virtual IPv4 network, the gateway (the host as the guest sees it) and the DNS
    net: str = "10.0.2.0/24"
    host: str = "10.0.2.2"
    dns: str = "10.0.2.3"
    #: DHCP: serve addresses from ``dhcp_start`` (16 of them, as QEMU)
    dhcp: bool = True
    dhcp_start: str = "10.0.2.15"
    #: IPv6 by router advertisements: the prefix, the gateway's and the DNS's addresses
    ipv6: bool = True
    prefix6: str = "fd00::/64"
    host6: str = "fd00::2"
    dns6: str = "fd00::3"
    #: the gateway's addresses reach the host's loopback (QEMU's default; off: "restrict")
    loopback: bool = True
    #: the nameservers the DNS forwarder asks, as (address, port); default: the host's
    #: /etc/resolv.conf
    nameservers: list[tuple[str, int]] = field(default_factory=list)
    hostfwd: list[HostForward] = field(default_factory=list)
    mtu: int = 1500
    #: the flow table's bounds (TCP connections and UDP/ICMP flows, each) and the idle
    #: timeout of UDP flows (DNS flows: ``dns_timeout``)
    max_tcp: int = 512
    max_udp: int = 512
    udp_timeout: float = 60.0
    dns_timeout: float = 10.0
    mac: str = "52:55:0a:00:02:02"

    @classmethod
    def parse(cls, text: str) -> SlirpOptions:
        """Options as ``KEY[=VALUE]`` items separated by ``,`` or ``/`` (a hostfwd or an
        address never holds either): ``dhcp``, ``nodhcp``, ``noipv6``, ``restrict`` (no
        host loopback), ``net=10.0.2.0/24`` (the last ``/`` is the length's),
        ``host=``, ``dns=``, ``dhcpstart=``, ``prefix6=``, ``host6=``, ``dns6=``,
        ``nameserver=ADDR[#PORT]`` (repeatable), ``hostfwd=...`` (repeatable),
        ``mtu=``, ``maxtcp=``, ``maxudp=``, ``udptimeout=``."""
        o = cls()
        items: list[str] = []
        for part in text.replace(",", "/").split("/"):
            part = part.strip()
            if not part:
                continue
            if part.isdigit() and items and items[-1].split("=", 1)[0].lower() in (
                    "net", "prefix6"):
                items[-1] += "/" + part  # a prefix length
                continue
            items.append(part)
        for item in items:
            key, sep, value = item.partition("=")
            key = key.lower()
            try:
                if key == "dhcp":
                    o.dhcp = True
                elif key == "nodhcp":
                    o.dhcp = False
                elif key == "noipv6":
                    o.ipv6 = False
                elif key == "restrict" or key == "noloopback":
                    o.loopback = False
                elif key == "net":
                    n = ipaddress.ip_network(value, strict=False)
                    o.net = str(n)
                    o.host = str(n.network_address + 2)
                    o.dns = str(n.network_address + 3)
                    o.dhcp_start = str(n.network_address + 15)
                elif key in ("host", "dns", "dhcpstart", "host6", "dns6"):
                    ipaddress.ip_address(value)
                    setattr(o, {"dhcpstart": "dhcp_start"}.get(key, key), value)
                elif key == "prefix6":
                    n6 = ipaddress.IPv6Network(value, strict=False)
                    o.prefix6 = str(n6)
                    o.host6 = str(n6.network_address + 2)
                    o.dns6 = str(n6.network_address + 3)
                elif key == "nameserver":
                    addr, _, port = value.partition("#")
                    ipaddress.ip_address(addr)
                    o.nameservers.append((addr, int(port or 53)))
                elif key == "hostfwd":
                    o.hostfwd.append(HostForward.parse(value, o.dhcp_start))
                elif key in ("mtu", "maxtcp", "maxudp"):
                    setattr(o, {"maxtcp": "max_tcp", "maxudp": "max_udp"}.get(key, key),
                            int(value))
                elif key == "udptimeout":
                    o.udp_timeout = float(value)
                else:
                    raise URLError(f"slirp: unknown option {key!r}")
            except URLError:
                raise
            except ValueError:
                raise URLError(f"slirp: bad value in {item!r}") from None
        if not 576 <= o.mtu <= 65520:
            raise URLError("slirp: mtu must be 576..65520")
        return o

    def config(self) -> str:
        """The gateway stack's configuration string (threadnet's iothconf items)."""
        plen = ipaddress.ip_network(self.net, strict=False).prefixlen
        items = ["eth", f"mac={self.mac}", f"mtu={self.mtu}", f"ip={self.host}/{plen}",
                 f"ip={self.dns}/{plen}"]
        if self.ipv6:
            plen6 = ipaddress.IPv6Network(self.prefix6, strict=False).prefixlen
            items += [f"ip={self.host6}/{plen6}", f"ip={self.dns6}/{plen6}",
                      f"ra={self.prefix6}", f"ra.rdnss={self.dns6}"]
        if self.dhcp:
            first = ipaddress.ip_address(self.dhcp_start)
            items += [f"dhcpd={first}-{first + 15}", f"dhcpd.router={self.host}",
                      f"dhcpd.dns={self.dns}"]
        return ",".join(items)


def host_nameservers(path: str = "/etc/resolv.conf") -> list[tuple[str, int]]:
    """The host's nameservers, from ``resolv.conf`` (none readable: 127.0.0.1)."""
    out: list[tuple[str, int]] = []
    try:
        with open(path) as f:
            for line in f:
                words = line.split()
                if len(words) >= 2 and words[0] == "nameserver":
                    try:
                        ipaddress.ip_address(words[1].split("%")[0])
                    except ValueError:
                        continue
                    out.append((words[1].split("%")[0], 53))
    except OSError:
        pass
    return out or [("127.0.0.1", 53)]
