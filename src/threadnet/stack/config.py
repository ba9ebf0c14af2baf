"""libioth/iothconf-style configuration strings (virtualsquare iothconf).

``"eth,ip=10.0.0.5/24,gw=10.0.0.1"``: comma-separated items. ``eth`` brings the interface
up; ``ip=ADDR/PLEN`` (IPv4 or IPv6) adds an address; ``gw=ADDR`` a default route;
``mac=``/``macaddr=`` sets the MAC; ``iface=NAME`` or ``ifindex=N`` picks the interface;
``fqdn=``, ``dns=``, ``domain=`` are recorded for the resolver; ``mtu=N`` sets the MTU;
``acd`` probes the IPv4 addresses for conflicts (RFC 5227) before using them.
``dhcp``/``dhcp4``, ``dhcp6``, ``rd``/``rd6``, ``slaac`` and ``auto``/``auto4``/``auto6``
ask for dynamic configuration. A ``-`` before a word undoes it (``-eth``, ``-dhcp``...).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from threadnet.errors import ThreadnetError


class ConfigError(ThreadnetError, ValueError):
    """A configuration string that cannot be understood."""


_FLAGS = {"eth", "dhcp", "dhcp4", "dhcpv4", "dhcp6", "dhcpv6", "rd", "rd6", "slaac",
          "auto", "auto4", "auto6", "static", "debug", "acd"}
_KEYS = {"ip", "gw", "mac", "macaddr", "iface", "ifindex", "fqdn", "dns", "domain", "mtu",
         "stack", "vnl"}


@dataclass
class Config:
    eth: bool | None = None
    addresses: list[ipaddress.IPv4Interface | ipaddress.IPv6Interface] = field(default_factory=list)
    gateways: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = field(default_factory=list)
    mac: bytes | None = None
    iface: str | None = None
    ifindex: int | None = None
    fqdn: str | None = None
    dns: list[str] = field(default_factory=list)
    domain: str | None = None
    mtu: int | None = None
    dhcp4: bool | None = None
    dhcp6: bool | None = None
    rd: bool | None = None
    slaac: bool | None = None
    acd: bool | None = None  # IPv4 address conflict detection (RFC 5227) for ip= here
    stack: str | None = None
    vnl: str | None = None
    undo: set[str] = field(default_factory=set)


def parse_config(text: str) -> Config:
    """Parse a configuration string; raises ConfigError naming the bad item."""
    from threadnet.wire.ethernet import mac_from_str

    cfg = Config()
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        neg = item.startswith("-")
        word = item[1:] if neg else item
        key, eq, value = word.partition("=")
        key = key.lower()
        if not eq:
            if key not in _FLAGS:
                raise ConfigError(f"unknown configuration item {item!r} in {text!r}")
            on = not neg
            if neg:
                cfg.undo.add(key)
            if key == "eth":
                cfg.eth = on
            elif key in ("dhcp", "dhcp4", "dhcpv4"):
                cfg.dhcp4 = on
            elif key in ("dhcp6", "dhcpv6"):
                cfg.dhcp6 = on
            elif key in ("rd", "rd6"):
                cfg.rd = on
            elif key == "slaac":
                cfg.slaac = on
            elif key == "acd":
                cfg.acd = on
            elif key in ("auto", "auto4", "auto6"):
                cfg.eth = cfg.eth if not on else True
                if key in ("auto", "auto4"):
                    cfg.dhcp4 = on
                if key in ("auto", "auto6"):
                    cfg.dhcp6 = on
                    cfg.rd = on
            continue
        if neg or key not in _KEYS:
            raise ConfigError(f"unknown configuration item {item!r} in {text!r}")
        try:
            if key == "ip":
                if "/" not in value:
                    raise ValueError("needs a prefix length, e.g. ip=10.0.0.5/24")
                cfg.addresses.append(ipaddress.ip_interface(value))
            elif key == "gw":
                cfg.gateways.append(ipaddress.ip_address(value))
            elif key in ("mac", "macaddr"):
                cfg.mac = mac_from_str(value)
            elif key == "iface":
                cfg.iface = value
            elif key == "ifindex":
                cfg.ifindex = int(value)
            elif key == "fqdn":
                cfg.fqdn = value
            elif key == "dns":
                ipaddress.ip_address(value)
                cfg.dns.append(value)
            elif key == "domain":
                cfg.domain = value
            elif key == "mtu":
                cfg.mtu = int(value)
                if not 68 <= cfg.mtu <= 65535:
                    raise ValueError("MTU must be 68..65535")
            elif key == "stack":
                cfg.stack = value
            elif key == "vnl":
                cfg.vnl = value
        except ValueError as exc:
            raise ConfigError(f"bad {key}= in {text!r}: {exc}") from None
    return cfg
