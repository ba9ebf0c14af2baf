"""The ``threadnet`` command.

    threadnet up                      bring up the default virtual network
    threadnet switch -s DIR -M MGMT   a vde_switch-compatible switch
    threadnet plug URL [URL2]         join stdin/stdout to a network, or cable two networks
    threadnet wirefilter -v D1:D2     an emulated cable (loss, delay, bandwidth ...)
    threadnet capture URL -w FILE     capture what a link receives to pcap
    threadnet console MGMT [CMD]      talk to a switch or wirefilter console
    threadnet stack PATH --link URL --config CFG   a TCP/IP stack as a service, named by PATH
    threadnet run --stack PATH -- python app.py     run a Python program on a stack
    threadnet ip --stack PATH addr    iproute2's ip on a published stack
    threadnet ns vde:///tmp/sw -- CMD  a command in its own namespace, a tap on the switch
    threadnet bench switch            benchmarks, side by side with the real peers
    threadnet lab up topo.toml        a Mininet-style lab (also status, ping, iperf, down)
    threadnet ipn create PATH         an IPN bus: multicast IPC, no dispatcher process
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable, Sequence

from threadnet.errors import ThreadnetError, URLError

PROG = "threadnet"


class UsageError(Exception):
    """A bad command line: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not argparse's usage block
        raise UsageError(f"{self.prog}: {message} (see '{self.prog} --help')")


def octal(text: str) -> int:
    try:
        value = int(text, 8)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid mode {text!r}: expected octal, e.g. 0660") from None
    if not 0 <= value <= 0o7777:
        raise argparse.ArgumentTypeError(f"invalid mode {text!r}")
    return value


def fst_priority(text: str) -> int:
    """vde_switch's --priority: C's %i (decimal, 0x hex or 0 octal), kept to 16 bits."""
    t = text.strip().lower()
    try:
        sign = -1 if t.startswith("-") else 1
        t = t.lstrip("+-")
        value = int(t, 16) if t.startswith("0x") else int(t, 8) if t.startswith("0") and len(t) > 1 else int(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid priority {text!r}") from None
    return (sign * value) & 0xFFFF


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


# -- switch ------------------------------------------------------------------------
def _add_switch_args(p: argparse.ArgumentParser, default_dir: str | None) -> None:
    p.add_argument("-s", "--sock", "--vdesock", "--unix", dest="sock", default=default_dir,
                   metavar="DIR", help="control directory (default: %(default)s)")
    p.add_argument("-M", "--mgmt", metavar="PATH", help="management console socket")
    p.add_argument("-n", "--numports", type=positive, default=32, help="number of ports (32)")
    p.add_argument("-x", "--hub", action="store_true", help="hub mode: flood every frame")
    p.add_argument("-m", "--mode", type=octal, default=0o600, help="mode of the sockets (0600)")
    p.add_argument("-g", "--group", help="group of the sockets")
    p.add_argument("--dirmode", type=octal, help="mode of the control directory")
    p.add_argument("--mgmtmode", type=octal, default=0o600, help="mode of the console socket")
    p.add_argument("--mgmtgroup", help="group of the console socket")
    p.add_argument("-H", "--hashsize", type=positive, default=128, help="hash table size")
    p.add_argument("--macaddr", help="the switch's MAC address")
    p.add_argument("-f", "--rcfile", help="run these console commands at start")
    p.add_argument("--pcap", metavar="FILE", help="capture every frame the switch receives")
    p.add_argument("-d", "--daemon", action="store_true", help="run in the background")
    p.add_argument("-p", "--pidfile", help="write the process id here")
    p.add_argument("--nostdin", action="store_true", help="no console on standard input")
    p.add_argument("-F", "--fstp", action="store_true",
                   help="run vde_switch's fast spanning tree (loops between switches)")
    p.add_argument("--priority", type=fst_priority, default=0x8000, metavar="N",
                   help="the switch's FST priority (the high part of its id; 0x8000)")
    p.add_argument("--no-batch", dest="batched", action="store_false",
                   help="plain recv/send per frame instead of recvmmsg/sendmmsg")


def _start_switch(args: argparse.Namespace, announce: Callable[[object], None] | None = None,
                  started: Callable[[], None] | None = None) -> int:
    from threadnet.switch.server import SwitchServer
    from threadnet.wire.ethernet import mac_from_str

    if args.sock is None:
        raise UsageError(f"{PROG} switch: -s DIR is required")
    mac = None
    if args.macaddr:
        try:
            mac = mac_from_str(args.macaddr)
        except ValueError as exc:
            raise UsageError(f"{PROG} switch: {exc}") from None
    from threadnet.daemon import check_pidfile

    check_pidfile(args.pidfile)  # before the switch makes its directory and sockets
    server = SwitchServer(args.sock, mgmt=args.mgmt, numports=args.numports, hub=args.hub,
                          mode=args.mode, group=args.group, dirmode=args.dirmode,
                          mgmtmode=args.mgmtmode, mgmtgroup=args.mgmtgroup,
                          hashsize=args.hashsize, mac=mac, rcfile=args.rcfile, pcap=args.pcap,
                          batched=args.batched, fstp=args.fstp, priority=args.priority)
    if announce is not None:
        announce(server)
    from threadnet.daemon import background_or_pidfile

    background_or_pidfile(args.daemon, args.pidfile)
    if started is not None:
        started()  # (after the fork: what it starts may have threads)
    server.loop.stop_on_signals(signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    if not args.daemon and not args.nostdin and sys.stdin is not None and sys.stdin.isatty():
        _stdin_console(server)
    server.serve_forever()
    return 0


def _stdin_console(server: object) -> None:
    """vde_switch's foreground console: commands on stdin, replies on stdout."""
    from threadnet.mgmt.commands import Caller
    from threadnet.mgmt.console import format_reply

    me = Caller.service()  # the switch's own terminal acts with the switch's own rights
    loop = server.loop  # type: ignore[attr-defined]
    table = server.table  # type: ignore[attr-defined]
    sys.stdout.write("vde$ ")
    sys.stdout.flush()

    def readable() -> None:
        line = sys.stdin.readline()
        if not line:
            loop.remove_reader(sys.stdin)
            return
        line = line.strip()
        if line == "shutdown":
            loop.stop()
            return
        if line:
            err, out, _ = table.run(line, me)
            sys.stdout.write(format_reply(err, out))
        sys.stdout.write("vde$ ")
        sys.stdout.flush()

    loop.add_reader(sys.stdin, readable)


def cmd_switch(args: argparse.Namespace) -> int:
    return _start_switch(args)


def cmd_up(args: argparse.Namespace) -> int:
    from threadnet.link.vde import default_switch_dir

    if args.sock is None:
        args.sock = default_switch_dir()
    if args.mgmt is None:
        args.mgmt = args.sock.rstrip("/") + ".mgmt"
    if args.pidfile is None:
        args.pidfile = args.sock.rstrip("/") + ".pid"

    def announce(server: object) -> None:
        sock = args.sock
        print(f"threadnet: virtual network up: switch at vde://{os.path.abspath(sock)}", flush=True)
        print(f"  console:  threadnet console {args.mgmt} help   (or: unixterm {args.mgmt})")
        print("  attach:   threadnet plug ''   |   vde_plug   |   open_link('') in Python")
        print(f"            qemu ... -nic vde,sock={sock}   |   vde_plug2tap -s {sock} TAP")
        if args.slirp is not None:
            o = options
            print(f"  slirp:    gateway {o.host}, DNS {o.dns}"
                  + (f", DHCP from {o.dhcp_start}" if o.dhcp else "")
                  + (f", IPv6 {o.prefix6} by RA" if o.ipv6 else "")
                  + " (the host's network, no root)")
        print(f"  stop:     {'threadnet down' if args.daemon else 'Ctrl-C'}", flush=True)

    started = None
    options = None
    if args.slirp is not None:
        from threadnet.slirp.options import SlirpOptions

        try:
            options = SlirpOptions.parse(args.slirp)  # bad options fail here, before the fork
            _check_hostfwd(options)
        except (URLError, OSError) as exc:
            raise UsageError(f"{PROG} up: {exc}") from None

        def started() -> None:
            import threading

            from threadnet.slirp.gateway import Gateway

            def gateway() -> None:
                try:
                    Gateway(f"vde://{args.sock}", options).start()
                except Exception as exc:  # a network half up misleads: stop the switch
                    print(f"{PROG} up: slirp failed, stopping: {exc}", file=sys.stderr,
                          flush=True)
                    os.kill(os.getpid(), signal.SIGTERM)

            # the gateway's link handshakes with the switch, whose loop runs in this thread
            threading.Thread(target=gateway, name="slirp-up", daemon=True).start()

    return _start_switch(args, announce, started)


def _check_hostfwd(options: object) -> None:
    """Bind each host forward's port once, before the fork, so that a port in use fails
    ``threadnet up`` with a clear error instead of a network without its forward."""
    import socket

    for fwd in options.hostfwd:  # type: ignore[attr-defined]
        fam = socket.AF_INET6 if ":" in fwd.host_addr else socket.AF_INET
        kind = socket.SOCK_DGRAM if fwd.proto == "udp" else socket.SOCK_STREAM
        with socket.socket(fam, kind) as s:
            if kind == socket.SOCK_STREAM:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((fwd.host_addr, fwd.host_port))
            except OSError as exc:
                raise OSError(f"hostfwd {fwd.proto}:{fwd.host_addr}:{fwd.host_port}: "
                              f"{exc.strerror}") from None


def cmd_down(args: argparse.Namespace) -> int:
    import time

    from threadnet.link.vde import default_switch_dir

    sock = args.sock or default_switch_dir()
    pidfile = args.pidfile or sock.rstrip("/") + ".pid"
    from threadnet.daemon import PidfileError, read_pidfile, remove_stale_pidfile

    try:
        pid = read_pidfile(pidfile)  # never through a symbolic link
    except PidfileError as exc:
        print(f"{PROG} down: {exc}", file=sys.stderr)
        return 1
    except OSError:
        pid = None
    if pid is None:
        print(f"{PROG} down: no running network (no pidfile {pidfile})", file=sys.stderr)
        return 1
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        try:
            remove_stale_pidfile(pidfile)
        except OSError as exc:
            print(f"{PROG} down: {exc}", file=sys.stderr)
        print(f"{PROG} down: process {pid} was not running; removed stale {pidfile}", file=sys.stderr)
        return 1
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            print(f"threadnet: network at {sock} is down")
            return 0
        time.sleep(0.05)
    print(f"{PROG} down: process {pid} did not stop", file=sys.stderr)
    return 1


# -- plug --------------------------------------------------------------------------
def cmd_plug(args: argparse.Namespace) -> int:
    from threadnet.daemon import check_pidfile
    from threadnet.link import open_link
    from threadnet.link.cable import Cable
    from threadnet.loop import EventLoop

    check_pidfile(args.pidfile)
    urls = list(args.urls)
    command = None
    if "=" in urls:
        i = urls.index("=")
        urls, command = urls[:i], urls[i + 1:]
        if not command:
            raise UsageError(f"{PROG} plug: '=' needs a command after it")
    if len(urls) > 2 or (command and len(urls) > 1):
        raise UsageError(f"{PROG} plug: at most two URLs")
    first = open_link(urls[0] if urls else "", description=args.descr)
    try:
        if command:
            import shlex

            second = open_link("cmd://" + shlex.join(command))
        elif len(urls) == 2:
            second = open_link(urls[1], description=args.descr)
        else:
            second = open_link("stdio://")
    except BaseException:
        first.close()
        raise
    from threadnet.daemon import background_or_pidfile

    background_or_pidfile(args.daemon, args.pidfile)
    loop = EventLoop()
    loop.stop_on_signals(signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    cable = Cable(loop, first, second)
    try:
        loop.run()
    finally:
        cable.close()
        loop.close()
    return 0


# -- console -----------------------------------------------------------------------
def cmd_console(args: argparse.Namespace) -> int:
    from threadnet.mgmt.client import ConsoleClient

    with ConsoleClient(args.mgmt) as client:
        if not args.command:
            return client.interactive()
        line = " ".join(args.command)
        err, lines, text = client.run(line)
        for out in lines:
            print(out)
        if err:
            print(f"{PROG} console: {line}: {text}", file=sys.stderr)
            return 1
    return 0


# -- capture -----------------------------------------------------------------------
def cmd_capture(args: argparse.Namespace) -> int:
    import time

    from threadnet.link import open_link
    from threadnet.wire.pcap import PcapWriter

    link = open_link(args.url, description=f"threadnet capture pid={os.getpid()}")
    stop = False

    def handler(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    count = 0
    deadline = time.monotonic() + args.duration if args.duration else None
    with link, PcapWriter(args.write) as writer:
        while not stop and (args.count is None or count < args.count):
            timeout = 0.2
            if deadline is not None:
                timeout = min(timeout, deadline - time.monotonic())
                if timeout <= 0:
                    break
            if not link.wait_readable(timeout):
                continue
            writer.write(link.recv(), time.time())
            count += 1
            if args.flush:
                writer.flush()
    print(f"threadnet capture: {count} frames written to {args.write}", file=sys.stderr)
    return 0


# -- wirefilter / bench are in their own modules -----------------------------------
def cmd_wirefilter(args: argparse.Namespace) -> int:
    from threadnet.wirefilter.app import run

    return run(args)


# -- stacks ---------------------------------------------------------------------------------
def _build_stack(args: argparse.Namespace, name: str) -> object:
    """A Stack with one interface per --link and the --config strings applied in order."""
    from threadnet.stack.api import Stack

    stack = Stack(name=name, forwarding=getattr(args, "forwarding", False))
    try:
        if getattr(args, "filter", None):  # before any link: no packet passes unfiltered
            stack.filter_load(args.filter)
        for url in args.link or ():
            stack.add_interface(url)
        for cfg in args.config or ():
            stack.configure(cfg)
        if getattr(args, "hostname", None):
            stack.set_hostname(args.hostname)  # type: ignore[attr-defined]
        _wait_configured(stack, args)
    except BaseException:
        stack.close()
        raise
    return stack


def _wait_configured(stack: object, args: argparse.Namespace) -> None:
    """A stack configured by DHCP, router discovery or SLAAC is of use to a program only
    once that has arrived: wait for it (``--config-wait``), then go on, with a warning
    naming what did not come."""
    clients = [a for a in stack.agents if a.kind in ("dhcp4", "dhcp6", "rd")]  # type: ignore[attr-defined]
    if not clients:
        return
    wait = getattr(args, "config_wait", 30.0)
    if not stack.wait_configured(wait):  # type: ignore[attr-defined]
        with stack.locked():  # type: ignore[attr-defined]
            late = [a.kind for a in clients if not a.configured(stack)]
        print(f"{PROG}: warning: no answer to {', '.join(late)} after {wait:g} s; "
              "going on without it", file=sys.stderr)


def _raise_nofile() -> None:
    """A stack service holds three descriptors per socket of its clients: let it use the
    hard limit (the per-uid quotas are sized from the soft one)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (OSError, ValueError):
            pass


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text}: must be 1 or more")
    return value


def cmd_stack(args: argparse.Namespace) -> int:
    import threading

    if not args.link:
        raise UsageError(f"{PROG} stack: give the stack at least one --link URL")
    from threadnet.daemon import check_pidfile

    check_pidfile(args.pidfile)  # before the stack publishes anything
    ready = None
    if args.daemon:
        from threadnet.daemon import detach

        ready = detach()
    # SIGTERM/SIGINT/SIGHUP or the console's shutdown end the service
    stop = threading.Event()
    console = None
    try:
        stack = _build_stack(args, args.name or os.path.basename(args.path))
        try:
            _raise_nofile()
            stack.publish(args.path, mode=args.mode, group=args.group,  # type: ignore[attr-defined]
                          max_sockets=args.max_sockets, max_pending=args.max_pending)
            if args.mgmt:
                from threadnet.stack.commands import StackConsole

                console = StackConsole(stack, args.mgmt, mode=args.mgmtmode,  # type: ignore[arg-type]
                                       group=args.mgmtgroup, path=os.path.abspath(args.path),
                                       on_shutdown=stop.set)
        except BaseException:
            stack.close()  # type: ignore[attr-defined]
            raise
        if args.pidfile:
            from threadnet.daemon import write_pidfile

            write_pidfile(args.pidfile)
    except Exception as exc:
        if ready is None:
            raise
        ready(f"{PROG} stack: {exc}")
        return 1
    if ready is not None:
        ready(None)
    else:
        addrs = " ".join(stack.addresses())  # type: ignore[attr-defined]
        print(f"threadnet: stack {stack.name} at {os.path.abspath(args.path)}: {addrs}", flush=True)  # type: ignore[attr-defined]
        if console is not None:
            print(f"  console:  {PROG} console {args.mgmt} help   (or: unixterm {args.mgmt})",
                  flush=True)
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, lambda *_: stop.set())
    try:
        while not stop.wait(3600):
            pass
    except KeyboardInterrupt:
        pass
    if console is not None:
        console.close()
    stack.close()  # type: ignore[attr-defined]
    return 0


def run_environment(stack_path: str, env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment that starts a Python child on the stack published at ``stack_path``."""
    import threadnet

    env = dict(os.environ if env is None else env)
    pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(threadnet.__file__)))
    boot = os.path.join(os.path.dirname(os.path.abspath(threadnet.__file__)), "_boot")
    parts = [boot, pkg_parent] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(parts)
    env["THREADNET_STACK"] = os.path.abspath(stack_path)
    return env


def _runs_python(program: str) -> bool:
    """Is ``program`` a Python interpreter, or a script whose #! line names one?"""
    import shutil

    if "python" in os.path.basename(program):
        return True
    path = shutil.which(program)
    if path is None:
        return True  # let the exec report it
    try:
        with open(path, "rb") as f:
            first = f.readline(256)
    except OSError:
        return True
    return first.startswith(b"#!") and b"python" in first


def _check_stack_path(path: str) -> None:
    """Fail with one line that names ``path`` and says why, unless a stack listens there."""
    import errno
    import stat

    from threadnet.stack.remote import _open_control

    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise FileNotFoundError(errno.ENOENT, f"no stack at {path} (no such file)") from None
    except OSError as exc:
        raise type(exc)(exc.errno, f"cannot reach the stack at {path}: {exc.strerror}") from None
    if not stat.S_ISSOCK(st.st_mode):
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a socket"
        raise OSError(errno.ENOTSOCK, f"{path} is not a stack socket ({kind}); publish one "
                      f"with '{PROG} stack {path} --link URL ...'")
    try:
        _open_control(path).close()
    except ConnectionRefusedError:
        raise ConnectionRefusedError(errno.ECONNREFUSED, f"no stack is listening at {path} "
                                     "(a stale socket: has its process ended?)") from None
    except PermissionError:
        raise PermissionError(errno.EACCES, f"no permission to use the stack at {path} "
                              "(its mode and group decide who may)") from None
    except OSError as exc:
        if exc.errno == errno.EPROTOTYPE:
            raise OSError(exc.errno, f"{path} is a socket but not a stack's (wrong socket "
                          "type)") from None
        raise type(exc)(exc.errno, f"cannot reach the stack at {path}: {exc.strerror}") from None


def cmd_run(args: argparse.Namespace) -> int:
    import shutil
    import subprocess
    import tempfile

    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise UsageError(f"{PROG} run: give the command to run after --")
    if bool(args.stack) == bool(args.link):
        raise UsageError(f"{PROG} run: give either --stack PATH or --link URL (with --config)")
    if (args.config or args.hostname) and not args.link:
        raise UsageError(f"{PROG} run: --config and --hostname go with --link")
    if args.stack:
        _check_stack_path(args.stack)
    tmpdir = stack = None
    path = args.stack
    try:
        if args.link:
            _remove_stale_run_dirs(tempfile.gettempdir())
            tmpdir = tempfile.mkdtemp(prefix=f"threadnet-run-{os.getpid()}-")
            stack = _build_stack(args, f"run{os.getpid()}")
            path = os.path.join(tmpdir, "stack")
            _raise_nofile()  # the socket quota is sized from the descriptor limit
            stack.publish(path, mode=0o600)  # type: ignore[attr-defined]
        if args.seccomp or not _runs_python(command[0]):
            # any program: its socket calls served by a seccomp supervisor (threadnet.views)
            from threadnet.views.run import ViewError
            from threadnet.views.run import run as run_supervised

            try:
                return run_supervised(command, path, stack=stack)
            except ViewError as exc:
                raise UsageError(f"{PROG} run: {exc}") from None
        try:
            child = subprocess.Popen(command, env=run_environment(path))
        except FileNotFoundError:
            raise UsageError(f"{PROG} run: command not found: {command[0]}") from None
        for signum in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, lambda s, _f: child.send_signal(s))
        from threadnet.views.run import sigint_from_terminal

        while True:
            try:
                rc = child.wait()
                break
            except KeyboardInterrupt:
                if not sigint_from_terminal():  # a terminal's Ctrl-C reached the child too
                    child.send_signal(signal.SIGINT)
        return rc if rc >= 0 else 128 - rc
    finally:
        if stack is not None:
            stack.close()  # type: ignore[attr-defined]
        if tmpdir is not None:
            shutil.rmtree(tmpdir, ignore_errors=True)


def _remove_stale_run_dirs(tmp: str) -> None:
    """A ``threadnet run`` killed with SIGKILL leaves its directory (the published
    stack's socket) behind: remove this user's whose process is gone. Only real
    directories owned by this user, named ``threadnet-run-PID-...``."""
    import shutil
    import stat

    try:
        names = os.listdir(tmp)
    except OSError:
        return
    for name in names:
        parts = name.split("-")
        if len(parts) < 4 or parts[:2] != ["threadnet", "run"] or not parts[2].isdigit():
            continue
        path = os.path.join(tmp, name)
        try:
            st = os.lstat(path)
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
                continue
            os.kill(int(parts[2]), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)  # (rmtree never follows a link inside)
        except (OSError, OverflowError):
            continue


def cmd_ip(args: argparse.Namespace) -> int:
    from threadnet.ipcli import main as ip_main

    return ip_main(args.words)


def cmd_slirp(args: argparse.Namespace) -> int:
    from threadnet.slirp.program import run

    return run(args)


def cmd_ns(args: argparse.Namespace) -> int:
    from threadnet.nsview import main as ns_main

    return ns_main(args.words)


def cmd_lab(args: argparse.Namespace) -> int:
    from threadnet.lab.cli import run

    return run(args)


def cmd_bench(args: argparse.Namespace) -> int:
    import importlib

    module = importlib.import_module(f"threadnet.bench.{args.what}")
    return module.main(args.rest)


def cmd_ipn(args: argparse.Namespace) -> int:
    from threadnet.ipn.command import run

    return run(args)


def _add_stack_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-l", "--link", action="append", metavar="URL",
                   help="an interface on this link (repeat for more: eth0, eth1...)")
    p.add_argument("-c", "--config", action="append", metavar="CFG",
                   help='configuration, e.g. "eth,ip=10.0.0.5/24,gw=10.0.0.1" (repeatable)')
    p.add_argument("--hostname", help="the stack's host name (socket.gethostname())")
    p.add_argument("--config-wait", type=float, default=30.0, metavar="SECONDS",
                   help="with dhcp, dhcp6, rd, slaac or auto: how long to wait for the "
                        "configuration before going on without it (default 30)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="threadnet: the Internet of Threads in Python")
    from threadnet import __version__

    parser.add_argument("--version", action="version", version=f"threadnet {__version__}")
    sub = parser.add_subparsers(dest="cmd", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("up", help="bring up the default virtual network")
    _add_switch_args(p, None)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--slirp", nargs="?", const="", default="", metavar="OPTIONS",
                   help="the slirp gateway's options (threadnet slirp's, e.g. "
                        "'hostfwd=tcp::8080-:80'); by default slirp runs with QEMU's defaults: "
                        "gateway 10.0.2.2, DHCP from 10.0.2.15, DNS 10.0.2.3, IPv6 by RA")
    g.add_argument("--no-slirp", dest="slirp", action="store_const", const=None,
                   help="a bare switch: no slirp gateway, no DHCP, no way out to the host")
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("down", help="stop the default virtual network")
    p.add_argument("-s", "--sock", metavar="DIR")
    p.add_argument("-p", "--pidfile")
    p.set_defaults(func=cmd_down)

    p = sub.add_parser("switch", help="run a vde_switch-compatible switch")
    _add_switch_args(p, None)
    p.set_defaults(func=cmd_switch)

    p = sub.add_parser("plug", help="join stdin/stdout to a network, or cable two networks")
    p.add_argument("urls", nargs="*", metavar="URL", help="one or two link URLs ('' = default)")
    p.add_argument("-D", "--descr", help="description shown by the switch")
    p.add_argument("-d", "--daemon", action="store_true")
    p.add_argument("-p", "--pidfile")
    p.set_defaults(func=cmd_plug)

    p = sub.add_parser("console", help="run commands on a switch, wirefilter or stack console")
    p.add_argument("mgmt", metavar="MGMT", help="console socket path")
    p.add_argument("command", nargs=argparse.REMAINDER, help="command and arguments")
    p.set_defaults(func=cmd_console)

    p = sub.add_parser("capture", help="capture the frames a link receives to a pcap file")
    p.add_argument("url", metavar="URL")
    p.add_argument("-w", "--write", required=True, metavar="FILE")
    p.add_argument("-c", "--count", type=positive)
    p.add_argument("-t", "--duration", type=float, metavar="SECONDS")
    p.add_argument("--flush", action="store_true", help="flush after every frame")
    p.set_defaults(func=cmd_capture)

    p = sub.add_parser("wirefilter", help="an emulated cable between two networks")
    from threadnet.wirefilter.options import add_arguments

    add_arguments(p)
    p.set_defaults(func=cmd_wirefilter)

    p = sub.add_parser("slirp", help="user-mode networking: a network reaches the host's "
                       "(like slirpvde, slirp4netns)")
    from threadnet.slirp.program import add_arguments as add_slirp_arguments

    add_slirp_arguments(p)
    p.set_defaults(func=cmd_slirp)

    p = sub.add_parser("stack", help="run a TCP/IP stack as a service, named by a path")
    p.add_argument("path", metavar="PATH", help="where to publish the stack (msocket(PATH, ...))")
    _add_stack_args(p)
    p.add_argument("-m", "--mode", type=octal, default=0o660, help="mode of PATH (0660)")
    p.add_argument("-g", "--group", help="group of PATH")
    p.add_argument("--name", help="the stack's name (default: PATH's base name)")
    p.add_argument("--forwarding", action="store_true", help="forward between interfaces")
    p.add_argument("--filter", metavar="FILE",
                   help="packet filter ruleset, nftables syntax (docs/filter.md)")
    p.add_argument("-d", "--daemon", action="store_true", help="run in the background")
    p.add_argument("-p", "--pidfile", help="write the process id here")
    p.add_argument("-M", "--mgmt", metavar="MGMT", help="management console socket")
    p.add_argument("--mgmtmode", type=octal, default=0o600, help="mode of the console socket")
    p.add_argument("--mgmtgroup", help="group of the console socket")
    p.add_argument("--max-sockets", type=_positive, metavar="N",
                   help="sockets each uid may have open on the stack (default 1024, or a "
                        "quarter of what the descriptor limit allows)")
    p.add_argument("--max-pending", type=_positive, metavar="N",
                   help="resolver calls each uid may have queued or running (default 16)")
    p.set_defaults(func=cmd_stack)

    p = sub.add_parser("run", help="run a program with its sockets on a stack")
    p.add_argument("--stack", metavar="PATH", help="a published stack (threadnet stack PATH)")
    p.add_argument("--seccomp", action="store_true",
                   help="serve a Python program's sockets by seccomp too, not the in-process hook")
    _add_stack_args(p)
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- python app.py ...")
    p.set_defaults(func=cmd_run)

    # ip's own options (-4, -j...) are words here: threadnet/ipcli.py reads them
    p = sub.add_parser("ip", help="iproute2's ip on a published stack (addr, link, route, "
                       "neigh)", prefix_chars="+", add_help=False)
    p.add_argument("words", nargs="*", help="[--stack PATH] [-4|-6] [-j] OBJECT COMMAND ...")
    p.set_defaults(func=cmd_ip)

    # vdens's command line, parsed by threadnet/nsview.py (options, VNLs, then the command)
    p = sub.add_parser("ns", help="a command in its own user and network namespace, with a "
                       "tap on each network (like vdens)", prefix_chars="+", add_help=False)
    p.add_argument("words", nargs=argparse.REMAINDER,
                   help="[OPTIONS] [VNL...] [-- COMMAND ARGS...] (threadnet ns --help)")
    p.set_defaults(func=cmd_ns)

    p = sub.add_parser("bench", help="benchmarks against the real peers")
    p.add_argument("what", choices=["switch", "wire", "stack", "ioth", "slirp", "fabric", "views"],
                   help="what to measure")
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("lab", help="Mininet-style labs from a TOML topology (up, status, "
                       "ping, iperf, down)")
    from threadnet.lab.cli import add_arguments as add_lab_arguments

    add_lab_arguments(p)
    p.set_defaults(func=cmd_lab)

    p = sub.add_parser("ipn", help="IPN buses: multicast IPC among processes (create, show, rm)")
    from threadnet.ipn.command import add_arguments as add_ipn_arguments

    add_ipn_arguments(p, octal)
    p.set_defaults(func=cmd_ipn)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        return args.func(args)
    except UsageError as exc:
        print(exc, file=sys.stderr)
        return 2
    except NotImplementedError as exc:  # a configuration word without an agent: a usage error
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    except (ThreadnetError, OSError, ValueError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
