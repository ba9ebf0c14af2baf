"""A TCP echo client written against iothpy's API (the shape of iothpy's README
``echo_client.py``), running on threadnet. The import line is the only change:

    import iothpy                               # the original
    import threadnet.compat.iothpy as iothpy    # on threadnet

The stack is made from one iothconf string (ioth_newstackc), and the standard socket
module is redirected to it with ``override_socket_module``: the rest is plain ``socket``
and ``select.poll`` code. It sends what it reads on stdin and prints what comes back;
at the end of stdin it half-closes and waits for the server to finish.

    python examples/iothpy_echo_client.py vde:///tmp/sw
"""

import os
import sys

import threadnet.compat.iothpy as iothpy

# Check arguments
if len(sys.argv) != 2:
    name = sys.argv[0]
    print(f"Usage: {name} vdeurl\ne.g.: {name} vde:///tmp/sw\n")
    sys.exit(1)

# Create and configure the stack in one go (iothconf syntax)
stack = iothpy.Stack(f"stack=vdestack,vnl={sys.argv[1]},eth,ip=10.0.0.2/24,gw=10.0.0.254")

# From now on the standard socket module makes its sockets on the stack
iothpy.override_socket_module(stack)

import select  # noqa: E402 - iothpy advises importing after the override
import socket  # noqa: E402

sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
sock.settimeout(10)
sock.connect(("10.0.0.1", 5000))
sock.settimeout(None)
print("Connected to server at", sock.getpeername(), "from", sock.getsockname(), flush=True)

# Wait for messages from the server and for lines on stdin
poll_obj = select.poll()
poll_obj.register(sock, select.POLLIN)
stdin = sys.stdin.fileno()
poll_obj.register(stdin, select.POLLIN)

running = True
while running:
    for fd, _ in poll_obj.poll():
        if fd == sock.fileno():
            message = sock.recv(1024)
            if message:
                print(message.decode(), end="", flush=True)
            else:
                running = False
                break
        elif fd == stdin:
            message = os.read(stdin, 1024)
            if message:
                sock.sendall(message)
            else:
                poll_obj.unregister(stdin)
                sock.shutdown(socket.SHUT_WR)
sock.close()
print("Server closed the connection", flush=True)
