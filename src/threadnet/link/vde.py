"""``vde://DIR[port]``: a client of any switch that speaks the vde_switch control protocol.

Works against Debian's vde_switch, vdeplug4's ``switch://``/``hub://`` and ``threadnet switch``.
The handshake (interop.md 1.2): connect a stream socket to ``DIR/ctl``, bind a datagram
socket, send one request_v3, read the 110-byte address of our port's datagram socket and
connect to it. The control stream stays open for the port's lifetime: closing it unplugs
us, and the switch closing it tells us the port is gone.
"""

from __future__ import annotations

import errno
import itertools
import os
import pwd
import socket
import stat

from threadnet.errors import LinkError, URLError
from threadnet.link import (
    Link,
    link_description,
    parse_options,
    require_no_inner,
    split_bracket,
    unquote,
)
from threadnet.link.batch import BatchedDatagramLink, TxBatch
from threadnet.wire import vde as wire

_counter = itertools.count()
HANDSHAKE_TIMEOUT = 5.0
RECV_BUF = 65536
SOCK_BUF = 4 << 20


def _user_name() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def default_description(prog: str = "threadnet") -> str:
    """The description vdeplug4 sends, ``"<prog> user=<name> pid=<pid>"``."""
    return f"{prog} user={_user_name()} pid={os.getpid()}"


def _read_default_file(path: str) -> str | None:
    """vdeplug4's default files: a symlink to a switch dir, or a file whose first line is a VNL."""
    try:
        if os.path.islink(path) or os.path.isdir(path):
            # the target may not exist yet: ``threadnet up`` creates the switch there
            return os.path.realpath(path)
        if os.path.isfile(path):
            with open(path) as f:
                line = f.readline().strip()
            return line or None
    except OSError:
        return None
    return None


def _switch_alive(directory: str) -> bool:
    ctl = os.path.join(directory, "ctl")
    try:
        return stat.S_ISSOCK(os.stat(ctl).st_mode)
    except OSError:
        return False


def default_switch() -> str:
    """Resolve the empty URL as vdeplug4 does (interop.md 2.1).

    ``$HOME/.vdeplug/default``, then ``$HOME/.vde2/default.switch`` (a symlink to a
    switch directory, or a file whose first line is a URL), else ``/var/run/vde.ctl``
    when a switch is there, else ``/tmp/vde.ctl``.
    """
    home = os.path.expanduser("~")
    for name in (".vdeplug/default", ".vde2/default.switch"):
        found = _read_default_file(os.path.join(home, name))
        if found:
            return found if "://" in found else "vde://" + found
    if _switch_alive("/var/run/vde.ctl"):
        return "vde:///var/run/vde.ctl"
    return "vde:///tmp/vde.ctl"


def default_switch_dir() -> str:
    """Where ``threadnet up`` puts the default switch so that an empty URL finds it: the
    user's ``~/.vdeplug/default`` or ``~/.vde2/default.switch`` when it names a switch
    directory, else vde_switch's own default, ``/var/run/vde.ctl`` for root and
    ``/tmp/vde.ctl`` for others (vdeplug4's ``vde_plug`` looks in both)."""
    home = os.path.expanduser("~")
    for name in (".vdeplug/default", ".vde2/default.switch"):
        found = _read_default_file(os.path.join(home, name))
        if found:
            if found.startswith("vde://"):
                return found[len("vde://"):]
            if "://" not in found:
                return found
            break
    return "/var/run/vde.ctl" if os.geteuid() == 0 else "/tmp/vde.ctl"


class VdeLink(BatchedDatagramLink, Link):
    """A port on a vde_switch-protocol switch."""

    #: vde_switch reads datagrams into a 1518-byte buffer (14 + 1504: cut beyond), and
    #: threadnet switch drops longer ones (interop.md 1.3): MTU 1500 at most
    max_frame = 1518
    max_frame_known = True

    def __init__(self, directory: str, port: int = 0, *, port0: bool = False,
                 group: str | None = None, mode: int | None = None,
                 description: str | None = None, portgroup: str | None = None,
                 timeout: float = HANDSHAKE_TIMEOUT) -> None:
        super().__init__()
        self.directory = directory
        self.url = f"vde://{directory}"
        if description is None:
            description = link_description.get() or default_description()
        self.description = description
        self.drops = 0
        self._tx: TxBatch | None = None
        #: receive slot size for batched receiving: a frame up to 64 KiB - 64 fits
        self.rx_slot = 2048
        self._ctl: socket.socket | None = None
        self._data: socket.socket | None = None
        self._own_path: str | None = None
        try:
            self._ctl = self._connect_ctl(directory, portgroup)
            self._data, self._own_path = self._bind_data(directory, group, mode)
            kind = wire.REQ_NEW_PORT0 if port0 else wire.REQ_NEW_CONTROL
            request = wire.pack_request(self._own_path, self.description, 0 if port0 else port, kind)
            if len(request) > wire.MAX_REQUEST:
                raise LinkError("control request too long")
            self._ctl.settimeout(timeout)
            self._ctl.sendall(request)
            reply = self._read_reply(self._ctl)
            self.remote_path = wire.parse_sockaddr_un(reply)
            self._data.connect(self.remote_path)
            self._ctl.setblocking(False)
            self._data.setblocking(False)
            self.port = _port_from_path(self.remote_path)
        except BaseException:
            self._cleanup()
            raise
        # Like vdeplug4: once connected, our socket needs no name in the filesystem.
        self._unlink_own()

    @staticmethod
    def _connect_ctl(directory: str, portgroup: str | None) -> socket.socket:
        candidates = []
        if portgroup:
            candidates.append(os.path.join(directory, portgroup))
        candidates.append(os.path.join(directory, "ctl"))
        candidates.append(directory)  # very old switches: the path is the ctl socket itself
        last: OSError | None = None
        for path in candidates:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(path)
                return s
            except OSError as exc:
                s.close()
                last = exc
                if exc.errno == errno.EACCES:
                    raise LinkError(errno.EACCES, f"no permission to use the switch at {directory}") from exc
        assert last is not None
        raise LinkError(last.errno or errno.ECONNREFUSED,
                        f"no switch at {directory}: {last.strerror or last}") from last

    @staticmethod
    def _bind_data(directory: str, group: str | None, mode: int | None) -> tuple[socket.socket, str]:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        # Room for a TCP window's worth of frames in both directions: the send buffer is
        # what a datagram sent to the switch occupies until the switch reads it, and a
        # send that finds it full loses the frame (a burst of a window lost at once).
        for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            try:
                s.setsockopt(socket.SOL_SOCKET, opt, SOCK_BUF)
            except OSError:
                pass
        bases = [directory, "/var/run", "/var/tmp", "/tmp"]
        path = ""
        for base in bases:
            bound = False
            for _ in range(1000):
                name = ("/.%05d-%05d" if base == directory else "/vde.%05d-%05d") % (
                    os.getpid() % 100000, next(_counter) % 100000)
                path = base.rstrip("/") + name
                try:
                    s.bind(path)
                    bound = True
                    break
                except OSError as exc:
                    if exc.errno == errno.EADDRINUSE:
                        continue
                    break
            if bound:
                break
        else:
            s.close()
            raise LinkError(errno.EACCES, f"cannot bind a datagram socket for switch {directory}")
        try:
            ctl_stat = os.stat(os.path.join(directory, "ctl"))
        except OSError:
            ctl_stat = None
        perm = 0o700
        if mode is not None:
            perm = mode
        elif ctl_stat is not None and ctl_stat.st_uid not in (0, os.geteuid()):
            # A switch run by someone else must be able to open our socket.
            try:
                os.chown(path, -1, ctl_stat.st_gid)
                perm = 0o770
            except OSError:
                perm = 0o777
        if group is not None:
            import grp

            try:
                gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
                os.chown(path, -1, gid)
            except (KeyError, OSError) as exc:
                s.close()
                os.unlink(path)
                raise LinkError(errno.EPERM, f"cannot set group {group!r} on {path}: {exc}") from exc
        os.chmod(path, perm)
        return s, path

    def _read_reply(self, ctl: socket.socket) -> bytes:
        reply = b""
        try:
            while len(reply) < wire.SOCKADDR_UN_LEN:
                chunk = ctl.recv(wire.SOCKADDR_UN_LEN - len(reply))
                if not chunk:
                    raise LinkError(errno.ECONNREFUSED,
                                    f"switch at {self.directory} refused the port "
                                    "(port busy or out of range, or no permission)")
                reply += chunk
        except TimeoutError:
            raise LinkError(errno.ETIMEDOUT,
                            f"switch at {self.directory} did not answer (port out of range?)") from None
        return reply

    def _unlink_own(self) -> None:
        if self._own_path:
            try:
                os.unlink(self._own_path)
            except OSError:
                pass
            self._own_path = None

    def _cleanup(self) -> None:
        self._unlink_own()
        for s in (self._data, self._ctl):
            if s is not None:
                s.close()

    # -- Link interface ------------------------------------------------------------
    def fileno(self) -> int:
        if self._data is None:
            return -1
        return self._data.fileno()

    def ctl_fileno(self) -> int | None:
        return self._ctl.fileno() if self._ctl is not None else None

    def _check_peer(self) -> None:
        assert self._ctl is not None
        try:
            data = self._ctl.recv(256)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.closed_by_peer = True
            raise LinkError(errno.ECONNRESET, f"switch at {self.directory} closed the port")

    def _send(self, frame: bytes | bytearray | memoryview) -> None:
        self._send_frame(frame)

    def _dgram_socket(self) -> socket.socket:
        assert self._data is not None
        return self._data

    def _gone(self, exc: OSError) -> LinkError:
        return LinkError(exc.errno, f"switch at {self.directory} is gone: {exc.strerror}")

    def _recv(self) -> bytes:
        assert self._data is not None
        try:
            # (a zero-length datagram is old libvdeplug's goodbye: recv() skips it)
            return self._data.recv(RECV_BUF)
        except BlockingIOError:
            raise
        except OSError as exc:
            self.closed_by_peer = True
            raise LinkError(exc.errno, f"switch at {self.directory} is gone: {exc.strerror}") from exc

    def close(self) -> None:
        if not self.closed:
            super().close()
            self._cleanup()


def _port_from_path(path: str) -> int:
    """``DIR/005.7`` -> 5 (threadnet and vde_switch); -1 when the name says nothing."""
    name = os.path.basename(path)
    head = name.split(".", 1)[0]
    return int(head) if head.isdigit() else -1


def open_vde(url: str, rest: str, inner: str | None) -> VdeLink:
    require_no_inner(url, inner)
    path, opts_text = split_bracket(rest)
    path = unquote(path)
    port, port0, portgroup = 0, False, None
    opts: dict[str, str] = {}
    if opts_text:
        first = opts_text.split("/", 1)[0]
        if first.isdigit():
            port = int(first)
            port0 = port == 0
            opts_text = opts_text[len(first):]
        elif first and "=" not in first and first not in ("port", "group", "mode", "descr"):
            portgroup = first
            opts_text = opts_text[len(first):]
        opts = parse_options(opts_text, ("port", "group", "mode", "descr"), url)
    if "port" in opts:
        if not opts["port"].isdigit():
            raise URLError(f"{url!r}: port must be a number")
        port = int(opts["port"])
        port0 = port == 0
    mode = None
    if "mode" in opts:
        try:
            mode = int(opts["mode"], 8)
        except ValueError:
            raise URLError(f"{url!r}: mode must be octal, e.g. mode=0770") from None
    if not path:
        from threadnet.link.vde import default_switch

        path = default_switch()[len("vde://"):]
    return VdeLink(path, port, port0=port0, group=opts.get("group"), mode=mode,
                   description=opts.get("descr"), portgroup=portgroup)
