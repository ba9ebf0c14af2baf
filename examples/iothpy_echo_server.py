"""A TCP echo server written against iothpy's API (the shape of iothpy's README
``echo_server.py``), running on threadnet. The import line is the only change:

    import iothpy                               # the original
    import threadnet.compat.iothpy as iothpy    # on threadnet

The stack is configured with the netlink-style calls. Run it with a switch's URL:

    threadnet switch -s /tmp/sw -d
    python examples/iothpy_echo_server.py vde:///tmp/sw
    python examples/iothpy_echo_client.py vde:///tmp/sw     # in another terminal
"""

import sys
import threading

import threadnet.compat.iothpy as iothpy

# Check arguments
if len(sys.argv) != 2:
    name = sys.argv[0]
    print(f"Usage: {name} vdeurl\ne.g.: {name} vde:///tmp/sw\n")
    sys.exit(1)

# Create and configure the stack: one interface, vde0, on the virtual network
stack = iothpy.Stack("vdestack", sys.argv[1])
ifindex = stack.if_nametoindex("vde0")
stack.linksetupdown(ifindex, 1)
stack.linksetaddr(ifindex, "80:00:42:0e:e7:3a")
stack.ipaddr_add(iothpy.AF_INET, "10.0.0.1", 24, ifindex)
stack.iproute_add(iothpy.AF_INET, "10.0.0.254")

# Create a TCP listening socket: from here on it is used as a Python socket
sock = stack.socket(iothpy.AF_INET, iothpy.SOCK_STREAM)
sock.bind(("", 5000))
sock.listen(1)
print("Listening on 10.0.0.1:5000, MAC", stack.linkgetaddr(ifindex).hex(":"), flush=True)


# Handle one connection: echo everything back until the client closes
def handle(conn, addr):
    with conn:
        while True:
            data = conn.recv(1024)
            if not data:
                print("Connection closed by", addr, flush=True)
                break
            print("Got:", data.decode().strip(), "from", addr, flush=True)
            conn.sendall(data)


# Accept connections, one thread each
while True:
    conn, addr = sock.accept()
    print(f"New connection from {addr}", flush=True)
    t = threading.Thread(target=handle, args=(conn, addr), daemon=True)
    t.start()
