"""Benchmarks: each measures threadnet and the real peer side by side in one run."""

import os
import platform
import signal
import sys
import sysconfig
import time


def interpreter() -> str:
    """Which Python ran the benchmark: the two interpreters here differ by ~1.8x."""
    cfg = sysconfig.get_config_var("CONFIG_ARGS") or ""
    if "--enable-optimizations" in cfg:
        build = "optimized build"
    elif sys.executable.startswith("/usr/bin/"):
        build = "distro build"
    else:
        build = "built without --enable-optimizations"
    return f"{sys.executable} (CPython {platform.python_version()}, {build})"


def child_env() -> dict[str, str]:
    """Environment for child processes that must import this checkout of threadnet."""
    env = dict(os.environ)
    src = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def kill_pid(pid: int) -> None:
    """End a process by PID: SIGTERM, wait up to 2 s, then SIGKILL."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.02)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
