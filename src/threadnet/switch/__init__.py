"""A vde_switch-compatible Ethernet switch.

``fdb`` is the learning table, ``core`` the ports, VLANs and forwarding (sans-IO:
endpoints are objects with ``send``), ``datasock`` the control protocol on ``DIR/ctl``,
``commands`` the management table, and ``server`` ties them to an event loop.
"""

from threadnet.switch.core import Endpoint, Port, Switch
from threadnet.switch.fdb import ForwardingTable

__all__ = ["Endpoint", "ForwardingTable", "Port", "Switch"]
