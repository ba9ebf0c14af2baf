"""slirp: user-mode networking. A virtual LAN reaches the host's network without root,
through a gateway stack whose flows the host's own sockets re-originate (see
``gateway.py``). ``Gateway`` runs one; ``open_slirp`` is the ``slirp://`` link scheme.
"""

from threadnet.slirp.gateway import Gateway
from threadnet.slirp.options import HostForward, SlirpOptions

__all__ = ["Gateway", "HostForward", "SlirpOptions"]
