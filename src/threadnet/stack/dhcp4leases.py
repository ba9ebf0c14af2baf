"""The DHCPv4 server's lease records and its lease file (``stack/dhcp4server.py`` serves).

The lease file (``LeaseFile``) has one line per lease, as dnsmasq's: expiry (Unix time,
0 = never), MAC, address, host name or ``*``, client identifier in hex or ``*``. It is
written to a new file that replaces the old one (never through a symbolic link, in a
directory checked with ``fsafe``) when a binding changes, at most once a second for
renewals, and when the server stops. Unreadable lines are skipped.
"""

from __future__ import annotations

import ipaddress
import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from threadnet.fsafe import read_file, write_file_atomic
from threadnet.stack.config import ConfigError
from threadnet.stack.ip import ntop
from threadnet.wire import dhcp4
from threadnet.wire.dhcp4 import DhcpMessage
from threadnet.wire.ethernet import mac_from_str, mac_to_str

#: the largest lease file read
MAX_FILE = 8 << 20
_NAME = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,62}))*\.?$")


@dataclass(slots=True)
class Lease:
    """One address's record. ``expires`` is on the stack's clock: the end of an offer's
    hold, of a lease (inf: never), of a DECLINE's quarantine; for a free record, when it
    was freed."""

    addr: bytes
    key: bytes  # the client: its identifier (61), else htype + MAC
    mac: bytes
    state: str
    expires: float
    hostname: str | None = None


@dataclass(slots=True)
class StoredLease:
    """A lease as the lease file holds it; ``remaining``: seconds left (None: never ends)."""

    addr: bytes
    mac: bytes
    key: bytes
    hostname: str | None
    remaining: float | None


def client_key(msg: DhcpMessage) -> bytes:
    """RFC 2131 4.2: a client is its client identifier, else its hardware type and
    address (the same bytes as the identifier 0x01 + MAC that udhcpc and threadnet send)."""
    cid = msg.client_id
    return cid if cid is not None else bytes([msg.htype]) + msg.chaddr


def _hostname(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip().rstrip(".")
    return value if len(value) <= 253 and _NAME.match(value) else None


class LeaseFile:
    """The server's lease file at ``path`` (see the module's notes). ``clock`` is the
    wall clock its expiry times are written in (``time.time``)."""

    def __init__(self, path: str | os.PathLike[str], *,
                 clock: Callable[[], float] = time.time) -> None:
        self.path = os.path.abspath(os.fspath(path))
        self.clock = clock
        self.skipped = 0  # lines not understood at the last load
        if not os.path.basename(self.path):
            raise ConfigError(f"dhcpd lease file {path!r} is a directory")

    def load(self) -> list[StoredLease]:
        """The leases in the file (none if it does not exist); those that ended are
        left out. UnsafePathError if the file is a symbolic link or its directory could
        be changed by another user (``fsafe.read_file``)."""
        data = read_file(self.path, MAX_FILE)
        if data is None:
            return []
        wall = self.clock()
        out: list[StoredLease] = []
        self.skipped = 0
        for raw in data.decode("utf-8", "replace").splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            try:
                out.append(self._parse_line(line, wall))
            except (ValueError, IndexError):
                self.skipped += 1
        return [s for s in out if s.remaining is None or s.remaining > 0]

    @staticmethod
    def _parse_line(line: str, wall: float) -> StoredLease:
        words = line.split()
        if len(words) != 5:
            raise ValueError("five words")
        expiry = int(words[0])
        mac = mac_from_str(words[1])
        addr = ipaddress.IPv4Address(words[2]).packed
        host = None if words[3] == "*" else _hostname(words[3])
        key = bytes([dhcp4.HTYPE_ETHER]) + mac if words[4] == "*" else \
            bytes.fromhex(words[4].replace(":", ""))
        if not key:
            raise ValueError("empty client identifier")
        return StoredLease(addr, mac, key, host, None if expiry == 0 else expiry - wall)

    def save(self, leases: Iterable[StoredLease]) -> None:
        """Replace the file with ``leases`` in one step (``fsafe.write_file_atomic``: a
        reader sees the old file or the new, a symbolic link there is replaced, never
        followed; mode 0600)."""
        wall = self.clock()
        lines = ["# threadnet dhcpd leases: expiry MAC address hostname client-id\n"]
        for s in leases:
            expiry = 0 if s.remaining is None else max(1, int(wall + s.remaining + 0.5))
            cid = "*" if s.key == bytes([dhcp4.HTYPE_ETHER]) + s.mac else \
                ":".join(f"{b:02x}" for b in s.key)
            lines.append(f"{expiry} {mac_to_str(s.mac)} {ntop(s.addr)} "
                         f"{s.hostname or '*'} {cid}\n")
        # a new file renamed over the old (a symbolic link there is replaced, not followed)
        write_file_atomic(self.path, "".join(lines).encode())
