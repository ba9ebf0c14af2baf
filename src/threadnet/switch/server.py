"""``threadnet switch``: the Switch, its control socket and its console, on one event loop."""

from __future__ import annotations

import os
import sys
import threading
import time

from threadnet.loop import EventLoop, Timer, monotonic
from threadnet.mgmt.commands import Caller
from threadnet.mgmt.console import ConsoleServer, run_script
from threadnet.switch.commands import build_table
from threadnet.switch.core import Switch
from threadnet.switch.datasock import DataSocketServer
from threadnet.switch.fdb import ForwardingTable


def random_mac() -> bytes:
    """vde_switch's MACs start with 00:ff; the rest is random."""
    return b"\x00\xff" + os.urandom(4)


class SwitchServer:
    """A running switch: ``serve_forever()`` in the foreground or ``start()`` in a thread.

        >>> sw = SwitchServer("/tmp/sw", mgmt="/tmp/sw.mgmt").start()
        >>> ...  # vde:///tmp/sw links, vde_plug, qemu -nic vde,sock=/tmp/sw
        >>> sw.close()
    """

    def __init__(self, directory: str, *, mgmt: str | None = None, numports: int = 32,
                 hub: bool = False, mode: int = 0o600, group: str | None = None,
                 dirmode: int | None = None, mgmtmode: int = 0o600, mgmtgroup: str | None = None,
                 hashsize: int = 128, mac: bytes | None = None, rcfile: str | None = None,
                 pcap: str | None = None, loop: EventLoop | None = None,
                 batched: bool = True, fstp: bool = False, priority: int = 0x8000) -> None:
        self.loop = loop if loop is not None else EventLoop()
        self.directory = os.path.abspath(directory)
        self.mode = mode
        self.mgmtmode = mgmtmode
        self.mgmt_path = os.path.abspath(mgmt) if mgmt else None
        self.mac = mac if mac is not None else random_mac()
        self.started = monotonic()
        self.switch = Switch(numports, hub=hub, fdb=ForwardingTable(size=hashsize), mac=self.mac,
                             priority=priority, fstp=fstp and not hub, clock=monotonic)
        self._captures: dict[int | None, object] = {}
        self._thread: threading.Thread | None = None
        self._closed = False
        self.datasock = DataSocketServer(self.loop, self.switch, self.directory, mode=mode,
                                         group=group, dirmode=dirmode,
                                         mgmtmode=mgmtmode, mgmtgroup=mgmtgroup,
                                         batched=batched)
        self.table = build_table(self)
        self.console: ConsoleServer | None = None
        try:
            if self.mgmt_path:
                from threadnet.switch.commands import banner_lines

                banner = "\n".join(banner_lines()) + "\n"
                self.console = ConsoleServer(self.loop, self.mgmt_path, self.table, banner, "\nvde$ ",
                                             mode=mgmtmode, group=mgmtgroup, on_shutdown=self.stop)
            if rcfile:
                # like vde_switch: a failing command is reported, the switch still starts
                for line in run_script(self.table, rcfile, Caller.service(),
                                       regular_only=False):
                    print(f"threadnet switch: {line}", file=sys.stderr)
            if pcap:
                self.set_capture(None, pcap)
        except BaseException:
            self.close()
            raise
        self._gc: Timer | None = None
        self.reschedule_gc()
        # the fast spanning tree's hello timer (vde_switch's one-second clock)
        self._fst_timer = self.loop.call_every(1.0, lambda: self.switch.fst.tick(monotonic()))

    # -- clock ---------------------------------------------------------------------
    @staticmethod
    def now() -> float:
        return monotonic()

    def uptime(self) -> float:
        return monotonic() - self.started

    def reschedule_gc(self) -> None:
        if getattr(self, "_gc", None) is not None:
            self._gc.cancel()
        self._gc = self.loop.call_every(self.switch.fdb.gc_interval,
                                        lambda: self.switch.expire(monotonic()))

    # -- capture -------------------------------------------------------------------
    def set_capture(self, port: int | None, path: str | None, caller: Caller | None = None) -> None:
        """Capture frames entering ``port`` and leaving it (or every frame the switch
        receives, for ``port=None``) to a pcap file; ``path=None`` stops.

        The file is opened (created, or truncated) with the rights of ``caller``: a console
        user's own (issue 14, S2), the service's when None. It must be a regular file: a
        FIFO or a device could block the switch's loop (EINVAL).

        Called from another thread while the switch runs (``start()``), the change is made
        on the switch's own thread, so no frame is written to a capture being closed."""
        thread = self._thread
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            done = threading.Event()
            failed: list[BaseException] = []

            def change() -> None:
                try:
                    self._set_capture(port, path, caller)
                except BaseException as exc:
                    failed.append(exc)
                finally:
                    done.set()

            self.loop.call_soon_threadsafe(change)
            if not done.wait(30):
                raise TimeoutError("the switch's loop did not take the capture change")
            if failed:
                raise failed[0]
            return
        self._set_capture(port, path, caller)

    def _set_capture(self, port: int | None, path: str | None, caller: Caller | None) -> None:
        import contextlib
        import stat

        from threadnet.wire.pcap import PcapWriter

        old = self._captures.pop(port, None)
        if old is not None:
            old.close()  # type: ignore[attr-defined]
            if port is None or port in self.switch.ports:
                self.switch.set_capture(port, None)  # (a refused new file leaves none)
        if port is not None and port not in self.switch.ports:
            if path is not None:
                raise OSError(6, "no such port")
            return
        hook = None
        if path is not None:
            caller = caller if caller is not None else Caller.service()
            fd = caller.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            with contextlib.ExitStack() as undo:
                undo.callback(os.close, fd)
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    raise OSError(22, "a capture goes to a regular file", path)
                f = os.fdopen(fd, "wb")
                undo.pop_all()
                undo.callback(f.close)
                writer = PcapWriter(f)
                undo.callback(writer.close)  # (runs first: flushes, then the file closes)
                self._captures[port] = undo.pop_all()
            hook = lambda frame, w=writer: w.write(frame, time.time())  # noqa: E731
        self.switch.set_capture(port, hook)

    # -- running -------------------------------------------------------------------
    def serve_forever(self) -> None:
        try:
            self.loop.run()
        finally:
            self.close()

    def start(self) -> SwitchServer:
        """Run in a daemon thread (for programs and tests that host a switch in-process)."""
        self._thread = threading.Thread(target=self.loop.run, name=f"switch {self.directory}",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.loop.stop()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.loop.stop()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)
        for w in self._captures.values():
            w.close()  # type: ignore[attr-defined]
        self._captures.clear()
        if self.console is not None:
            self.console.close()
        self.datasock.close()
        self.loop.close()

    def __enter__(self) -> SwitchServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
