"""``threadnet ns`` (issue 12, acceptance 7): a command in its own user and network
namespace whose taps are on VDE networks, side by side with Debian's ``vdens``.

The namespace tests run as the unprivileged test user where this machine lets users make
user namespaces (``unshare -Urn true`` as that user), as root otherwise (and say so).
Inside a user namespace the mode of ``/dev/net/tun`` decides who may make a tap; where
the user may not open it (a container's 0600, Debian's own is 0666), the set-up gives it
Debian's mode for the test, says so, and puts the old mode back.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
import warnings

import pytest

from threadnet import nsview
from threadnet.nsview import NsUsageError, parse_args, resolv_text

from conftest import need_tool, run_as, threadnet_cmd, threadnet_env, wait_for
from switch_helpers import Console

TUN = "/dev/net/tun"


# -- the command line: vdens's, with "--" to separate VNLs from the command ---------------
def test_parse_single_vnl_then_command_like_vdens():
    o = parse_args(["vde:///tmp/sw", "ip", "-br", "link"], environ={})
    assert o.vnls == ["vde:///tmp/sw"] and o.command == ["ip", "-br", "link"]
    assert o.ifnames == ["vde0"]
    o = parse_args(["vde:///tmp/sw", "--", "ping", "-c", "1", "--", "x"], environ={})
    assert o.vnls == ["vde:///tmp/sw"] and o.command == ["ping", "-c", "1", "--", "x"]


def test_parse_several_vnls_with_dashes_or_multi():
    o = parse_args(["vde:///a", "slirp://", "--", "sh"], environ={})
    assert o.vnls == ["vde:///a", "slirp://"] and o.command == ["sh"]
    assert o.ifnames == ["vde0", "vde1"]
    o = parse_args(["-m", "-i", "eth", "vde:///a", "udp://1->127.0.0.1:2"], environ={})
    assert o.vnls == ["vde:///a", "udp://1->127.0.0.1:2"] and o.command == []
    assert o.ifnames == ["eth0", "eth1"]
    o = parse_args(["--multi", "--iface=n", "/a", "/b", "--", "true"], environ={})
    assert o.ifnames == ["n0", "n1"] and o.command == ["true"]
    # options stop at the first other word, as vdens's getopt("+...") does
    o = parse_args(["vde:///a", "-m", "x"], environ={})
    assert o.vnls == ["vde:///a"] and o.command == ["-m", "x"]


def test_parse_no_network_stream_command_and_resolver_options():
    for word in ("-", "no", ""):
        o = parse_args([word, "true"], environ={})
        assert o.vnls == [] and o.command == ["true"]
    assert parse_args([], environ={}).vnls == []
    o = parse_args(["=vde_plug /tmp/sw", "true"], environ={})
    assert o.vnls == ["cmd://vde_plug /tmp/sw"]
    o = parse_args(["-s", "-R", "9.9.9.9", "-r", "/tmp/r", "-cu", "/a"], environ={})
    assert o.sysadm and o.resolvaddr == "9.9.9.9" and o.resolvconf == "/tmp/r"
    o = parse_args(["/a"], environ={"VDE_RESOLVADDR": "1.1.1.1", "VDE_RESOLVCONF": "/x"})
    assert o.resolvaddr == "1.1.1.1" and o.resolvconf == "/x"
    assert resolv_text("9.9.9.9, 2620:fe::fe") == b"nameserver 9.9.9.9\nnameserver 2620:fe::fe\n"


@pytest.mark.parametrize("words,message", [
    (["-x", "/a"], "unknown option -x"),
    (["--ifa"], "needs a value"),
    (["--sys=1", "/a"], "takes no value"),
    (["-i", "averyverylongname", "/a"], "too long"),
    (["-i", "a/b", "/a"], "bad interface prefix"),
    (["/a", "no", "--", "true"], "only makes sense alone"),
])
def test_parse_errors_are_clear(words, message):
    with pytest.raises(NsUsageError, match=message):
        parse_args(words, environ={})
    with pytest.raises(NsUsageError, match="not an IP address"):
        resolv_text("9.9.9.9,dns.example")


def test_cli_help_and_usage_errors():
    r = subprocess.run(threadnet_cmd("ns", "--help"), env=threadnet_env(), capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0 and "vde0, vde1" in r.stdout and "--resolvaddr" in r.stdout
    r = subprocess.run(threadnet_cmd("ns", "-q"), env=threadnet_env(), capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 2 and r.stderr.strip() == "threadnet ns: unknown option -q"


# -- a bad VNL fails before any namespace is made -------------------------------------------
# In a fresh interpreter (no thread of pytest's around the fork): libc's unshare is
# replaced by one that records, in a file (the child is another process), that it was
# asked for, and refuses.
_COUNT_UNSHARE = """
import ctypes, errno, sys
from threadnet import nsview

class CountingLibc:
    def unshare(self, flags):
        with open(sys.argv[1], "a") as f:
            f.write(f"{flags:#x}\\n")
        ctypes.set_errno(errno.EPERM)
        return -1

nsview.libc = lambda: CountingLibc()
try:
    nsview.run(nsview.parse_args(sys.argv[2:], environ={}))
except Exception as exc:
    print(type(exc).__name__, exc)
"""


def test_bad_vnl_fails_before_any_namespace(tmp_path):
    marker = str(tmp_path / "unshare-called")
    touched = tmp_path / "ran"

    def attempt(vnl: str) -> str:
        r = subprocess.run([sys.executable, "-c", _COUNT_UNSHARE, marker, vnl, "touch",
                            str(touched)], env=threadnet_env(), capture_output=True, text=True,
                           timeout=30)
        assert r.returncode == 0, r.stderr
        return r.stdout

    assert "unknown link scheme 'nosuch'" in attempt("nosuch://x")
    assert "no switch at" in attempt(str(tmp_path / "nosw"))
    assert not os.path.exists(marker) and not touched.exists()
    # the same with a good VNL reaches unshare (so the check above can fail), whose
    # refusal is explained
    assert "unprivileged user namespaces are refused here" in attempt("null://")
    with open(marker) as f:
        flags = int(f.read().split()[0], 16)
    assert flags & nsview.CLONE_NEWUSER and flags & nsview.CLONE_NEWNET
    assert not touched.exists()


def test_cli_bad_vnl_is_one_clear_line(tmp_path):
    touched = tmp_path / "ran"
    for vnl, message in (("nosuch://x", "unknown link scheme 'nosuch'"),
                         (str(tmp_path / "nosw"), f"no switch at {tmp_path}/nosw")):
        r = subprocess.run(threadnet_cmd("ns", vnl, "touch", str(touched)), env=threadnet_env(),
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 1, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("threadnet ns: ") and message in lines[0]
    assert not touched.exists()


# -- namespaces: as the unprivileged user where the machine allows it -----------------------
class Runner:
    """Runs commands as the user the namespace tests use (see ``ns_user``)."""

    def __init__(self, procs, user: dict | None, python: str, env: dict[str, str]) -> None:
        self.procs, self.user, self.python, self.env = procs, user, python, env

    def kw(self, env: dict[str, str] | None = None) -> dict:
        kw: dict = {"env": {**self.env, **(env or {})}}
        if self.user is not None:
            kw.update(user=self.user["uid"], group=self.user["gid"], extra_groups=[])
        return kw

    def tn(self, *args: str) -> list[str]:
        return [self.python, "-m", "threadnet", "ns", *args]

    def run(self, cmd: list[str], env: dict[str, str] | None = None, **kw):
        if "input" not in kw:
            kw.setdefault("stdin", subprocess.DEVNULL)
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60, **kw,
                              **self.kw(env))

    def popen(self, cmd: list[str], env: dict[str, str] | None = None, **kw):
        return self.procs.popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                **kw, **self.kw(env))


def _userns_sysctls() -> str:
    """The settings that let users make user namespaces, as far as this kernel has them."""
    out = []
    for name in ("kernel/unprivileged_userns_clone", "user/max_user_namespaces",
                 "kernel/apparmor_restrict_unprivileged_userns"):
        try:
            with open(f"/proc/sys/{name}") as f:
                out.append(f"{name.replace('/', '.')}={f.read().strip()}")
        except OSError:
            pass
    return ", ".join(out) or "no sysctl about it"


@pytest.fixture
def ns_user(unpriv, procs) -> Runner:
    """The unprivileged user when it may make user namespaces here, else root; and a
    /dev/net/tun that user may open (Debian's 0666 for the test, when it is not)."""
    need_tool("vdens", "ip", "ping")
    if not os.path.exists(TUN):
        pytest.skip(f"no {TUN} (is the tun module loaded?)")
    probe = run_as(unpriv, ["unshare", "-Urn", "true"], capture_output=True, text=True,
                   timeout=30)
    if probe.returncode == 0:
        runner = Runner(procs, unpriv, unpriv["python"],
                        {"PATH": "/usr/local/bin:/usr/bin:/bin", "PYTHONPATH": unpriv["src"],
                         "HOME": "/tmp"})
    else:
        warnings.warn(f"unprivileged user namespaces are refused here ({probe.stderr.strip()};"
                      f" {_userns_sysctls()}): the threadnet ns and vdens tests run as root",
                      stacklevel=1)
        runner = Runner(procs, None, threadnet_cmd()[0], threadnet_env())
    opened = runner.run([runner.python, "-c", f"import os; os.close(os.open({TUN!r}, os.O_RDWR))"])
    if opened.returncode == 0:
        yield runner
        return
    old = stat.S_IMODE(os.stat(TUN).st_mode)
    warnings.warn(f"{TUN} has mode {old:04o}: an unprivileged user cannot open it, and in a "
                  "user namespace its mode alone decides who makes taps; the test gives it "
                  "Debian's 0666 and puts the old mode back after", stacklevel=1)
    os.chmod(TUN, 0o666)
    try:
        yield runner
    finally:
        os.chmod(TUN, old)


@pytest.fixture
def lan(fg_switch):
    """Debian's vde_switch, its sockets open to the test user; returns (dir, mgmt)."""
    d, mgmt, _ = fg_switch("debian", "-m", "0777")
    return d, mgmt


@pytest.fixture
def flags(sockdir):
    """A directory every user may write: the namespaces' commands leave flag files there."""
    d = os.path.join(sockdir, "flags")
    os.mkdir(d)
    os.chmod(d, 0o1777)
    return d


def _meet(addr: str, peer: str, flags: str, name: str) -> str:
    """Shell: configure vde0, ping the peer until it answers, say so, wait for the end."""
    return (f"ip addr add {addr}/24 dev vde0 && ip link set vde0 up && "
            f"ping -c 1 -w 15 {peer} && touch {flags}/{name}-ok && "
            f"while [ ! -e {flags}/done ]; do sleep 0.05; done")


@pytest.mark.root
def test_threadnet_ns_and_vdens_ping_each_other_across_one_switch(ns_user, lan, flags):
    sw, mgmt = lan
    ours = ns_user.popen(ns_user.tn(f"vde://{sw}", "--", "sh", "-c",
                                    _meet("10.77.0.1", "10.77.0.2", flags, "threadnet")))
    theirs = ns_user.popen(["vdens", f"vde://{sw}", "sh", "-c",
                            _meet("10.77.0.2", "10.77.0.1", flags, "vdens")])

    def both_pinged() -> bool:
        for p in (ours, theirs):
            if p.poll() is not None:
                raise AssertionError(f"{p.args} ended ({p.returncode}): {p.stdout.read()}"
                                     f"{p.stderr.read()}")
        return all(os.path.exists(f"{flags}/{n}-ok") for n in ("threadnet", "vdens"))

    try:
        wait_for(both_pinged, 30, what="the two namespaces to ping each other")
        # both taps are ports of the one switch, each with its program's description
        with Console(mgmt) as c:
            endpoints = [e for p in c.ports().values() for e in p["endpoints"]]
        assert any(e.startswith("threadnet ns ") for e in endpoints), endpoints
        assert any(e.startswith("vdens") for e in endpoints), endpoints
    finally:
        open(f"{flags}/done", "w").close()
    out, err = ours.communicate(timeout=20)
    assert ours.returncode == 0, err
    assert "1 received" in out
    out, _ = theirs.communicate(timeout=20)
    assert "1 received" in out


def _inside(runner: Runner, argv: list[str]) -> dict:
    """What a namespace looks like from inside: interface names and states, uid, the
    ambient capabilities."""
    r = runner.run(argv)
    assert r.returncode == 0, r.stderr
    links, status = r.stdout.split("\n--\n")
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    return {"links": {li["ifname"]: li for li in json.loads(links)},
            "uid": fields["Uid"].split()[0], "CapAmb": fields["CapAmb"]}


SHOW = "ip -j link; echo --; cat /proc/self/status"


@pytest.mark.root
def test_several_vnls_give_several_interfaces_as_vdens_m(ns_user, fg_switch):
    sw1, _, _ = fg_switch("debian", "-m", "0777")
    sw2, _, _ = fg_switch("debian", "-m", "0777")
    ours = _inside(ns_user, ns_user.tn(sw1, f"vde://{sw2}", "--", "sh", "-c", SHOW))
    multi = _inside(ns_user, ns_user.tn("-m", "-i", "eth", sw1, sw2, "--", "sh", "-c", SHOW))
    theirs = _inside(ns_user, ["vdens", "-m", sw1, sw2, "--", "sh", "-c", SHOW])
    assert sorted(ours["links"]) == sorted(theirs["links"]) == ["lo", "vde0", "vde1"]
    assert sorted(multi["links"]) == ["eth0", "eth1", "lo"]
    for name in ("vde0", "vde1"):
        assert ours["links"][name]["link_type"] == "ether"
        assert "UP" not in ours["links"][name]["flags"]  # left down, as vdens leaves them
    assert "UP" in ours["links"]["lo"]["flags"]
    # the same user inside, with the same capabilities to configure the network
    assert ours["uid"] == theirs["uid"] == str(ns_user.user["uid"] if ns_user.user else 0)
    assert ours["CapAmb"] == theirs["CapAmb"]


@pytest.mark.root
def test_exit_status_passes_through(ns_user, lan, flags):
    sw, _ = lan
    assert ns_user.run(ns_user.tn(sw, "sh", "-c", "exit 7")).returncode == 7
    assert ns_user.run(ns_user.tn(sw, "sh", "-c", "kill -TERM $$")).returncode == 128 + 15
    r = ns_user.run(ns_user.tn(sw, "--", "no-such-program-here"))
    assert r.returncode == 127 and "no-such-program-here" in r.stderr
    # SIGTERM to threadnet ns reaches the command, whose status comes back
    p = ns_user.popen(ns_user.tn(sw, "sh", "-c", f"touch {flags}/up; exec sleep 30"))
    wait_for(lambda: os.path.exists(f"{flags}/up"), 20, what="the command to start")
    os.kill(p.pid, signal.SIGTERM)
    assert p.wait(timeout=10) == 128 + 15


@pytest.mark.root
def test_shell_when_no_command_and_resolver_inside(ns_user, lan):
    sw, _ = lan
    r = ns_user.run(ns_user.tn("-R", "192.0.2.53,2001:db8::53", sw), env={"SHELL": "/bin/sh"},
                    input="ip -br link show vde0; cat /etc/resolv.conf; exit 4\n")
    assert r.returncode == 4, r.stderr
    assert r.stdout.startswith("vde0 ")
    assert "nameserver 192.0.2.53\nnameserver 2001:db8::53\n" in r.stdout
    with open("/etc/resolv.conf") as f:
        assert "192.0.2.53" not in f.read()  # only the namespace sees it


def _cmdline_has(word: str) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if word.encode() in f.read():
                        pids.append(int(entry))
            except OSError:
                pass
    return pids


@pytest.mark.root
def test_pump_ends_when_the_command_ends(ns_user, lan):
    sw, mgmt = lan
    tag = f"tn-ns-end-{os.getpid()}"
    p = ns_user.popen(ns_user.tn(sw, "sh", "-c", "echo $$; sleep 1", tag))
    pid = int(p.stdout.readline())
    with Console(mgmt) as c:
        wait_for(lambda: any(e.startswith("threadnet ns ") and f"pid={p.pid}" in e
                             for port in c.ports().values() for e in port["endpoints"]),
                 10, what="threadnet ns's port on the switch")
    start = time.monotonic()
    assert p.wait(timeout=15) == 0, p.stderr.read()
    assert time.monotonic() - start < 5
    assert not os.path.exists(f"/proc/{pid}") and not os.path.exists(f"/proc/{p.pid}")
    assert _cmdline_has(tag) == []
    with Console(mgmt) as c:  # the link went with the pump
        wait_for(lambda: not any(f"pid={p.pid}" in e for port in c.ports().values()
                                 for e in port["endpoints"]), 5, what="the port to be freed")


@pytest.mark.root
def test_sysadm_and_no_network_as_vdens(ns_user):
    show = "ip -j link; echo --; cat /proc/self/status"
    ours = _inside(ns_user, ns_user.tn("-s", "no", "sh", "-c", show))
    theirs = _inside(ns_user, ["vdens", "-s", "no", "sh", "-c", show])
    assert list(ours["links"]) == list(theirs["links"]) == ["lo"]
    assert ours["CapAmb"] == theirs["CapAmb"]
    assert int(ours["CapAmb"], 16) & (1 << nsview.CAP_SYS_ADMIN)


@pytest.mark.root
def test_a_link_that_ends_is_reported_and_the_command_goes_on(ns_user, fg_switch, flags):
    sw, _, sw_pid = fg_switch("debian", "-m", "0777")
    p = ns_user.popen(ns_user.tn(sw, "sh", "-c", f"touch {flags}/up; "
                                 f"while [ ! -e {flags}/go ]; do sleep 0.05; done; exit 3"))
    wait_for(lambda: os.path.exists(f"{flags}/up"), 20, what="the command to start")
    os.kill(sw_pid, signal.SIGTERM)  # the switch goes away under the running command
    time.sleep(0.5)
    assert p.poll() is None
    open(f"{flags}/go", "w").close()
    assert p.wait(timeout=10) == 3
    assert "vde0 is cut off" in p.stderr.read()
