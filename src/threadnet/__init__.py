"""threadnet: the Internet of Threads in Python.

Virtual Ethernets that run in user space (interoperable with VDE), and, on top of
them, user-space TCP/IP stacks that turn threads and processes into network nodes.
"""

from threadnet.errors import LinkError, ThreadnetError, URLError
from threadnet.hook import (
    get_default_stack,
    install_hook,
    msocket,
    set_default_stack,
    uninstall_hook,
    use,
)
from threadnet.link import Link, open_link, register_scheme
from threadnet.stack.api import Stack, ip
from threadnet.stack.publication import Publication
from threadnet.stack.remote import RemoteSocket, RemoteStack
from threadnet.stack.socket import StackSocket

__version__ = "0.1.0"

__all__ = [
    "Link",
    "Publication",
    "RemoteSocket",
    "RemoteStack",
    "get_default_stack",
    "install_hook",
    "set_default_stack",
    "uninstall_hook",
    "use",
    "Stack",
    "StackSocket",
    "ip",
    "msocket",
    "LinkError",
    "ThreadnetError",
    "URLError",
    "open_link",
    "register_scheme",
    "__version__",
]
