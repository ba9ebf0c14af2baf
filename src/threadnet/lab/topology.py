"""A lab's topology: switches, hosts, routers and links, from Python or from a TOML file.

The model is plain data (``Topology.to_dict`` is the TOML file's own shape), checked as
it is built: a bad name, value or reference fails at once with ``TopologyError``, which
names the file, the line and the key when the topology came from a file.

    [switches.lan1]                 # a threadnet switch (keys: hub, fstp, numports)
    [hosts.h1]                      # a stack host (kind = "stack") or kind = "netns"
    switch = "lan1"                 # shorthand for a plain link h1 -- lan1
    dhcp = true                     # or ip = "10.0.1.5/24", gw = "10.0.1.1"
    [routers.r1]                    # a forwarding stack, one interface per entry
    interfaces = [{ switch = "lan1", ip = "10.0.1.1/24", dhcpd = true },
                  { switch = "wan", ip = "192.0.2.1/24", nat = true }]
    [[links]]                       # a cable, with impairments (both directions)
    a = "lan1"
    b = "wan"
    delay = "20ms"                  # also loss = "5%", bw = "10Mbit", jitter = "5ms", vlan = 10

docs/labs.md describes every key.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

from threadnet.errors import ThreadnetError

NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,14}\Z")
HOST_KINDS = ("stack", "netns")


class TopologyError(ThreadnetError, ValueError):
    """A topology that cannot be built; the message names the node, the key (and, for a
    file, its line). ``table``/``key`` say where in the file's shape, when known."""

    def __init__(self, message: str, table: str | None = None, key: str | None = None) -> None:
        super().__init__(message)
        self.table = table
        self.key = key


class _Located(TopologyError):
    """An error whose message already names its file and line."""


# -- values ----------------------------------------------------------------------------
_UNIT = re.compile(r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([A-Za-z%]*)\s*\Z")
_TIME = {"": 1.0, "ms": 1.0, "s": 1000.0, "us": 0.001}
_RATE = {"": 1e6, "bit": 1.0, "bps": 1.0, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9,
         "k": 1e3, "m": 1e6, "g": 1e9}


def _number(value: Any, units: dict[str, float], what: str, example: str) -> float:
    if isinstance(value, bool):
        raise TopologyError(f"{what}: expected a number or a string like {example!r}, "
                            f"not {value!r}")
    if isinstance(value, int | float):
        number, unit = float(value), ""
    elif isinstance(value, str) and (m := _UNIT.match(value)):
        number, unit = float(m.group(1)), m.group(2).lower()
    else:
        raise TopologyError(f"{what}: expected a number or a string like {example!r}, "
                            f"not {value!r}")
    if unit not in units:
        raise TopologyError(f"{what}: unknown unit {unit!r} in {value!r} "
                            f"(known: {', '.join(u for u in units if u)})")
    result = number * units[unit]
    if result < 0:
        raise TopologyError(f"{what}: must not be negative")
    return result


def parse_delay(value: Any, what: str = "delay") -> float:
    """``"50ms"``, ``"0.1s"``, ``50`` (milliseconds) -> milliseconds."""
    ms = _number(value, _TIME, what, "50ms")
    if ms > 60_000:
        raise TopologyError(f"{what}: {value!r} is more than a minute")
    return ms


def parse_loss(value: Any, what: str = "loss") -> float:
    """``"20%"``, ``20``, ``"0.5%"`` -> a percentage."""
    pct = _number(value, {"": 1.0, "%": 1.0}, what, "20%")
    if pct > 100:
        raise TopologyError(f"{what}: {value!r} is more than 100%")
    return pct


def parse_bw(value: Any, what: str = "bw") -> float:
    """``"10Mbit"``, ``"512kbit"``, ``10`` (Mbit/s, as Mininet) -> bits per second."""
    bps = _number(value, _RATE, what, "10Mbit")
    if bps < 8000 and bps != 0:
        raise TopologyError(f"{what}: {value!r} is less than 8 kbit/s")
    return bps


def parse_vlans(value: Any, what: str = "vlan") -> list[int]:
    items = value if isinstance(value, list) else [value]
    out = []
    for v in items:
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 4094:
            raise TopologyError(f"{what}: {v!r} is not a VLAN tag (1-4094)")
        if v not in out:
            out.append(v)
    return out


def _cidr(value: Any, what: str) -> str:
    if not isinstance(value, str) or "/" not in value:
        raise TopologyError(f"{what}: expected ADDRESS/PREFIX, e.g. '10.0.0.5/24', not {value!r}")
    try:
        iface = ipaddress.ip_interface(value)
    except ValueError:
        raise TopologyError(f"{what}: {value!r} is not an address with a prefix length") from None
    if iface.ip == iface.network.network_address and iface.network.prefixlen < iface.max_prefixlen - 1:
        raise TopologyError(f"{what}: {value!r} is a network address, not a host's")
    return value


def _addr(value: Any, what: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise TopologyError(f"{what}: {value!r} is not an IP address") from None


def _name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not NAME_RE.match(value):
        raise TopologyError(f"{what}: {value!r} is not a node name (a letter, then up to 14 "
                            "letters, digits, '-' or '_')")
    return value


def _bool(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise TopologyError(f"{what}: expected true or false, not {value!r}")
    return value


def _str(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise TopologyError(f"{what}: expected a string, not {value!r}")
    return value


def _ips(value: Any, what: str) -> list[str]:
    items = value if isinstance(value, list) else [value]
    return [_cidr(v, what) for v in items]


def _configs(value: Any, what: str) -> list[str]:
    items = value if isinstance(value, list) else [value]
    return [_str(v, what) for v in items]


# -- the model ---------------------------------------------------------------------------
@dataclass
class LinkParams:
    """What a cable does to frames, in each direction (so a round trip pays twice)."""

    delay: float = 0.0  # ms
    jitter: float = 0.0  # ms
    loss: float = 0.0  # percent
    bw: float = 0.0  # bit/s, 0 = unlimited
    vlan: list[int] = field(default_factory=list)

    @property
    def impaired(self) -> bool:
        return bool(self.delay or self.jitter or self.loss or self.bw)

    def wirefilter_options(self) -> list[tuple[str, str]]:
        """The impairments as wirefilter settings (``delay``, ``loss``, ``bandwidth``...).
        A bandwidth limit is a line of that rate with a tail-drop buffer of 100 ms of
        traffic (at least 64 KiB), as a router port's queue."""
        out = []
        if self.delay or self.jitter:
            out.append(("delay", f"{self.delay:g}" + (f"+{self.jitter:g}" if self.jitter else "")))
        if self.loss:
            out.append(("loss", f"{self.loss:g}"))
        if self.bw:
            rate = self.bw / 8
            out.append(("bandwidth", f"{rate:.0f}"))
            out.append(("chanbufsize", f"{max(65536, int(rate * 0.1))}"))
        return out

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {}
        if self.delay:
            d["delay"] = f"{self.delay:g}ms"
        if self.jitter:
            d["jitter"] = f"{self.jitter:g}ms"
        if self.loss:
            d["loss"] = f"{self.loss:g}%"
        if self.bw:
            d["bw"] = f"{self.bw:g}bit"
        if self.vlan:
            d["vlan"] = list(self.vlan)
        return d

    @classmethod
    def from_values(cls, what: str, delay: Any = None, loss: Any = None, bw: Any = None,
                    vlan: Any = None, jitter: Any = None) -> LinkParams:
        p = cls()
        if delay is not None:
            p.delay = parse_delay(delay, f"{what} delay")
        if jitter is not None:
            p.jitter = parse_delay(jitter, f"{what} jitter")
        if loss is not None:
            p.loss = parse_loss(loss, f"{what} loss")
        if bw is not None:
            p.bw = parse_bw(bw, f"{what} bw")
        if vlan is not None:
            p.vlan = parse_vlans(vlan, f"{what} vlan")
        return p


LINK_KEYS = ("delay", "jitter", "loss", "bw", "vlan")


@dataclass
class Switch:
    name: str
    hub: bool = False
    fstp: bool = False
    numports: int | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {}
        if self.hub:
            d["hub"] = True
        if self.fstp:
            d["fstp"] = True
        if self.numports:
            d["numports"] = self.numports
        return d


@dataclass
class Interface:
    """One interface of a router (or of a host): the switch it is cabled to, its
    addresses and servers, and the cable's impairments."""

    switch: str
    ip: list[str] = field(default_factory=list)
    gw: str | None = None
    dhcp: bool = False
    dhcpd: bool | str = False  # True, or a pool "FIRST-LAST"
    nat: bool = False  # masquerade what leaves through this interface
    config: list[str] = field(default_factory=list)  # raw iothconf items
    link: LinkParams = field(default_factory=LinkParams)

    KEYS = ("switch", "ip", "gw", "dhcp", "dhcpd", "nat", "config") + LINK_KEYS

    @classmethod
    def from_dict(cls, d: dict[str, Any], what: str) -> Interface:
        if not isinstance(d, dict):
            raise TopologyError(f"{what}: expected a table like {{ switch = \"lan1\", "
                                f"ip = \"10.0.1.1/24\" }}, not {d!r}")
        for key in d:
            if key not in cls.KEYS:
                raise TopologyError(f"{what}: unknown key {key!r} (known: {', '.join(cls.KEYS)})")
        if "switch" not in d:
            raise TopologyError(f"{what}: 'switch' is missing (the switch this interface is on)")
        iface = cls(switch=_name(d["switch"], f"{what} switch"))
        if "ip" in d:
            iface.ip = _ips(d["ip"], f"{what} ip")
        if "gw" in d:
            iface.gw = _addr(d["gw"], f"{what} gw")
        if "dhcp" in d:
            iface.dhcp = _bool(d["dhcp"], f"{what} dhcp")
        if "dhcpd" in d:
            v = d["dhcpd"]
            if isinstance(v, str):
                _dhcp_pool(v, f"{what} dhcpd")
            elif not isinstance(v, bool):
                raise TopologyError(f"{what} dhcpd: expected true or a pool 'FIRST-LAST', "
                                    f"not {v!r}")
            iface.dhcpd = v
        if "nat" in d:
            iface.nat = _bool(d["nat"], f"{what} nat")
        if "config" in d:
            iface.config = _configs(d["config"], f"{what} config")
        iface.link = LinkParams.from_values(what, **{k: d[k] for k in LINK_KEYS if k in d})
        if iface.dhcp and iface.ip:
            raise TopologyError(f"{what}: give either ip or dhcp = true, not both")
        if iface.dhcpd and not any(":" not in a for a in iface.ip):
            raise TopologyError(f"{what}: dhcpd needs an IPv4 address on the interface (ip)")
        return iface

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"switch": self.switch}
        if self.ip:
            d["ip"] = list(self.ip)
        if self.gw:
            d["gw"] = self.gw
        if self.dhcp:
            d["dhcp"] = True
        if self.dhcpd:
            d["dhcpd"] = self.dhcpd
        if self.nat:
            d["nat"] = True
        if self.config:
            d["config"] = list(self.config)
        d.update(self.link.to_dict())
        return d

    def iothconf(self, ifname: str) -> str:
        """This interface's configuration string for a stack."""
        items = [f"iface={ifname}", "eth"]
        items += [f"ip={a}" for a in self.ip]
        if self.gw:
            items.append(f"gw={self.gw}")
        if self.dhcp:
            items.append("dhcp")
        if self.dhcpd:
            items.append("dhcpd" if self.dhcpd is True else f"dhcpd={self.dhcpd}")
        items += self.config
        return ",".join(items)


def _dhcp_pool(text: str, what: str) -> None:
    first, sep, last = text.partition("-")
    if not sep:
        raise TopologyError(f"{what}: expected a pool 'FIRST-LAST', not {text!r}")
    for a in (first, last):
        try:
            ipaddress.IPv4Address(a.strip())
        except ValueError:
            raise TopologyError(f"{what}: {a!r} in {text!r} is not an IPv4 address") from None


@dataclass
class Host:
    """A host: a threadnet stack (no root) or a kernel network namespace (root). Its
    ``ip``/``gw``/``dhcp``/``config`` configure its first interface, eth0."""

    name: str
    kind: str = "stack"
    ip: list[str] = field(default_factory=list)
    gw: str | None = None
    dhcp: bool = False
    config: list[str] = field(default_factory=list)
    switch: str | None = None  # shorthand: a plain link to this switch

    KEYS = ("kind", "ip", "gw", "dhcp", "config", "switch")

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {}
        if self.kind != "stack":
            d["kind"] = self.kind
        if self.ip:
            d["ip"] = list(self.ip)
        if self.gw:
            d["gw"] = self.gw
        if self.dhcp:
            d["dhcp"] = True
        if self.config:
            d["config"] = list(self.config)
        if self.switch:
            d["switch"] = self.switch
        return d


@dataclass
class Router:
    """A forwarding stack with one interface per entry, named eth0, eth1... in order."""

    name: str
    interfaces: list[Interface] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"interfaces": [i.to_dict() for i in self.interfaces]}


@dataclass
class Link:
    """A cable from ``a`` to node ``b``, or to the link ``url`` outside the lab (a
    ``vxvde://`` or ``vxlan://`` LAN that labs on other machines join too, say)."""

    a: str
    b: str
    params: LinkParams = field(default_factory=LinkParams)
    url: str | None = None

    KEYS = ("a", "b", "url") + LINK_KEYS

    @property
    def what(self) -> str:
        return f"link {self.a} -- {self.b or self.url}"

    def to_dict(self) -> dict[str, Any]:
        ends = {"a": self.a, "url": self.url} if self.url else {"a": self.a, "b": self.b}
        return {**ends, **self.params.to_dict()}


@dataclass
class Topology:
    name: str = "lab"
    switches: dict[str, Switch] = field(default_factory=dict)
    hosts: dict[str, Host] = field(default_factory=dict)
    routers: dict[str, Router] = field(default_factory=dict)
    links: list[Link] = field(default_factory=list)

    # -- building ------------------------------------------------------------------
    def _new_name(self, name: Any, what: str) -> str:
        name = _name(name, what)
        if name in self.switches or name in self.hosts or name in self.routers:
            raise TopologyError(f"{what}: the name {name!r} is taken")
        return name

    def add_switch(self, name: str, *, hub: bool = False, fstp: bool = False,
                   numports: int | None = None) -> Switch:
        what = f"switch {name}"
        name = self._new_name(name, what)
        sw = Switch(name, _bool(hub, f"{what} hub"), _bool(fstp, f"{what} fstp"))
        if numports is not None:
            if isinstance(numports, bool) or not isinstance(numports, int) or not 2 <= numports <= 4096:
                raise TopologyError(f"{what} numports: expected a number from 2 to 4096, "
                                    f"not {numports!r}")
            sw.numports = numports
        if sw.hub and sw.fstp:
            raise TopologyError(f"{what}: a hub has no spanning tree (hub and fstp)")
        self.switches[name] = sw
        return sw

    def add_host(self, name: str, kind: str = "stack", *, ip: Any = None, gw: Any = None,
                 dhcp: bool = False, config: Any = None, switch: str | None = None) -> Host:
        what = f"host {name}"
        name = self._new_name(name, what)
        if kind not in HOST_KINDS:
            raise TopologyError(f"{what} kind: {kind!r} is not one of {', '.join(HOST_KINDS)}")
        host = Host(name, kind)
        if ip is not None:
            host.ip = _ips(ip, f"{what} ip")
        if gw is not None:
            host.gw = _addr(gw, f"{what} gw")
        host.dhcp = _bool(dhcp, f"{what} dhcp")
        if config is not None:
            host.config = _configs(config, f"{what} config")
        if host.dhcp and host.ip:
            raise TopologyError(f"{what}: give either ip or dhcp = true, not both")
        if kind == "netns" and host.config:
            raise TopologyError(f"{what}: config (iothconf items) is for stack hosts")
        self.hosts[name] = host
        if switch is not None:
            host.switch = _name(switch, f"{what} switch")
            self.add_link(name, switch)
        return host

    def add_router(self, name: str, *interfaces: Interface | dict[str, Any]) -> Router:
        what = f"router {name}"
        name = self._new_name(name, what)
        if not interfaces:
            raise TopologyError(f"{what}: a router needs interfaces")
        router = Router(name)
        for i, iface in enumerate(interfaces):
            if not isinstance(iface, Interface):
                iface = Interface.from_dict(iface, f"{what} interfaces[{i}]")
            router.interfaces.append(iface)
        self.routers[name] = router
        return router

    def add_link(self, a: str, b: str | None = None, *, url: str | None = None,
                 delay: Any = None, loss: Any = None, bw: Any = None, vlan: Any = None,
                 jitter: Any = None) -> Link:
        what = f"link {a} -- {b or url}"
        a = _name(a, f"{what} a")
        if (b is None) == (url is None):
            raise TopologyError(f"{what}: give the other end: a node (b) or a link URL (url), "
                                "one of them")
        if url is not None:
            if not isinstance(url, str) or "://" not in url:
                raise TopologyError(f"{what} url: expected a link URL such as "
                                    f"'vxvde://239.1.2.3/vni=7', not {url!r}")
            from threadnet.link import schemes, split_scheme

            try:
                scheme, _ = split_scheme(url)
            except ValueError as exc:
                raise TopologyError(f"{what} url: {exc}") from None
            if scheme not in schemes():
                raise TopologyError(f"{what} url: unknown scheme {scheme!r} in {url!r}")
            b = ""
        else:
            b = _name(b, f"{what} b")
        if a == b:
            raise TopologyError(f"{what}: a link joins two different nodes")
        for end in (a, b):
            if end in self.routers:
                raise TopologyError(f"{what}: {end} is a router; a router's cables are its "
                                    "interfaces (interfaces = [{ switch = ... }])")
        params = LinkParams.from_values(what, delay=delay, loss=loss, bw=bw, vlan=vlan,
                                        jitter=jitter)
        link = Link(a, b, params, url)
        self.links.append(link)
        return link

    def check(self) -> None:
        """References: every link end and interface names a node of the right kind."""
        for link in self.links:
            what = link.what
            ends = (("a", link.a),) if link.url else (("a", link.a), ("b", link.b))
            for key, end in ends:
                if end not in self.switches and end not in self.hosts:
                    h = self.hosts.get(link.a)
                    if h is not None and h.switch == end and self._first_link(h.name) is link:
                        raise TopologyError(f"host {h.name} switch: no switch named {end!r}",
                                            f"hosts.{h.name}", "switch")
                    raise TopologyError(f"{what}: no switch or host named {end!r}",
                                        f"links[{self._file_index(link)}]", key)
            if link.url and link.a in self.hosts and link.params.vlan:
                raise TopologyError(f"{what}: vlan needs a switch at one end",
                                    f"links[{self._file_index(link)}]", "vlan")
            if link.a in self.hosts and link.b in self.hosts and link.params.vlan:
                raise TopologyError(f"{what}: vlan needs a switch at one end",
                                    f"links[{self._file_index(link)}]", "vlan")
        for r in self.routers.values():
            for i, iface in enumerate(r.interfaces):
                if iface.switch not in self.switches:
                    raise TopologyError(f"router {r.name} interfaces[{i}] switch: no switch "
                                        f"named {iface.switch!r}", f"routers.{r.name}",
                                        "interfaces")
        for h in self.hosts.values():
            if not self.host_links(h.name):
                raise TopologyError(f"host {h.name}: not cabled to anything (give it "
                                    "switch = \"...\" or a link)", f"hosts.{h.name}")

    def _file_index(self, link: Link) -> int:
        """The link's place among the file's [[links]] (host shorthands are not there)."""
        explicit = [lk for lk in self.links
                    if not (lk.a in self.hosts and self.hosts[lk.a].switch == lk.b
                            and self._first_link(lk.a) is lk)]
        return next((i for i, lk in enumerate(explicit) if lk is link), 0)

    def host_links(self, name: str) -> list[Link]:
        return [link for link in self.links if name in (link.a, link.b)]

    # -- the file's shape ----------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        links = [lk.to_dict() for lk in self.links
                 if not (lk.a in self.hosts and self.hosts[lk.a].switch == lk.b
                         and not lk.params.to_dict() and self._first_link(lk.a) is lk)]
        return {"lab": {"name": self.name},
                "switches": {n: s.to_dict() for n, s in self.switches.items()},
                "hosts": {n: h.to_dict() for n, h in self.hosts.items()},
                "routers": {n: r.to_dict() for n, r in self.routers.items()},
                "links": links}

    def _first_link(self, host: str) -> Link | None:
        links = self.host_links(host)
        return links[0] if links else None

    @classmethod
    def from_dict(cls, data: dict[str, Any], locate: Any = None) -> Topology:
        """Build from the TOML file's shape. ``locate(table, key)`` gives the line of a key,
        to prefix errors with (see ``load``)."""
        def where(table: str, key: str | None = None) -> str:
            return locate(table, key) if locate is not None else ""

        def fail(exc: TopologyError, table: str, key: str | None = None) -> TopologyError:
            if isinstance(exc, _Located) or locate is None:
                return exc
            return _Located(where(table, key) + str(exc))

        known = ("lab", "switches", "hosts", "routers", "links")
        for key in data:
            if key not in known:
                raise TopologyError(f"{where('', key)}unknown table {key!r} "
                                    f"(known: {', '.join(known)})")
        topo = cls()
        lab = data.get("lab", {})
        if not isinstance(lab, dict):
            raise TopologyError(f"{where('', 'lab')}'lab' must be a table")
        for key, value in lab.items():
            if key != "name":
                raise TopologyError(f"{where('lab', key)}[lab]: unknown key {key!r} (known: name)")
            try:
                topo.name = _name(value, "[lab] name")
            except TopologyError as exc:
                raise fail(exc, "lab", "name") from None
        for section in ("switches", "hosts", "routers"):
            tables = data.get(section, {})
            if not isinstance(tables, dict):
                raise TopologyError(f"{where('', section)}'{section}' must be a table of "
                                    f"tables ([{section}.NAME])")
            for name, spec in tables.items():
                table = f"{section}.{name}"
                if not isinstance(spec, dict):
                    raise TopologyError(f"{where(section, name)}[{table}] must be a table")
                try:
                    if section == "switches":
                        keys = ("hub", "fstp", "numports")
                        _known(spec, keys, f"[{table}]", where, table)
                        topo.add_switch(name, **spec)
                    elif section == "hosts":
                        _known(spec, Host.KEYS, f"[{table}]", where, table)
                        topo.add_host(name, **spec)
                    else:
                        _known(spec, ("interfaces",), f"[{table}]", where, table)
                        ifaces = spec.get("interfaces")
                        if not isinstance(ifaces, list) or not ifaces:
                            raise TopologyError(f"[{table}] interfaces: expected a list of "
                                                "tables, e.g. [{ switch = \"lan1\", "
                                                "ip = \"10.0.1.1/24\" }]")
                        topo.add_router(name, *ifaces)
                except TopologyError as exc:
                    raise fail(exc, table, _key_in(str(exc), spec)) from None
        links = data.get("links", [])
        if not isinstance(links, list):
            raise TopologyError(f"{where('', 'links')}'links' must be an array of tables "
                                "([[links]])")
        for i, spec in enumerate(links):
            table = f"links[{i}]"
            try:
                if not isinstance(spec, dict):
                    raise TopologyError(f"[[links]] #{i + 1} must be a table")
                _known(spec, Link.KEYS, f"[[links]] #{i + 1}", where, table)
                for end in ("a", "b"):
                    if end not in spec and (end == "a" or "url" not in spec):
                        raise TopologyError(f"[[links]] #{i + 1}: {end!r} is missing (the "
                                            "two nodes the link joins, a and b; or a node "
                                            "and a url)", table)
                topo.add_link(spec["a"], spec.get("b"), url=spec.get("url"),
                              **{k: spec[k] for k in LINK_KEYS if k in spec})
            except TopologyError as exc:
                key = exc.key if exc.table else _key_in(str(exc), spec if isinstance(spec, dict) else {})
                raise fail(exc, table, key) from None
        try:
            topo.check()
        except TopologyError as exc:
            raise fail(exc, exc.table or "", exc.key) from None
        return topo


def _known(spec: dict[str, Any], keys: tuple[str, ...], what: str, where: Any, table: str) -> None:
    for key in spec:
        if key not in keys:
            raise _Located(f"{where(table, key)}{what}: unknown key {key!r} "
                                f"(known: {', '.join(keys)})")


def _key_in(message: str, spec: dict[str, Any]) -> str | None:
    """The key of ``spec`` an error message is about (its first word after the node)."""
    for key in sorted(spec, key=len, reverse=True):
        if re.search(rf"(^|[\s\]]){re.escape(key)}[:\s\[]", message):
            return key
    return None


# -- TOML files ----------------------------------------------------------------------------
class _Locator:
    """Line numbers of tables and keys in a TOML text (for error messages): a small scan
    of ``[table]``/``[[array]]`` headers and ``key =`` lines, enough for lab files."""

    def __init__(self, path: str, text: str) -> None:
        self.path = path
        self.tables: dict[str, int] = {}
        self.keys: dict[tuple[str, str], int] = {}
        current = ""
        arrays: dict[str, int] = {}
        for n, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if m := re.match(r"\[\[\s*([^\]]+?)\s*\]\]", line):
                name = _dotted(m.group(1))
                index = arrays.get(name, 0)
                arrays[name] = index + 1
                current = f"{name}[{index}]"
                self.tables.setdefault(current, n)
                self.keys.setdefault(("", name.split(".")[0]), n)
            elif m := re.match(r"\[\s*([^\]]+?)\s*\]", line):
                current = _dotted(m.group(1))
                self.tables.setdefault(current, n)
                parts = current.split(".")
                for i in range(len(parts)):  # [a.b.c] holds key b of a, and a itself
                    self.keys.setdefault((".".join(parts[:i]), parts[i]), n)
            elif m := re.match(r"""([A-Za-z0-9_\-"']+)\s*=""", line):
                self.keys.setdefault((current, m.group(1).strip("\"'")), n)

    def __call__(self, table: str, key: str | None = None) -> str:
        n = self.keys.get((table, key)) if key else None
        if n is None:
            n = self.tables.get(table)
        if n is None and key:
            n = self.keys.get(("", key))
        return f"{self.path}:{n}: " if n else f"{self.path}: "


def _dotted(header: str) -> str:
    """``switches."a b"`` -> ``switches.a b`` (a header's parts, unquoted)."""
    return ".".join(part.strip().strip("\"'") for part in header.split("."))


def loads(text: str, path: str = "<topology>") -> Topology:
    import tomllib

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TopologyError(f"{path}: not valid TOML: {exc}") from None
    topo = Topology.from_dict(data, _Locator(path, text))
    if "lab" not in data or "name" not in data.get("lab", {}):
        import os

        stem = os.path.splitext(os.path.basename(path))[0]
        if NAME_RE.match(stem):
            topo.name = stem
    return topo


def load(path: str) -> Topology:
    """Read a topology file; errors name the file, the line and the key."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read(1 << 20)
    except UnicodeDecodeError:
        raise TopologyError(f"{path}: not a UTF-8 text file") from None
    except OSError as exc:
        raise TopologyError(f"{path}: {exc.strerror}") from None
    return loads(text, path)
