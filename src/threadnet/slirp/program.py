"""``threadnet slirp [VNL] [options]``: a slirp gateway on a network, as ``slirpvde`` is for
a vde_switch (``threadnet slirp vde:///tmp/sw --dhcp``) and ``slirp4netns`` for a tap in a
namespace (``threadnet slirp --netns /run/netns/NAME tap://tap0``).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import sys
import threading
from typing import Any

from threadnet.errors import URLError
from threadnet.slirp.options import HostForward, SlirpOptions

CLONE_NEWNET = 0x40000000


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("vnl", nargs="?", default=None, metavar="VNL",
                   help="the network: vde:///tmp/sw, tap://IF, ... (default: the default switch)")
    p.add_argument("-s", "--sock", metavar="DIR", help="a vde_switch directory (slirpvde's -s)")
    p.add_argument("-o", "--options", default="", metavar="OPTS",
                   help="slirp:// options, e.g. 'net=10.0.2.0/24,nameserver=127.0.0.1#5353'")
    p.add_argument("--dhcp", dest="dhcp", action="store_true", default=None,
                   help="serve DHCP from 10.0.2.15 (the default)")
    p.add_argument("--no-dhcp", dest="dhcp", action="store_false")
    p.add_argument("--hostfwd", action="append", default=[], metavar="SPEC",
                   help="QEMU's hostfwd: tcp:127.0.0.1:8080-:80 (repeatable)")
    p.add_argument("-H", "--host", metavar="ADDR/LEN",
                   help="the virtual network (slirpvde's -H; default 10.0.2.0/24)")
    p.add_argument("-N", "--nameserver", action="append", default=[], metavar="ADDR[#PORT]",
                   help="where DNS queries to 10.0.2.3 go (default: /etc/resolv.conf's)")
    p.add_argument("--no-ipv6", action="store_true", help="no IPv6 (no RA of fd00::/64)")
    p.add_argument("--restrict", action="store_true",
                   help="the gateway address does not lead to the host's loopback")
    p.add_argument("--mtu", type=int, help="the gateway's MTU (default 1500)")
    p.add_argument("--netns", metavar="PATH",
                   help="open the link in this network namespace (/run/netns/NAME, "
                        "/proc/PID/ns/net), as slirp4netns does; the host side stays here")
    p.add_argument("-d", "--daemon", action="store_true", help="run in the background")
    p.add_argument("-p", "--pidfile", help="write the process id here")


def options_from_args(args: argparse.Namespace) -> SlirpOptions:
    o = SlirpOptions.parse(args.options)
    if args.dhcp is not None:
        o.dhcp = args.dhcp
    if args.host:
        o2 = SlirpOptions.parse(f"net={args.host}")
        o.net, o.host, o.dns, o.dhcp_start = o2.net, o2.host, o2.dns, o2.dhcp_start
    for ns in args.nameserver:
        o.nameservers += SlirpOptions.parse(f"nameserver={ns}").nameservers
    if args.no_ipv6:
        o.ipv6 = False
    if args.restrict:
        o.loopback = False
    if args.mtu:
        o.mtu = args.mtu
    for spec in args.hostfwd:
        o.hostfwd.append(HostForward.parse(spec, o.dhcp_start))
    return o


def open_in_netns(path: str, url: str) -> Any:
    """Open the link ``url`` from a thread that has joined the network namespace at
    ``path`` (setns(2) moves only the calling thread): a tap made there stays there,
    while this process's sockets stay in its own namespace."""
    from threadnet.link import open_link

    out: dict[str, Any] = {}

    def opener() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(path, os.O_RDONLY)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    e = ctypes.get_errno()
                    raise OSError(e, f"setns {path}: {os.strerror(e)}")
            finally:
                os.close(fd)
            out["link"] = open_link(url)
        except BaseException as exc:  # reported in the caller's thread
            out["error"] = exc

    t = threading.Thread(target=opener, name="slirp-netns")
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]
    return out["link"]


def run(args: argparse.Namespace) -> int:
    from threadnet.daemon import check_pidfile, detach, write_pidfile
    from threadnet.slirp.gateway import Gateway

    o = options_from_args(args)
    if args.vnl is not None and args.sock:
        raise URLError("threadnet slirp: give a VNL or -s DIR, not both")
    url = f"vde://{args.sock}" if args.sock else (args.vnl or "")
    check_pidfile(args.pidfile)
    ready = detach() if args.daemon else None
    try:
        link = open_in_netns(args.netns, url) if args.netns else url
        gw = Gateway(link, o)
        if args.pidfile:
            write_pidfile(args.pidfile)
    except BaseException as exc:
        if ready is None:
            raise
        ready(f"threadnet slirp: {exc}")
        return 1
    if ready is not None:
        ready(None)
    else:
        fwd = " ".join(f"{f.proto}:{f.host_addr}:{p}-{f.guest_addr}:{f.guest_port}"
                       for f, p in zip(o.hostfwd, gw.hostfwd_ports(), strict=False))
        print(f"threadnet slirp: gateway {o.host} dns {o.dns}"
              + (f" dhcp from {o.dhcp_start}" if o.dhcp else "")
              + (f" ipv6 {o.prefix6}" if o.ipv6 else "")
              + (f" hostfwd {fwd}" if fwd else "") + f" on {url or 'the default switch'}",
              flush=True)
    import signal

    gw.loop.stop_on_signals(signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    try:
        gw.run()
    finally:
        gw.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="threadnet slirp")
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
