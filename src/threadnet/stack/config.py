"""libioth/iothconf-style configuration strings (virtualsquare iothconf): the one parser.

``"eth,ip=10.0.0.5/24,gw=10.0.0.1"``: comma-separated items. ``eth`` brings the interface
up; ``ip=ADDR/PLEN`` (IPv4 or IPv6) adds an address; ``gw=ADDR`` a default route;
``mac=``/``macaddr=`` sets the MAC; ``iface=NAME`` or ``ifindex=N`` picks the interface;
``fqdn=``, ``dns=``, ``domain=`` are recorded for the resolver; ``mtu=N`` sets the MTU (a
threadnet addition); ``acd`` probes the IPv4 addresses for conflicts (RFC 5227) before
using them (a threadnet addition, undone by ``-acd``); ``debug`` asks for a dump of the
result. ``dhcp``/``dhcp4``/``dhcpv4``,
``dhcp6``/``dhcpv6``, ``rd``/``rd6``, ``slaac`` and ``auto``/``auto4``/``auto6`` (also
``autov4``, ``autov6``) ask for dynamic configuration: agents on the interface
(``stack/autoconf.py``; one not implemented is refused with DynamicConfigNotImplemented).
``-static``, ``-eth``, ``-dhcp``..., ``-rd``..., ``-auto``... and ``-all`` undo what those
set up. ``dhcpd``, ``dhcpd6`` and ``ra`` start servers (threadnet's items, with options
as ``NAME.OPTION=VALUE``; ``-dhcpd``... stop them).

``Stack.configure``, the stack console's ``config`` command and ``compat.iothpy`` all parse
with ``parse_config``. The grammar is iothconf's (iothconf.c ``ioth_config``); ``lenient``
gives its value rules too, for iothpy programs, where the default is strict:

* ``ip=`` without a prefix length: iothconf's ``iothconf_static`` takes /24 for IPv4 and
  /64 for IPv6 (it also does so for an explicit /0). Lenient does the same except for /0;
  strict refuses a missing prefix, since a guessed /24 silently makes the wrong route.
* ``gw=ADDR/N`` (as in iothpy's newstackc example): lenient takes ``ADDR`` (real iothconf
  drops the item silently); strict refuses it.

Unlike iothconf, a malformed value is an error here rather than skipped silently.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection
from dataclasses import dataclass, field

from threadnet.errors import ThreadnetError


class ConfigError(ThreadnetError, ValueError):
    """A configuration string that cannot be understood; the message names the item."""


class DynamicConfigNotImplemented(NotImplementedError):
    """The configuration asks for a dynamic method or a server that threadnet does not
    implement yet."""


# word -> the dynamic methods it turns on (iothconf's IOTHCONF_DHCP/DHCPV6/RD/RD_SLAAC)
_DYNAMIC = {"dhcp": ("dhcp4",), "dhcp4": ("dhcp4",), "dhcpv4": ("dhcp4",),
            "dhcp6": ("dhcp6",), "dhcpv6": ("dhcp6",), "rd": ("rd",), "rd6": ("rd",),
            "slaac": ("slaac",), "auto": ("dhcp4", "dhcp6", "rd"), "auto4": ("dhcp4",),
            "autov4": ("dhcp4",), "auto6": ("dhcp6", "rd"), "autov6": ("dhcp6", "rd")}
# -word -> what it cleans (iothconf's clean_flags); -slaac is not one of them
_CLEAN = {"static": ("static",), "eth": ("eth",),
          "dhcp": ("dhcp4",), "dhcp4": ("dhcp4",), "dhcpv4": ("dhcp4",),
          "dhcp6": ("dhcp6",), "dhcpv6": ("dhcp6",), "rd": ("rd",), "rd6": ("rd",),
          "auto": ("eth", "dhcp4", "dhcp6", "rd"), "all": ("eth", "dhcp4", "dhcp6", "rd"),
          "auto4": ("eth", "dhcp4"), "autov4": ("eth", "dhcp4"),
          "auto6": ("eth", "dhcp6", "rd"), "autov6": ("eth", "dhcp6", "rd")}
_STATIC_KEYS = {"ip", "gw", "dns", "domain"}
#: the servers a stack may run on an interface (threadnet's items; iothconf has none):
#: ``dhcpd[=FIRST-LAST]`` (``dhcpd4``), ``dhcpd6[=FIRST-LAST]``, ``ra[=PREFIX/LEN]``;
#: their options are ``NAME.OPTION=VALUE`` items, e.g. ``dhcpd.lease=600``
SERVERS = {"dhcpd": "dhcpd", "dhcpd4": "dhcpd", "dhcpd6": "dhcpd6", "ra": "ra"}


@dataclass
class Config:
    """One parsed configuration string. Flags are None when the string does not mention
    them, True when it asks for them and False when it undoes them (``-eth``)."""

    eth: bool | None = None
    addresses: list[ipaddress.IPv4Interface | ipaddress.IPv6Interface] = field(default_factory=list)
    gateways: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = field(default_factory=list)
    mac: bytes | None = None
    iface: str | None = None
    ifindex: int | None = None
    fqdn: str | None = None
    dns: list[str] = field(default_factory=list)
    domains: list[str] = field(default_factory=list)
    mtu: int | None = None
    dhcp4: bool | None = None
    dhcp6: bool | None = None
    rd: bool | None = None
    slaac: bool | None = None
    debug: bool = False
    acd: bool | None = None  # IPv4 address conflict detection (RFC 5227) for ip= here
    stack: str | None = None  # stack= or a bare stack name (ioth_newstackc strings only)
    vnl: str | None = None  # vnl= (ioth_newstackc strings only)
    clean: set[str] = field(default_factory=set)  # what -items undo: static, eth, dhcp4...
    #: servers asked for: "dhcpd", "dhcpd6", "ra" -> option -> values in order; the
    #: option "" holds the values of the item itself (``dhcpd=10.0.0.100-10.0.0.199``).
    #: Each server checks its own options (``stack/autoconf.py``).
    servers: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    #: servers the string stops (``-dhcpd``)
    servers_off: set[str] = field(default_factory=set)
    static: bool = False  # ip=, gw=, dns= or domain= given (iothconf's IOTHCONF_STATIC)
    items: int = 0  # configuration items; stack=, vnl= and a bare stack name not counted

    @property
    def domain(self) -> str | None:
        """The last ``domain=`` (the resolver's search domain), or None."""
        return self.domains[-1] if self.domains else None

    @property
    def dynamic(self) -> list[str]:
        """The dynamic methods asked for: some of dhcp4, dhcp6, rd, slaac."""
        return [n for n in ("dhcp4", "dhcp6", "rd", "slaac") if getattr(self, n)]



def parse_mac(text: str) -> bytes:
    """A MAC address as ``02:00:00:00:00:05``, ``02-00-...`` or 12 hex digits."""
    from threadnet.wire.ethernet import mac_from_str

    text = text.strip()
    if ":" in text or "-" in text:
        return mac_from_str(text)
    try:
        mac = bytes.fromhex(text)
    except ValueError:
        raise ValueError(f"bad MAC address {text!r}") from None
    if len(mac) != 6:
        raise ValueError(f"bad MAC address {text!r}: not 6 bytes")
    return mac


def parse_config(text: str, *, lenient: bool = False,
                 stacks: Collection[str] | None = None) -> Config:
    """Parse a configuration string; raises ConfigError naming the bad item.

    ``lenient``: iothconf's value rules (``ip=`` without a prefix is /24 or /64, ``gw=``
    may carry a prefix); see the module's notes. ``stacks``: parse an ``ioth_newstackc``
    string, which may also hold ``stack=``, ``vnl=`` and a bare stack name from ``stacks``.
    """
    if not isinstance(text, str):
        raise TypeError(f"configuration must be a str, not {type(text).__name__}")
    cfg = Config()
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        key, eq, value = item.partition("=")
        key = key.strip().lower()
        value = value.strip()
        if not eq:
            if key in ("acd", "-acd"):
                cfg.acd = key == "acd"
            elif key in SERVERS:
                cfg.servers.setdefault(SERVERS[key], {}).setdefault("", [])
            elif key.partition(".")[0] in SERVERS and key.partition(".")[2]:
                server, _, option = key.partition(".")  # a flag: ra.managed
                opts = cfg.servers.setdefault(SERVERS[server], {})
                opts.setdefault("", [])
                opts.setdefault(option, []).append("")
            elif key.startswith("-") and key[1:] in SERVERS:
                cfg.servers_off.add(SERVERS[key[1:]])
                cfg.servers.pop(SERVERS[key[1:]], None)
            elif key.startswith("-"):
                undo = _CLEAN.get(key[1:])
                if undo is None:
                    raise ConfigError(f"unknown configuration item {item!r} in {text!r}")
                cfg.clean.update(undo)
                for name in undo:
                    if name != "static":
                        setattr(cfg, name, False)
            elif key == "eth":
                cfg.eth = True
            elif key in _DYNAMIC:
                for name in _DYNAMIC[key]:
                    setattr(cfg, name, True)
                if cfg.eth is None:  # a client on a down link never hears an answer:
                    cfg.eth = True  # dhcp, rd, slaac... turn it on, as auto does (not -eth)
            elif key == "debug":
                cfg.debug = True
            elif stacks is not None and key in stacks:
                cfg.stack = key  # a bare stack name (iothpy: Stack("vdestack"))
                continue
            else:
                raise ConfigError(f"unknown configuration item {item!r} in {text!r}")
            cfg.items += 1
            continue
        server, dot, option = key.partition(".")
        if server in SERVERS:
            if not value and not dot:
                raise ConfigError(f"empty value in {item!r} in {text!r}")
            if dot and not option:
                raise ConfigError(f"no option name in {item!r} in {text!r}")
            opts = cfg.servers.setdefault(SERVERS[server], {})
            opts.setdefault("", [])
            opts.setdefault(option, []).append(value)
            cfg.items += 1
            continue
        try:
            if key == "ip":
                addr, slash, plen = value.partition("/")
                if not slash:
                    if not lenient:
                        raise ValueError("needs a prefix length, e.g. ip=10.0.0.5/24")
                    plen = "24" if ipaddress.ip_address(addr).version == 4 else "64"
                cfg.addresses.append(ipaddress.ip_interface(f"{addr}/{int(plen)}"))
            elif key == "gw":
                cfg.gateways.append(ipaddress.ip_address(value.partition("/")[0] if lenient
                                                         else value))
            elif key == "dns":
                cfg.dns.append(str(ipaddress.ip_address(value)))
            elif key == "domain":
                if not value:
                    raise ValueError("empty domain")
                cfg.domains.append(value)
            elif key in ("mac", "macaddr"):
                cfg.mac = parse_mac(value)
            elif key == "fqdn":
                cfg.fqdn = value
            elif key == "iface":
                cfg.iface = value
            elif key == "ifindex":
                cfg.ifindex = int(value)
            elif key == "mtu":
                cfg.mtu = int(value)
                if not 68 <= cfg.mtu <= 65535:
                    raise ValueError("MTU must be 68..65535")
            elif stacks is not None and key == "stack":
                cfg.stack = value
                continue
            elif stacks is not None and key == "vnl":
                cfg.vnl = value
                continue
            else:
                raise ConfigError(f"unknown configuration item {item!r} in {text!r}")
        except ValueError as exc:
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(f"bad {key}= in {text!r}: {exc}") from None
        cfg.static = cfg.static or key in _STATIC_KEYS
        cfg.items += 1
    return cfg
