"""``threadnet.lab.Lab``: a virtual network of switches, hosts and routers, Mininet-style.

Every node runs as a threadnet program of its own, started with a pidfile in the lab's
state directory, so a running lab can be inspected with the ordinary tools
(``threadnet console DIR/NODE.mgmt``, ``threadnet ip --stack DIR/HOST.stack``,
``threadnet run --stack DIR/HOST.stack``) and found again by ``Lab.attach``:

- a switch is ``threadnet switch -s DIR/NODE.sw`` (``-F`` with ``fstp``, ``-x`` for a hub);
  the lab gives every cable its own port, and VLANs are set up by the switch's rc file;
- a stack host or a router is ``threadnet stack DIR/NODE.stack`` (a router with
  ``--forwarding``, one ``--link`` per interface, a masquerade ruleset for ``nat``);
- a namespace host (root) is a kernel network namespace ``tn-LAB-NODE`` whose tap
  ``eth0`` is cabled to its switch by ``threadnet plug tap://eth0 vde://...`` run inside it;
- a cable between two switches is ``threadnet plug`` (plain) or ``threadnet wirefilter``
  (impaired). A cable with impairments to a host is the ``wirefilter://OPTIONS{URL}``
  link on the host's side (link/emulation.py): the same channel in each direction.

``stop`` ends those processes by PID (checking that each is still the lab's), removes the
namespaces and the state directory, so nothing is left behind.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from threadnet.errors import ThreadnetError
from threadnet.lab import measure
from threadnet.lab.state import (
    STATE_FILE,
    LabError,
    alive,
    find_lab,
    is_ours,
    labs_dir,
    owned_by_root,
    pid_of,
    read_state,
    remove_netns,
    run_ip,
    send_signal,
    threadnet_env,
)
from threadnet.lab.topology import Host, Interface, LinkParams, Topology, TopologyError, load

START_TIMEOUT = 60.0  # one phase of daemons
CONFIG_WAIT = 15.0  # a DHCP client's wait for its address


@dataclass
class _Plan:
    """What start() runs: every node's files and command line."""

    switch_rc: dict[str, list[str]] = field(default_factory=dict)
    switch_ports: dict[str, int] = field(default_factory=dict)
    implicit: list[str] = field(default_factory=list)
    # node -> list of (interface URL) for stack hosts and routers, (switch URL) for netns
    urls: dict[str, list[str]] = field(default_factory=dict)
    cables: list[tuple[str, str, LinkParams]] = field(default_factory=list)  # switch URLs


#: what udhcpc runs for a namespace host's lease: the address and the default route only
_UDHCPC_SCRIPT = """#!/bin/sh
case "$1" in
    deconfig) ip addr flush dev "$interface" ;;
    bound|renew)
        ip addr flush dev "$interface"
        ip addr add "$ip/${mask:-24}" ${broadcast:+broadcast "$broadcast"} dev "$interface"
        for r in $router; do ip route replace default via "$r" dev "$interface"; break; done ;;
esac
exit 0
"""

class Lab:
    """A lab. Build it (``add_switch``, ``add_host``, ``add_router``, ``add_link``) or load
    it (``Lab.from_toml``), then ``start()``; or ``Lab.attach(name)`` to a running one.

    >>> with Lab("demo") as lab:                              # doctest: +SKIP
    ...     lab.add_switch("s1")
    ...     lab.add_host("h1", ip="10.0.0.1/24", switch="s1")
    ...     lab.add_host("h2", ip="10.0.0.2/24")
    ...     lab.add_link("h2", "s1", delay="10ms")
    ...     lab.start()
    ...     print(lab.ping_all().loss)
    """

    def __init__(self, name: str = "lab", *, state_dir: str | None = None,
                 topology: Topology | None = None, netns: str = "auto") -> None:
        """``netns`` says how namespace hosts are made: ``"ip"`` (``ip netns``, root),
        ``"ns"`` (``threadnet ns``: a user and network namespace, no root where users may
        make user namespaces and open /dev/net/tun), ``"auto"`` (ip as root, else ns)."""
        if netns not in ("auto", "ip", "ns"):
            raise ValueError(f"netns={netns!r}: expected 'auto', 'ip' or 'ns'")
        self.netns_mode = netns
        self.topology = topology if topology is not None else Topology()
        if topology is None:
            self.topology.name = _checked_name(name)
        self.state_dir = state_dir
        self.started = False
        self._state: dict[str, Any] = {}
        self._children: list[subprocess.Popen[bytes]] = []  # to reap, when ours

    def __repr__(self) -> str:
        return f"<Lab {self.name} {'up at ' + self.dir if self.started else 'down'}>"

    @property
    def name(self) -> str:
        return self.topology.name

    @property
    def dir(self) -> str:
        return self._state.get("dir") or self.state_dir or os.path.join(labs_dir(), self.name)

    # -- building ------------------------------------------------------------------
    def add_switch(self, name: str, *, hub: bool = False, fstp: bool = False,
                   numports: int | None = None) -> None:
        self._building()
        self.topology.add_switch(name, hub=hub, fstp=fstp, numports=numports)

    def add_host(self, name: str, kind: str = "stack", *, ip: str | list[str] | None = None,
                 gw: str | None = None, dhcp: bool = False, config: str | list[str] | None = None,
                 switch: str | None = None) -> None:
        """A host: ``kind="stack"`` (a threadnet stack; ``config`` takes iothconf items)
        or ``"netns"`` (a kernel network namespace, root). ``ip``/``gw``/``dhcp``
        configure its first interface; ``switch=`` cables it to a switch."""
        self._building()
        self.topology.add_host(name, kind, ip=ip, gw=gw, dhcp=dhcp, config=config,
                               switch=switch)

    def add_router(self, name: str, *interfaces: Interface | dict[str, Any]) -> None:
        """A forwarding stack with one interface per argument, eth0, eth1...: a dict
        (or Interface) with ``switch`` and ``ip``, ``gw``, ``dhcp``, ``dhcpd`` (True or
        "FIRST-LAST": a DHCP server there), ``nat`` (masquerade what leaves there),
        ``config``, and the cable's ``delay``/``loss``/``bw``/``jitter``/``vlan``."""
        self._building()
        self.topology.add_router(name, *interfaces)

    def add_link(self, a: str, b: str | None = None, *, url: str | None = None,
                 delay: Any = None, loss: Any = None, bw: Any = None, vlan: Any = None,
                 jitter: Any = None) -> None:
        """A cable between a host and a switch, two switches, or two hosts; or, with
        ``url`` instead of ``b``, from a switch or host to a link outside the lab (a
        ``vxvde://`` LAN that a lab on another machine joins too). ``delay`` ("50ms"),
        ``jitter``, ``loss`` ("20%") and ``bw`` ("10Mbit") apply in each direction;
        ``vlan`` makes the switch port an untagged port of that VLAN (to a host) or a
        trunk tagged with those VLANs (to a switch or a URL)."""
        self._building()
        self.topology.add_link(a, b, url=url, delay=delay, loss=loss, bw=bw, vlan=vlan,
                               jitter=jitter)

    def _building(self) -> None:
        if self.started:
            raise LabError(f"lab {self.name} is running: change it after stop()")

    @classmethod
    def from_toml(cls, path: str, *, state_dir: str | None = None, netns: str = "auto") -> Lab:
        return cls(topology=load(path), state_dir=state_dir, netns=netns)

    @classmethod
    def attach(cls, lab: str | None = None) -> Lab:
        """The running lab named ``lab`` (a name, a state directory, or the topology file
        it was started from); with None, the only one running."""
        directory = find_lab(lab)
        state = read_state(directory)
        self = cls(topology=Topology.from_dict(state["topology"]), state_dir=directory)
        self._state = state
        self.started = True
        return self

    # -- context manager -----------------------------------------------------------
    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- planning ------------------------------------------------------------------
    def _plan(self) -> _Plan:
        topo = self.topology
        topo.check()
        plan = _Plan()
        switches = list(topo.switches)
        links = list(topo.links)
        # two hosts cabled together: a switch of their own in between
        hostlinks = [lk for lk in links if lk.a in topo.hosts and lk.b in topo.hosts]
        for i in range(len(hostlinks)):
            name = f"_pair{i}"
            plan.implicit.append(name)
            switches.append(name)
        for sw in switches:
            plan.switch_rc[sw] = []
            plan.switch_ports[sw] = 0
        vlans_made: dict[str, set[int]] = {sw: set() for sw in switches}

        def port(sw: str, access_vlan: int | None = None, trunk: list[int] = ()) -> str:
            plan.switch_ports[sw] += 1
            n = plan.switch_ports[sw]
            rc = plan.switch_rc[sw]
            rc.append(f"port/create {n}")
            for v in ([access_vlan] if access_vlan else []) + list(trunk):
                if v not in vlans_made[sw]:
                    vlans_made[sw].add(v)
                    rc.append(f"vlan/create {v}")
            if access_vlan:
                rc.append(f"port/setvlan {n} {access_vlan}")
            for v in trunk:
                rc.append(f"vlan/addport {v} {n}")
            return f"vde://{self._switch_dir(sw)}[{n}]"

        def host_url(params: LinkParams, url: str) -> str:
            opts = params.wirefilter_options()
            if not opts:
                return url
            return "wirefilter://" + "/".join(f"{k}={v}" for k, v in opts) + "{" + url + "}"

        for node in list(topo.hosts) + list(topo.routers):
            plan.urls[node] = []
        for r in topo.routers.values():
            for iface in r.interfaces:
                vlan = iface.link.vlan
                if len(vlan) > 1:
                    raise TopologyError(f"router {r.name}: an interface is on one VLAN "
                                        f"(vlan = {vlan})")
                plan.urls[r.name].append(host_url(iface.link,
                                                  port(iface.switch, vlan[0] if vlan else None)))
        cable = 0
        for lk in links:
            p = lk.params
            a_host, b_host = lk.a in topo.hosts, lk.b in topo.hosts
            if lk.url and a_host:  # the host's interface is the outside link itself
                plan.urls[lk.a].append(host_url(p, lk.url))
            elif lk.url:  # a cable from the switch to the outside link
                plan.cables.append((port(lk.a, trunk=p.vlan), lk.url, p))
            elif a_host and b_host:
                sw = plan.implicit[cable]
                cable += 1
                plan.urls[lk.a].append(host_url(p, port(sw)))
                plan.urls[lk.b].append(port(sw))
            elif a_host or b_host:
                host, sw = (lk.a, lk.b) if a_host else (lk.b, lk.a)
                if len(p.vlan) > 1:
                    raise TopologyError(f"link {lk.a} -- {lk.b}: a host's port is on one "
                                        f"VLAN (vlan = {p.vlan})")
                plan.urls[host].append(host_url(p, port(sw, p.vlan[0] if p.vlan else None)))
            else:
                plan.cables.append((port(lk.a, trunk=p.vlan), port(lk.b, trunk=p.vlan), p))
        return plan

    def _switch_dir(self, sw: str) -> str:
        return os.path.join(self.dir, f"{sw}.sw")

    def _path(self, node: str, suffix: str) -> str:
        return os.path.join(self.dir, f"{node}.{suffix}")

    def netns_name(self, host: str) -> str:
        return f"tn-{self.name}-{host}"

    # -- start ---------------------------------------------------------------------
    def start(self) -> Lab:
        """Start every node: switches, then cables and routers, then hosts (so DHCP
        clients find their servers). On any failure what was started is stopped."""
        if self.started:
            raise LabError(f"lab {self.name} is already running")
        plan = self._plan()
        topo = self.topology
        via = self.netns_mode
        if via == "auto":
            via = "ip" if os.geteuid() == 0 else "ns"
        if any(h.kind == "netns" for h in topo.hosts.values()):
            bad = ", ".join(h.name for h in topo.hosts.values() if h.kind == "netns")
            if shutil.which("ip") is None:
                raise LabError("namespace hosts need iproute2's ip command")
            if via == "ip" and os.geteuid() != 0:
                raise LabError(f"namespace hosts ({bad}) made by ip netns need root")
            if via == "ns":
                why = _userns_unavailable()
                if why:
                    raise LabError(f"namespace hosts ({bad}) need root (ip netns), or "
                                   f"threadnet ns, which cannot run here: {why}; use "
                                   "kind = \"stack\" hosts without root")
            for h in topo.hosts.values():
                if (via == "ip" and h.kind == "netns"
                        and os.path.exists(f"/run/netns/{self.netns_name(h.name)}")):
                    raise LabError(f"host {h.name}: the namespace {self.netns_name(h.name)} "
                                   "exists already (another lab of that name?)")
        self._make_dir()
        self._state = {"version": 1, "name": self.name, "dir": self.dir, "created": time.time(),
                       "topology": topo.to_dict(), "processes": [], "namespaces": [],
                       "nodes": {}}
        self.started = True
        try:
            self._write_state()
            self._start_switches(plan)
            self._run_phase([self._cable_cmd(i, c) for i, c in enumerate(plan.cables)]
                            + [self._stack_cmd(r, plan.urls[r]) for r in topo.routers])
            stack_hosts = [h for h in topo.hosts.values() if h.kind == "stack"]
            self._run_phase([self._stack_cmd(h.name, plan.urls[h.name]) for h in stack_hosts])
            netns_nodes = {}
            for h in topo.hosts.values():
                if h.kind == "netns" and via == "ip":
                    netns_nodes[h.name] = self._start_netns(h, plan.urls[h.name])
                elif h.kind == "netns":
                    netns_nodes[h.name] = self._start_userns(h, plan.urls[h.name])
            for sw in list(topo.switches) + plan.implicit:
                self._state["nodes"][sw] = {"kind": "switch", "dir": self._switch_dir(sw),
                                            "mgmt": self._path(sw, "mgmt"),
                                            "implicit": sw in plan.implicit}
            for r in topo.routers:
                self._state["nodes"][r] = {"kind": "router", "stack": self._path(r, "stack"),
                                           "mgmt": self._path(r, "mgmt")}
            for h in topo.hosts.values():
                node: dict[str, Any] = {"kind": h.kind}
                if h.kind == "stack":
                    node.update(stack=self._path(h.name, "stack"), mgmt=self._path(h.name, "mgmt"))
                else:
                    node.update(netns_nodes[h.name])
                self._state["nodes"][h.name] = node
            self._write_state()
        except BaseException:
            self.stop()
            raise
        return self

    def _make_dir(self) -> None:
        from threadnet.fsafe import open_private_dir

        parent = os.path.dirname(os.path.abspath(self.dir))
        if self.state_dir is None:
            fd, _ = open_private_dir(parent)
            os.close(fd)
        fd, made = open_private_dir(self.dir)
        os.close(fd)
        if not made and os.listdir(self.dir):
            if os.path.exists(os.path.join(self.dir, STATE_FILE)):
                raise LabError(f"lab {self.name} is already up (state in {self.dir}); "
                               f"'threadnet lab down {self.name}' stops it")
            raise LabError(f"{self.dir} is not empty: give the lab an empty state directory")

    def _write_state(self) -> None:
        from threadnet.fsafe import write_file_atomic

        write_file_atomic(os.path.join(self.dir, STATE_FILE),
                          json.dumps(self._state, indent=1).encode())

    def _start_switches(self, plan: _Plan) -> None:
        cmds = []
        for sw in list(self.topology.switches) + plan.implicit:
            spec = self.topology.switches.get(sw)
            rc = self._path(sw, "rc")
            with open(rc, "w") as f:
                f.write("".join(line + "\n" for line in plan.switch_rc[sw]))
            numports = max(32, plan.switch_ports[sw] + 1, (spec.numports or 0) if spec else 0)
            argv = ["switch", "-s", self._switch_dir(sw), "-M", self._path(sw, "mgmt"),
                    "-n", str(numports), "-f", rc, "-d", "-p", self._path(sw, "pid")]
            if spec is not None and spec.hub:
                argv.append("-x")
            if spec is not None and spec.fstp:
                argv.append("-F")
            cmds.append((sw, "switch", argv))
        self._run_phase(cmds)

    def _cable_cmd(self, i: int, cable: tuple[str, str, LinkParams]) -> tuple[str, str, list[str]]:
        a, b, params = cable
        pidfile = self._path(f"_cable{i}", "pid")
        opts = params.wirefilter_options()
        if not opts:
            return (f"cable {i}", "cable", ["plug", a, b, "-D", f"lab {self.name} cable {i}",
                                            "-d", "-p", pidfile])
        flags = {"delay": "-d", "loss": "-l", "bandwidth": "-b", "chanbufsize": "-c"}
        argv = ["wirefilter", a, b, "--descr", f"lab {self.name} cable {i}",
                "-M", self._path(f"_cable{i}", "mgmt"), "--daemon", "--pidfile", pidfile]
        for k, v in opts:
            argv += [flags[k], v]
        return (f"cable {i}", "cable", argv)

    def _stack_cmd(self, name: str, urls: list[str]) -> tuple[str, str, list[str]]:
        topo = self.topology
        argv = ["stack", self._path(name, "stack"), "--name", name, "--hostname", name,
                "-m", "0600", "-M", self._path(name, "mgmt"), "-d", "-p", self._path(name, "pid"),
                "--config-wait", str(CONFIG_WAIT)]
        for url in urls:
            argv += ["--link", url]
        if name in topo.routers:
            router = topo.routers[name]
            argv.append("--forwarding")
            nat = []
            for i, iface in enumerate(router.interfaces):
                argv += ["--config", iface.iothconf(f"eth{i}")]
                if iface.nat:
                    nat.append(f"eth{i}")
            if nat:
                rules = "".join(f'        oifname "{n}" masquerade\n' for n in nat)
                nft = self._path(name, "nft")
                with open(nft, "w") as f:
                    f.write("table ip nat {\n    chain post {\n        type nat hook "
                            "postrouting priority srcnat;\n" + rules + "    }\n}\n")
                argv += ["--filter", nft]
            return (name, "router", argv)
        host = topo.hosts[name]
        for i in range(len(urls)):
            if i == 0:
                iface = Interface(switch="", ip=host.ip, gw=host.gw, dhcp=host.dhcp)
                argv += ["--config", iface.iothconf("eth0")]
            else:
                argv += ["--config", f"iface=eth{i},eth"]
        for item in host.config:
            argv += ["--config", item]
        return (name, "host", argv)

    def _run_phase(self, cmds: list[tuple[str, str, list[str]]]) -> None:
        """Start daemons side by side; each command returns once its daemon is ready."""
        if not cmds:
            return
        env = threadnet_env()
        started = []
        for node, role, argv in cmds:
            p = subprocess.Popen([sys.executable, "-m", "threadnet", *argv], env=env,
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, text=True)
            started.append((node, role, argv, p))
        errors = []
        for node, role, argv, p in started:
            try:
                _, err = p.communicate(timeout=START_TIMEOUT)
            except subprocess.TimeoutExpired:
                p.kill()
                _, err = p.communicate()
                err = f"did not start within {START_TIMEOUT:g} s"
            pidfile = argv[argv.index("-p" if "-p" in argv else "--pidfile") + 1]
            pid = pid_of(pidfile)
            if pid is not None:
                self._state["processes"].append({"node": node, "role": role, "pid": pid,
                                                 "pidfile": pidfile})
            if p.returncode != 0 or pid is None:
                errors.append(f"{role} {node}: " + (err.strip().splitlines() or
                                                    [f"exit status {p.returncode}"])[-1])
        self._write_state()
        if errors:
            raise LabError(f"lab {self.name}: " + "; ".join(errors))

    def _start_netns(self, host: Host, urls: list[str]) -> dict[str, Any]:
        """A namespace host made by ``ip netns`` (root): its taps' plugs run inside."""
        ns = self.netns_name(host.name)
        run_ip("netns", "add", ns)
        self._state["namespaces"].append(ns)
        self._write_state()
        run_ip("-n", ns, "link", "set", "lo", "up")
        # the taps are made inside the namespace: the plugs run there. Not as -d daemons:
        # an emulated link's pacing thread, started when the plug opens its links, would
        # not survive the daemon's fork; a new session and a pidfile serve as well
        env = threadnet_env()
        errors = []
        for i, url in enumerate(urls):
            pidfile = self._path(f"{host.name}-eth{i}", "pid")
            log = self._path(f"{host.name}-eth{i}", "log")
            with open(log, "w") as err:
                p = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-m",
                                      "threadnet", "plug", f"tap://eth{i}", url, "-D",
                                      f"lab {self.name} {host.name}", "-p", pidfile],
                                     env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=err,
                                     start_new_session=True)
            self._children.append(p)
            deadline = time.monotonic() + START_TIMEOUT
            pid = None
            while time.monotonic() < deadline and p.poll() is None:
                pid = pid_of(pidfile)
                if pid is not None:
                    break
                time.sleep(0.02)
            if pid is not None:
                self._state["processes"].append({"node": host.name, "role": "netns-plug",
                                                 "pid": pid, "pidfile": pidfile})
            else:
                with open(log) as f:
                    lines = f.read().strip().splitlines()
                errors.append(f"host {host.name} eth{i}: "
                              + (lines[-1] if lines else f"exit status {p.poll()}"))
        self._write_state()
        if errors:
            raise LabError(f"lab {self.name}: " + "; ".join(errors))
        for i in range(len(urls)):
            run_ip("-n", ns, "link", "set", f"eth{i}", "up")
        for addr in host.ip:
            run_ip("-n", ns, "addr", "add", addr, "dev", "eth0", *(["nodad"] if ":" in addr else []))
        if host.gw:
            run_ip("-n", ns, *(["-6"] if ":" in host.gw else []), "route", "add", "default",
                   "via", host.gw)
        if host.dhcp:
            r = subprocess.run(["ip", "netns", "exec", ns, *self._dhcp_client(host)],
                               capture_output=True, text=True, timeout=60)
            if r.returncode != 0:
                raise LabError(f"lab {self.name}: host {host.name}: no DHCP lease on eth0 "
                               f"({(r.stderr or r.stdout).strip().splitlines()[-1:]})")
        return {"netns": ns, "nsfile": f"/run/netns/{ns}", "exec": ["ip", "netns", "exec", ns]}

    def _dhcp_client(self, host: Host) -> list[str]:
        """The command that gets a namespace host's eth0 its address and default route by
        DHCP: busybox's udhcpc, once (-q: no daemon to end later; the lease is not
        renewed, the address stays), with a script of the lab's own that only sets the
        interface (udhcpc's default script would rewrite /etc/resolv.conf)."""
        udhcpc = shutil.which("udhcpc")
        argv = [udhcpc] if udhcpc else (["busybox", "udhcpc"] if shutil.which("busybox")
                                        else None)
        if argv is None:
            raise LabError(f"lab {self.name}: host {host.name}: dhcp on a namespace host needs "
                           "udhcpc (Debian's udhcpc or busybox package)")
        script = self._path(host.name, "dhcp.sh")
        with open(script, "w") as f:
            f.write(_UDHCPC_SCRIPT)
        os.chmod(script, 0o755)
        return [*argv, "-i", "eth0", "-n", "-q", "-t", "10", "-T", "1", "-s", script]

    def _start_userns(self, host: Host, urls: list[str]) -> dict[str, Any]:
        """A namespace host made by ``threadnet ns``: a user and network namespace whose
        command configures the taps (it holds CAP_NET_ADMIN there), writes its PID, and
        then waits for SIGTERM, which ``threadnet ns`` passes on when the lab stops it."""
        import shlex

        nspid = self._path(host.name, "nspid")
        log = self._path(host.name, "log")
        lines = [f"ip link set eth{i} up" for i in range(len(urls))]
        lines += [f"ip addr add {a} dev eth0" + (" nodad" if ":" in a else "") for a in host.ip]
        if host.gw:
            lines.append(("ip -6" if ":" in host.gw else "ip") + f" route add default via {host.gw}")
        if host.dhcp:
            lines.append(shlex.join(self._dhcp_client(host)))
        lines.append(f"echo $$ > {shlex.quote(nspid + '.tmp')} && mv {shlex.quote(nspid + '.tmp')} "
                     f"{shlex.quote(nspid)}")
        # what waits names the lab's directory in its command line (so stop() knows it)
        lines.append(f"exec {shlex.quote(sys.executable)} -c 'import signal; signal.pause()' "
                     f"{shlex.quote(self._path(host.name, 'ns'))}")
        script = "\n".join(lines)  # (sh -e: the first failure ends it)
        with open(log, "w") as err:
            p = subprocess.Popen([sys.executable, "-m", "threadnet", "ns", "-m", "-i", "eth",
                                  *urls, "--", "sh", "-ec", script], env=threadnet_env(),
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=err, start_new_session=True)
        self._children.append(p)
        self._state["processes"].append({"node": host.name, "role": "threadnet-ns",
                                         "pid": p.pid, "pidfile": None})
        self._write_state()
        deadline = time.monotonic() + START_TIMEOUT
        pid = None
        while time.monotonic() < deadline and p.poll() is None:
            pid = pid_of(nspid)
            if pid is not None:
                break
            time.sleep(0.02)
        if pid is None:
            with open(log) as f:
                text = f.read().strip().splitlines()
            raise LabError(f"lab {self.name}: host {host.name}: "
                           + (text[-1] if text else f"threadnet ns: exit status {p.poll()}"))
        self._state["processes"].append({"node": host.name, "role": "ns-command", "pid": pid,
                                         "pidfile": nspid})
        self._write_state()
        enter = ["nsenter", "-t", str(pid), "-n"]
        if os.geteuid() != 0:  # into the user namespace first, as its owner
            enter = ["nsenter", "-t", str(pid), "-U", "-n", "--preserve-credentials"]
        return {"nspid": pid, "nsfile": f"/proc/{pid}/ns/net", "exec": enter}

    # -- stop ----------------------------------------------------------------------
    def stop(self) -> None:
        """End the lab's processes (by PID, each checked to be the lab's), remove its
        namespaces and its state directory. Safe to call twice."""
        if not self.started:
            return
        directory = self.dir
        procs = list(reversed(self._state.get("processes", [])))
        mine = [p["pid"] for p in procs if is_ours(p["pid"], directory)]
        for pid in mine:
            send_signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(alive(pid) for pid in mine):
            time.sleep(0.05)
        for pid in mine:
            if alive(pid) and is_ours(pid, directory):
                send_signal(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(alive(pid) for pid in mine):
            time.sleep(0.02)
        for ns in self._state.get("namespaces", []):
            # only this lab's namespaces, from a state directory root made (a namespace
            # needs root): a state file another user wrote names none that root deletes
            if (isinstance(ns, str) and ns.startswith(f"tn-{self.name}-")
                    and owned_by_root(directory)):
                remove_netns(ns)
        for child in self._children:
            try:
                child.wait(5)
            except subprocess.TimeoutExpired:
                pass
        self._children = []
        self._remove_dir(directory)
        self.started = False
        self._state = {}

    def _remove_dir(self, directory: str) -> None:
        if os.path.isdir(directory) and not os.path.islink(directory):
            shutil.rmtree(directory, ignore_errors=True)

    # -- using a running lab ------------------------------------------------------
    def _running(self) -> None:
        if not self.started:
            raise LabError(f"lab {self.name} is not running: start() it first")

    def node(self, name: str) -> dict[str, Any]:
        self._running()
        try:
            return self._state["nodes"][name]
        except KeyError:
            raise LabError(f"lab {self.name} has no node {name!r}") from None

    def hosts(self) -> list[str]:
        return sorted(self.topology.hosts)

    def stack(self, host: str) -> Any:
        """The stack of a stack host or router, as a RemoteStack: ``.socket()``,
        ``.ip([...])``, ``.getaddrinfo()`` (threadnet.msocket on its path)."""
        node = self.node(host)
        if "stack" not in node:
            raise LabError(f"{host} is a {node['kind']}, not a stack host")
        from threadnet.stack.remote import RemoteStack

        return RemoteStack(node["stack"])

    def addresses(self, host: str) -> list[str]:
        """The node's addresses now (CIDR), as its stack or namespace reports them."""
        node = self.node(host)
        if "stack" in node:
            data = self.stack(host).ip(["addr"])
        elif "exec" in node:
            out = subprocess.run([*node["exec"], "ip", "-j", "addr"], capture_output=True,
                                 text=True, timeout=10)
            data = json.loads(out.stdout or "[]")
        else:
            return []
        addrs = []
        for link in data:
            for a in link.get("addr_info", []):
                if a.get("scope") in ("host", "link") or a.get("local", "").startswith("127."):
                    continue
                addrs.append(f"{a['local']}/{a['prefixlen']}")
        return addrs

    def address(self, host: str) -> str:
        """The address other hosts reach ``host`` at: its first IPv4 address (else IPv6)."""
        h = self.topology.hosts.get(host)
        static = [a.split("/")[0] for a in (h.ip if h else [])]
        if not static:
            static = [a.split("/")[0] for a in self.addresses(host)]
        if not static:
            raise LabError(f"host {host} has no address (did its DHCP client get one?)")
        v4 = [a for a in static if ":" not in a]
        return (v4 or static)[0]

    def ping(self, src: str, dst: str, count: int = 3, interval: float = 0.2,
             timeout: float = 2.0) -> measure.PingResult:
        """Ping ``dst`` (a host name or an address) from host ``src``."""
        address = dst if _is_address(dst) else self.address(dst)
        node = self.node(src)
        if "stack" in node:
            result = measure.ping_stack(node["stack"], address, count, interval, timeout)
        elif "exec" in node:
            result = measure.ping_netns(node["exec"], address, count, interval, timeout)
        else:
            raise LabError(f"{src} is a switch: ping from a host")
        result.src, result.dst = src, dst
        return result

    def ping_all(self, count: int = 3, interval: float = 0.2, timeout: float = 2.0,
                 hosts: list[str] | None = None) -> measure.PingAll:
        """Every host pings every other host (``count`` each); the result has each pair's
        RTTs, the overall ``loss`` and the pairs that got no answer (``failed``)."""
        names = hosts or self.hosts()
        for h in names:
            self.node(h)
        addresses: dict[str, str | None] = {}
        for h in names:
            try:
                addresses[h] = self.address(h)
            except (LabError, OSError, ValueError):
                addresses[h] = None  # (a DHCP client without its lease): no answer
        pairs = [(a, b) for a in names for b in names if a != b]

        def one(ab: tuple[str, str]) -> measure.PingResult:
            address = addresses[ab[1]]
            if address is None:
                return measure.PingResult(ab[0], ab[1], "?", count, error="it has no address")
            return self.ping(ab[0], address, count, interval, timeout)

        with ThreadPoolExecutor(max_workers=min(8, max(1, len(pairs)))) as pool:
            results = list(pool.map(one, pairs))
        for (a, b), r in zip(pairs, results, strict=True):
            r.src, r.dst = a, b
        return measure.PingAll(results)

    def iperf(self, a: str, b: str, seconds: float = 3.0, port: int = 5201) -> measure.IperfResult:
        """TCP throughput from host ``a`` to host ``b``: kernel iperf3 when both are
        namespace hosts, else a bulk transfer over the hosts' sockets (a stack host's
        through its published stack, a namespace host's made in its namespace)."""
        na, nb = self.node(a), self.node(b)
        for name, n in ((a, na), (b, nb)):
            if "stack" not in n and "exec" not in n:
                raise LabError(f"{name} is a switch: iperf runs between hosts")
        address = self.address(b)
        if "exec" in na and "exec" in nb:
            result = measure.iperf3(na["exec"], nb["exec"], address, seconds, port)
        else:
            result = measure.tcp_throughput(_socket_factory(na), _socket_factory(nb), address,
                                            seconds, port)
        result.src, result.dst = a, b
        return result

    def status(self) -> list[dict[str, Any]]:
        """One row per node: kind, PIDs and whether they run, addresses."""
        self._running()
        rows = []
        pids: dict[str, list[int]] = {}
        for p in self._state["processes"]:
            pids.setdefault(p["node"], []).append(p["pid"])
        for name, node in self._state["nodes"].items():
            if node.get("implicit"):
                continue
            row: dict[str, Any] = {"node": name, "kind": node["kind"],
                                   "pids": pids.get(name, []),
                                   "running": all(alive(p) and is_ours(p, self.dir)
                                                  for p in pids.get(name, []))}
            if "nsfile" in node:
                row["netns"] = node.get("netns") or f"threadnet ns, pid {node['nspid']}"
                row["running"] = row["running"] and os.path.exists(node["nsfile"])
            for key in ("stack", "mgmt", "dir"):
                if key in node:
                    row[key] = node[key]
            if node["kind"] != "switch" and row["running"]:
                try:
                    row["addresses"] = self.addresses(name)
                except (OSError, ValueError, ThreadnetError) as exc:
                    row["addresses"] = [f"? ({exc})"]
            rows.append(row)
        cables = [p for p in self._state["processes"] if p["role"] == "cable"]
        for p in cables:
            rows.append({"node": p["node"], "kind": "cable", "pids": [p["pid"]],
                         "running": alive(p["pid"]) and is_ours(p["pid"], self.dir)})
        return rows


# -- helpers ------------------------------------------------------------------------------------
def _checked_name(name: str) -> str:
    from threadnet.lab.topology import _name

    return _name(name, "lab name")


def _userns_unavailable() -> str | None:
    """Why ``threadnet ns`` cannot make a namespace host here, or None."""
    if not os.access("/dev/net/tun", os.R_OK | os.W_OK):
        return "/dev/net/tun is not open to this user"
    if shutil.which("nsenter") is None:
        return "util-linux's nsenter is missing"
    try:
        with open("/proc/sys/user/max_user_namespaces") as f:
            if int(f.read().strip() or 0) == 0:
                return "user namespaces are off (user.max_user_namespaces is 0)"
    except (OSError, ValueError):
        pass
    return None


def _is_address(text: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _socket_factory(node: dict[str, Any]) -> Any:
    if "stack" in node:
        from threadnet.stack.remote import RemoteStack

        remote = RemoteStack(node["stack"])
        return remote.socket
    nsfile = node["nsfile"]
    return lambda family, kind: measure.netns_socket(nsfile, family, kind)


__all__ = ["Lab", "LabError"]
