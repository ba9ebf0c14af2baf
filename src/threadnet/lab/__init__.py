"""Mininet-style labs: switches, hosts (threadnet stacks or kernel namespaces), routers
with NAT and DHCP, impaired cables, from Python (``Lab``) or a TOML file
(``threadnet lab up topo.toml``). docs/labs.md describes both."""

from threadnet.lab.lab import Lab
from threadnet.lab.measure import IperfResult, PingAll, PingResult
from threadnet.lab.state import LabError, find_lab, labs_dir, running_labs
from threadnet.lab.topology import Interface, Topology, TopologyError, load, loads

__all__ = ["Interface", "IperfResult", "Lab", "LabError", "PingAll", "PingResult", "Topology",
           "TopologyError", "find_lab", "labs_dir", "load", "loads", "running_labs"]
