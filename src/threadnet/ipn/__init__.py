"""IPN, Inter Process Networking: a multicast IPC bus named by a directory.

Any number of processes join a bus; each message a member sends reaches the other
members (``broadcast``), or, with the ``switch`` policy, the member that owns the
destination MAC address once it is learned (a LAN with no switch process). There is no
dispatcher: every member binds its own AF_UNIX datagram socket in the bus directory and
senders write straight into the other members' sockets (one ``sendmmsg`` for all of
them), so the kernel's queue of each socket is that member's queue. ``lossless`` buses
make a sender wait while a member's queue is full; ``lossy`` ones drop and count.

    threadnet ipn create /tmp/bus --policy switch --mode 0660 --group netdev
    python: threadnet.Stack("eth,ip=10.0.0.1/24", link="ipn:///tmp/bus")

``bus.py``: the bus directory (create, open, check, remove, show). ``member.py``: a
member (join, send, receive, learning). ``command.py``: ``threadnet ipn``.
"""

from threadnet.ipn.bus import BusConfig, IpnError, create_bus, remove_bus
from threadnet.ipn.member import Member

__all__ = ["BusConfig", "IpnError", "Member", "create_bus", "remove_bus"]
