"""A stack's name settings: its host name, hosts table and resolv.conf (nameservers,
search list, options), plus the DNS cache they invalidate. The stack core holds them
(``Stack.resolver``, set by ``configure``'s ``fqdn=``, ``dns=``, ``domain=``); the
lookups that use them are ``Resolver``'s, in ``stack/resolver.py``.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

from threadnet.stack.dnsclient import (
    CACHE_SIZE,
    DEFAULT_ATTEMPTS,
    DEFAULT_NDOTS,
    DEFAULT_TIMEOUT,
    Cache,
)

if TYPE_CHECKING:
    from threadnet.stack.stack import Stack


class ResolverConfig:
    """A stack's host name, hosts table, resolv.conf settings and DNS cache.

    ``timeout`` (seconds a DNS transmission waits), ``attempts`` (rounds over the
    nameservers) and ``ndots`` are resolv.conf's options; ``cache_size`` bounds the DNS
    cache (0 disables it).
    """

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.hostname: str | None = None
        # what was set (dns=, resolv_conf, the setters) and what agents learned (DHCP,
        # RDNSS), by source; the lists used are the set ones, then the learned ones
        self._static_ns: list[str] = []
        self._static_search: list[str] = []
        self._learned: dict[str, tuple[list[str], list[str]]] = {}
        self._nameservers: list[str] = []
        self._search: list[str] = []
        self.hosts: dict[str, list[str]] = {}
        self.timeout = DEFAULT_TIMEOUT
        self.attempts = DEFAULT_ATTEMPTS
        self.ndots = DEFAULT_NDOTS
        self.cache_size = CACHE_SIZE
        self._cache: Cache | None = None

    # -- configuration -----------------------------------------------------------------
    @property
    def nameservers(self) -> list[str]:
        return list(self._nameservers)

    @nameservers.setter
    def nameservers(self, servers: list[str] | str) -> None:
        if isinstance(servers, str):
            servers = [s for s in servers.replace(",", " ").split() if s]
        out = []
        for s in servers:
            try:
                ipaddress.ip_address(str(s).split("%", 1)[0])
            except ValueError:
                raise ValueError(f"nameserver {s!r} is not an IP address") from None
            out.append(str(s))
        self._static_ns = out
        self._merge()

    @property
    def search(self) -> list[str]:
        """The search domains: the ones set, then the ones agents learned."""
        return self._search

    @search.setter
    def search(self, domains: list[str]) -> None:
        self._static_search = [str(d) for d in domains]
        self._merge()

    @property
    def domain(self) -> str | None:
        return self.search[0] if self.search else None

    @domain.setter
    def domain(self, value: str | None) -> None:
        self.search = [value] if value else []

    def learn(self, source: str, servers: list[str], search: list[str]) -> None:
        """Settings an agent learned (``source``, e.g. "dhcp4:eth0"): used after the
        ones set, until ``forget(source)`` (the lease ended)."""
        for s in servers:
            ipaddress.ip_address(str(s).split("%", 1)[0])
        self._learned[source] = ([str(s) for s in servers], [str(d) for d in search])
        self._merge()

    def forget(self, source: str) -> None:
        if self._learned.pop(source, None) is not None:
            self._merge()

    def learned(self) -> dict[str, tuple[list[str], list[str]]]:
        return {k: (list(v[0]), list(v[1])) for k, v in self._learned.items()}

    def _merge(self) -> None:
        ns = list(self._static_ns)
        search = list(self._static_search)
        for servers, domains in self._learned.values():
            ns += [s for s in servers if s not in ns]
            search += [d for d in domains if d not in search]
        self._nameservers = ns
        self._search = search
        self.flush_cache()

    def flush_cache(self) -> None:
        self._cache = None

    def set_hostname(self, name: str) -> None:
        if not isinstance(name, str) or not name or len(name) > 255:
            raise ValueError(f"bad host name {name!r}")
        self.hostname = name

    def gethostname(self) -> str:
        return self.hostname or self.stack.name

    def fqdn(self) -> str:
        name = self.gethostname()
        if "." not in name.rstrip(".") and self.domain:
            return f"{name}.{self.domain.rstrip('.')}"
        return name.rstrip(".") or name

    def add_host(self, name: str, address: str) -> None:
        """Map ``name`` to ``address`` (one more address if the name has some)."""
        ip = ipaddress.ip_address(address)
        addrs = self.hosts.setdefault(name, [])
        if isinstance(addrs, str):
            addrs = self.hosts[name] = [addrs]
        if str(ip) not in addrs:
            addrs.append(str(ip))

    def resolv_conf(self, text: str | None = None) -> str:
        """Replace the DNS settings with resolv.conf text (``nameserver``, ``search``,
        ``domain``, ``options timeout: attempts: ndots:``), or with a list of addresses
        separated by commas (iothdns_init_strcfg's short form); return the settings as
        resolv.conf text. Unknown keywords are ignored, as glibc does."""
        if text is not None:
            servers: list[str] = []
            search: list[str] = []
            opts = {"timeout": DEFAULT_TIMEOUT, "attempts": DEFAULT_ATTEMPTS,
                    "ndots": DEFAULT_NDOTS}
            words = text.replace(",", " ").split()
            if words and all(_is_address(w) for w in words):
                servers = words
            else:
                for raw in text.splitlines():
                    line = raw.split("#", 1)[0].split(";", 1)[0].split()
                    if not line:
                        continue
                    kw, args = line[0], line[1:]
                    if kw == "nameserver" and args:
                        if not _is_address(args[0]):
                            raise ValueError(f"resolv.conf: {raw.strip()!r}: not an IP address")
                        servers.append(args[0])
                    elif kw in ("search", "domain") and args:
                        search = args if kw == "search" else args[:1]
                    elif kw == "options":
                        for opt in args:
                            name, _, value = opt.partition(":")
                            if name in opts and value.isdigit():
                                lo, hi = {"timeout": (1, 30), "attempts": (1, 5),
                                          "ndots": (0, 15)}[name]
                                opts[name] = min(max(int(value), lo), hi)
            self.nameservers = servers
            self.search = search
            self.timeout = float(opts["timeout"])
            self.attempts = int(opts["attempts"])
            self.ndots = int(opts["ndots"])
        lines = []
        if self.search:
            lines.append("search " + " ".join(self.search))
        lines += [f"nameserver {s}" for s in self._nameservers]
        opts_out = []
        if self.timeout != DEFAULT_TIMEOUT:
            opts_out.append(f"timeout:{self.timeout:g}")
        if self.attempts != DEFAULT_ATTEMPTS:
            opts_out.append(f"attempts:{self.attempts}")
        if self.ndots != DEFAULT_NDOTS:
            opts_out.append(f"ndots:{self.ndots}")
        if opts_out:
            lines.append("options " + " ".join(opts_out))
        return "".join(line + "\n" for line in lines)


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return False
    return True

