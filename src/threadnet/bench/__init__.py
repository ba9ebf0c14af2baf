"""Benchmarks: each measures threadnet and the real peer side by side in one run."""

import platform
import sys
import sysconfig


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
