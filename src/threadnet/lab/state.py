"""A lab's state on disk and its processes: where labs live, finding one, checking that a
PID is still the lab's before signalling it, removing the lab's namespaces."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from typing import Any

from threadnet.errors import ThreadnetError
from threadnet.lab.topology import load

STATE_FILE = "lab.json"

class LabError(ThreadnetError, RuntimeError):
    """A lab that cannot be started, found or stopped; the message names the node."""


def labs_dir() -> str:
    """Where labs keep their state: ``$THREADNET_LAB_DIR``, else /tmp/threadnet-labs-UID."""
    return os.environ.get("THREADNET_LAB_DIR") or f"/tmp/threadnet-labs-{os.geteuid()}"


def threadnet_env() -> dict[str, str]:
    """The environment in which ``python -m threadnet`` finds this very package."""
    import threadnet

    env = dict(os.environ)
    parent = os.path.dirname(os.path.dirname(os.path.abspath(threadnet.__file__)))
    parts = [parent] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(parts)
    # a lab stops all its nodes at once: a stack waiting at exit for its peers to
    # acknowledge its last FINs (the runner's linger, 10 s) would wait for the dead
    env.setdefault("THREADNET_EXIT_LINGER", "1")
    return env


def pid_of(pidfile: str) -> int | None:
    from threadnet.daemon import PidfileError, read_pidfile

    try:
        return read_pidfile(pidfile)
    except (PidfileError, OSError, ValueError):
        return None


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def is_ours(pid: int, directory: str) -> bool:
    """Is ``pid`` still a process of this lab (its command line names the lab's
    directory)? A PID reused by another process is left alone."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
    except OSError:
        return False
    return os.path.abspath(directory).encode() + b"/" in cmdline


def send_signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def run_ip(*args: str) -> None:
    r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise LabError(f"ip {' '.join(args)}: {r.stderr.strip() or 'failed'}")


def owned_by_root(directory: str) -> bool:
    try:
        return os.lstat(directory).st_uid == 0
    except OSError:
        return False


def remove_netns(ns: str) -> None:
    """End what still runs in the lab's namespace (it is the lab's), then remove it."""
    if not os.path.exists(f"/run/netns/{ns}"):
        return
    r = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, timeout=10)
    pids = [int(p) for p in r.stdout.split() if p.isdigit()]
    for pid in pids:
        send_signal(pid, signal.SIGKILL)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.02)
    subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


def read_state(directory: str) -> dict[str, Any]:
    from threadnet.fsafe import read_file

    data = read_file(os.path.join(directory, STATE_FILE), 1 << 22)
    if data is None:
        raise LabError(f"no lab in {directory} (no {STATE_FILE})")
    try:
        state = json.loads(data)
    except ValueError:
        raise LabError(f"{directory}/{STATE_FILE} is not a lab's state (bad JSON)") from None
    if not isinstance(state, dict) or state.get("version") != 1:
        raise LabError(f"{directory}/{STATE_FILE} is not a lab's state")
    state["dir"] = os.path.abspath(directory)
    return state


def running_labs() -> list[str]:
    """The names of the labs with state under ``labs_dir()``."""
    base = labs_dir()
    try:
        names = sorted(os.listdir(base))
    except OSError:
        return []
    return [n for n in names if os.path.isfile(os.path.join(base, n, STATE_FILE))]


def find_lab(lab: str | None) -> str:
    """The state directory of a lab given by name, directory or topology file."""
    if lab is None:
        labs = running_labs()
        if not labs:
            raise LabError(f"no lab is up (none in {labs_dir()})")
        if len(labs) > 1:
            raise LabError(f"several labs are up ({', '.join(labs)}): name one")
        return os.path.join(labs_dir(), labs[0])
    if os.path.isdir(lab) and os.path.isfile(os.path.join(lab, STATE_FILE)):
        return os.path.abspath(lab)
    name = lab
    if lab.endswith(".toml") and os.path.isfile(lab):
        name = load(lab).name
    directory = os.path.join(labs_dir(), name)
    if not os.path.isfile(os.path.join(directory, STATE_FILE)):
        raise LabError(f"no lab {name!r} is up (no {os.path.join(directory, STATE_FILE)})")
    return directory


def iter_rows(rows: list[dict[str, Any]]) -> Iterator[str]:
    """``threadnet lab status``'s lines."""
    for r in rows:
        state = "up" if r["running"] else "DOWN"
        pids = ",".join(str(p) for p in r["pids"]) or "-"
        extra = []
        if "addresses" in r:
            extra.append(" ".join(r["addresses"]) or "(no address)")
        if "netns" in r:
            extra.append(f"netns {r['netns']}")
        if "mgmt" in r:
            extra.append(f"console {r['mgmt']}")
        yield f"{r['node']:<12} {r['kind']:<7} {state:<5} pid {pids:<14} {'  '.join(extra)}"
