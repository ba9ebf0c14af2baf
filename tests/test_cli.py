"""The command line: up/down and the default URL, plug as a cable, capture, console."""

from __future__ import annotations

import os
import struct
import subprocess

import pytest

from threadnet import open_link
from threadnet.mgmt.client import ConsoleClient
from threadnet.wire.pcap import PcapReader

from conftest import need_tool, read_pidfile, threadnet_cmd, threadnet_env, wait_for


def frame(src: int, dst: bytes = b"\xff" * 6, size: int = 60) -> bytes:
    return dst + bytes([2, 0, 0, 0, 0, src]) + b"\x88\xb5" + bytes(size - 14)


@pytest.fixture
def home(sockdir):
    """A HOME whose ~/.vdeplug/default points into the test's directory."""
    h = os.path.join(sockdir, "home")
    os.makedirs(os.path.join(h, ".vdeplug"))
    sw = os.path.join(sockdir, "default-sw")
    os.symlink(sw, os.path.join(h, ".vdeplug", "default"))
    return h, sw


def test_up_default_switch_and_down(home, procs):
    h, sw = home
    env = threadnet_env({"HOME": h})
    r = subprocess.run(threadnet_cmd("up", "-d"), env=env, capture_output=True, text=True, timeout=20)
    assert r.returncode == 0, r.stderr
    assert f"vde://{sw}" in r.stdout and "attach" in r.stdout
    pid = procs.adopt(read_pidfile(sw + ".pid"))
    assert os.path.exists(os.path.join(sw, "ctl"))
    # an empty URL finds it, from Python and from Debian's vde_plug (vdeplug4 resolution)
    code = ("import threadnet; l = threadnet.open_link(''); print(l.port); l.close()")
    r = subprocess.run(["python3", "-c", code], env=env, capture_output=True, text=True, timeout=20)
    assert r.returncode == 0 and int(r.stdout) >= 1, r.stderr
    need_tool("vde_plug")
    plug = procs.popen(["vde_plug", "-D", "default-plug"], env={**env, "PATH": os.environ["PATH"]},
                       stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    with ConsoleClient(sw + ".mgmt") as c:
        wait_for(lambda: any("default-plug" in ln for ln in c.run("port/print")[1]),
                 what="vde_plug on the default switch")
    plug.kill()
    r = subprocess.run(threadnet_cmd("down"), env=env, capture_output=True, text=True, timeout=20)
    assert r.returncode == 0, r.stderr
    wait_for(lambda: not os.path.exists(f"/proc/{pid}"), what="switch exit")
    assert not os.path.exists(os.path.join(sw, "ctl"))
    r = subprocess.run(threadnet_cmd("down"), env=env, capture_output=True, text=True, timeout=20)
    assert r.returncode == 1 and r.stderr.count("\n") == 1


def test_default_file_with_a_url(sockdir, threadnet_switch):
    d, _, _ = threadnet_switch()
    h = os.path.join(sockdir, "home2")
    os.makedirs(os.path.join(h, ".vdeplug"))
    with open(os.path.join(h, ".vdeplug", "default"), "w") as f:
        f.write(f"vde://{d}[4]\n")
    code = "import threadnet; l = threadnet.open_link(''); print(l.port); l.close()"
    r = subprocess.run(["python3", "-c", code], env=threadnet_env({"HOME": h}),
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "4"


def test_plug_cable_joins_two_switches(threadnet_switch, procs, sockdir):
    d1, _, _ = threadnet_switch()
    d2, mgmt2, _ = threadnet_switch()
    pidfile = os.path.join(sockdir, "cable.pid")
    procs.daemon(threadnet_cmd("plug", "-D", "cable", "-d", "-p", pidfile, f"vde://{d1}", d2),
                 pidfile, env=threadnet_env())
    with open_link(f"vde://{d1}") as a, open_link(f"vde://{d2}") as b:
        with ConsoleClient(mgmt2) as c:
            wait_for(lambda: any("cable" in ln for ln in c.run("port/print")[1]), what="cable")
        a.send(frame(1))
        assert b.wait_readable(3)
        assert b.recv() == frame(1)
        b.send(frame(2))
        assert a.wait_readable(3)
        assert a.recv() == frame(2)


def test_plug_daemon_with_an_impaired_cable(threadnet_switch, procs, sockdir):
    """`threadnet plug -d wirefilter://...{URL} URL`: the emulated line's pacing thread,
    started when the link opened, runs again in the daemon (it used to die in the fork,
    and no frame passed)."""
    import time

    d1, _, _ = threadnet_switch()
    d2, mgmt2, _ = threadnet_switch()
    pidfile = os.path.join(sockdir, "cable.pid")
    procs.daemon(threadnet_cmd("plug", "-D", "cable", "-d", "-p", pidfile,
                               f"wirefilter://delay=50{{vde://{d1}}}", d2),
                 pidfile, env=threadnet_env())
    with open_link(f"vde://{d1}") as a, open_link(f"vde://{d2}") as b:
        with ConsoleClient(mgmt2) as c:
            wait_for(lambda: any("cable" in ln for ln in c.run("port/print")[1]), what="cable")
        t = time.monotonic()
        a.send(frame(1))
        assert b.wait_readable(3)
        assert b.recv() == frame(1)
        assert time.monotonic() - t >= 0.045  # the line's delay, not a bare cable
        b.send(frame(2))
        assert a.wait_readable(3)
        assert a.recv() == frame(2)


def test_plug_stdio_stream(threadnet_switch, procs):
    d_mgmt = threadnet_switch()
    d, mgmt, _ = d_mgmt
    p = procs.popen(threadnet_cmd("plug", "-D", "stdio-plug", f"vde://{d}"), env=threadnet_env(),
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    with open_link(f"vde://{d}") as a:
        with ConsoleClient(mgmt) as c:  # the plug's port exists: frames reach it
            wait_for(lambda: any("stdio-plug" in ln for ln in c.run("port/print")[1]),
                     timeout=20, what="the plug's port")
        f = frame(3)
        p.stdin.write(struct.pack(">H", len(f)) + f)
        p.stdin.flush()
        assert a.wait_readable(3)
        assert a.recv() == f
        a.send(frame(4))
        (n,) = struct.unpack(">H", p.stdout.read(2))
        assert p.stdout.read(n) == frame(4)
    p.stdin.close()  # EOF on stdin ends the plug
    assert p.wait(5) == 0


def test_capture_writes_pcap(threadnet_switch, procs, sockdir):
    d, _, _ = threadnet_switch()
    out = os.path.join(sockdir, "cap.pcap")
    p = procs.popen(threadnet_cmd("capture", f"vde://{d}", "-w", out, "-c", "5"),
                    env=threadnet_env(), stderr=subprocess.PIPE)
    with open_link(f"vde://{d}") as a:
        # the pcap file appears once the capture's link is connected
        # (its port exists by then: frames sent now wait in its socket)
        wait_for(lambda: os.path.exists(out), timeout=20, what="the capture to start")
        for i in range(5):
            a.send(frame(i, size=60 + i))
        assert p.wait(20) == 0
    frames = [f for _, f in PcapReader(out)]
    assert frames == [frame(i, size=60 + i) for i in range(5)]
    if os.path.exists("/usr/bin/tshark"):
        r = subprocess.run(["tshark", "-r", out], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0 and len(r.stdout.splitlines()) == 5


def test_console_cli(threadnet_switch):
    d, mgmt, _ = threadnet_switch()
    r = subprocess.run(threadnet_cmd("console", mgmt, "port/showinfo"), env=threadnet_env(),
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 0
    assert r.stdout.splitlines() == ["Numports=32", "HUB=false", "counters=true"]
    r = subprocess.run(threadnet_cmd("console", mgmt, "vlan/remove", "99"), env=threadnet_env(),
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 1 and "No such device or address" in r.stderr
    assert r.stderr.count("\n") == 1


@pytest.mark.parametrize("args", [
    ["switch", "-n", "abc", "-s", "/tmp/x"],
    ["switch", "--bogus"],
    ["switch", "-m", "999", "-s", "/tmp/x"],
    ["plug", "nope://x"],
    ["plug", "vde:///nonexistent/dir"],
    ["capture", "null://"],
    ["wirefilter", "-l", "xyz", "-v", "/tmp/a:/tmp/b"],
    ["wirefilter", "-v", "nocolon"],
    ["bench", "nothing"],
])
def test_bad_arguments_one_line_error(args):
    r = subprocess.run(threadnet_cmd(*args), env=threadnet_env(), capture_output=True, text=True,
                       timeout=20, stdin=subprocess.DEVNULL)
    assert r.returncode != 0
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "Traceback" not in r.stderr


def test_bench_switch_runs_side_by_side():
    """The benchmark runs (briefly) and reports ratios and the interpreter; no speed assertion."""
    need_tool("vde_switch")
    r = subprocess.run(threadnet_cmd("bench", "switch", "--repeat", "1", "--duration", "0.5",
                                     "--sizes", "64", "--iperf", "0", "--json"),
                       env=threadnet_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "interpreter:" in r.stdout
    import json

    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert set(result["results"]) == {"fps64", "cpu64"}
    assert result["results"]["fps64"]["threadnet"] > 0
    assert result["results"]["fps64"]["vde_switch"] > 0


def test_run_removes_the_directories_of_runs_that_were_killed(tmp_path):
    """`threadnet run` killed with SIGKILL leaves threadnet-run-PID-* behind; the next
    run removes this user's whose process is gone, and nothing else."""
    from threadnet.cli import _remove_stale_run_dirs

    p = subprocess.Popen(["true"])
    p.wait()  # a PID that is gone
    dead = tmp_path / f"threadnet-run-{p.pid}-abc"
    (dead / "stack").mkdir(parents=True)
    alive = tmp_path / f"threadnet-run-{os.getpid()}-def"
    alive.mkdir()
    other = tmp_path / "threadnet-run-x-1"
    other.mkdir()
    target = tmp_path / "elsewhere"
    target.mkdir()
    link = tmp_path / f"threadnet-run-{p.pid}-lnk"
    link.symlink_to(target)
    _remove_stale_run_dirs(str(tmp_path))
    assert not dead.exists()
    assert alive.exists() and other.exists() and target.exists() and link.is_symlink()
