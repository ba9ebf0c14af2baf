"""The seed's hard problems as working examples (docs/scenarios.md, examples/scenarios/).

Each scenario of docs/scenarios.md has a script in examples/scenarios/ (the second has
two), and a test here runs each script as a user would (as root, for the namespaces that stand in for other
machines) and checks what it prints. The programs in them are real ones: curl, busybox
httpd and wget, iperf3, ssh, sshd, vde_plug; the servers are the kernel's, in namespaces.

A script cleans up after itself (a trap ends what it started by PID and deletes its
namespaces); the fixture here does it again should the script itself be killed.
"""

from __future__ import annotations

import grp
import itertools
import os
import pwd
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from threadnet.views import kernel

from conftest import SRC, kill_pid, need_root, need_tool

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "examples" / "scenarios"
DOC = ROOT / "docs" / "scenarios.md"
SECOND_USER = "tnuser2"
_count = itertools.count()

#: the scenarios run programs under the seccomp supervisor
supervised = pytest.mark.skipif(kernel.supported() is not None, reason=str(kernel.supported()))


@pytest.fixture(scope="module")
def second_user(unpriv) -> dict:
    """Another unprivileged user, made as conftest makes ``tnuser``; it shares tnuser's
    readable copy of the source tree."""
    try:
        pw = pwd.getpwnam(SECOND_USER)
    except KeyError:
        subprocess.run(["useradd", "--no-create-home", "--shell", "/bin/sh", SECOND_USER],
                       check=True)
        pw = pwd.getpwnam(SECOND_USER)
    return {**unpriv, "user": pw.pw_name, "uid": pw.pw_uid, "gid": pw.pw_gid}


class Scenario:
    """Runs one example script with its own work directory and namespace prefix."""

    def __init__(self, workdir: str) -> None:
        self.workdir = workdir
        self.prefix = f"tnsc{os.getpid()}x{next(_count)}"
        self.proc: subprocess.Popen | None = None

    def run(self, script: str, *args: str, python: str = sys.executable,
            user_src: str = "", timeout: float = 60, attempt: str = "") -> list[str]:
        """The script's output lines; ``attempt`` names a fresh subdirectory to work in."""
        need_tool("busybox", "curl", "vde_switch", "vde_plug2tap", "setpriv")
        workdir = os.path.join(self.workdir, attempt) if attempt else self.workdir
        os.makedirs(workdir, exist_ok=True)
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "HOME": "/root",
               "PYTHONPATH": SRC, "THREADNET": f"{python} -m threadnet",
               "TN_PYTHONPATH": user_src, "TN_WORKDIR": workdir,
               "TN_PREFIX": self.prefix}
        self.proc = subprocess.Popen(["bash", str(SCRIPTS / script), *args], env=env,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, cwd="/",
                                     start_new_session=True)
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError(f"{script} took more than {timeout} s") from None
        assert self.proc.returncode == 0, f"{script} failed ({self.proc.returncode}):\n{out}{err}"
        return out.splitlines()

    def stop(self) -> None:
        """SIGTERM the script's group (its trap cleans up), then SIGKILL what is left."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.communicate()
        except ProcessLookupError:
            pass

    def leftovers(self) -> list[str]:
        r = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
        return [line.split()[0] for line in r.stdout.splitlines()
                if line.startswith(self.prefix + "-")]

    def cleanup(self) -> None:
        self.stop()
        for name in self.leftovers():
            r = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True)
            for pid in r.stdout.split():
                kill_pid(int(pid), timeout=2)
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        for pidfile in Path(self.workdir).rglob("*.pid"):
            try:
                pid = int(pidfile.read_text().strip())
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    ours = self.workdir.encode() in f.read()  # not a PID reused since
            except (OSError, ValueError):
                continue
            if ours:
                kill_pid(pid, timeout=2)


@pytest.fixture
def scenario(sockdir) -> Iterator[Scenario]:
    need_root("namespaces, taps and other users")
    need_tool("ip")
    s = Scenario(sockdir)
    try:
        yield s
        assert s.leftovers() == [], "the script left namespaces behind"
        # every daemon it started was ended (they remove their pidfiles on SIGTERM)
        assert sorted(p.name for p in Path(sockdir).rglob("*.pid")) == []
    finally:
        s.cleanup()


def _numbers(line: str) -> list[float]:
    return [float(x) for x in re.findall(r"\d+(?:\.\d+)?", line)]


# -- 1. one IP per user ----------------------------------------------------------------------------
@pytest.mark.root
@supervised
def test_one_ip_per_user(scenario, unpriv, second_user):
    u1, u2 = unpriv["user"], second_user["user"]
    out = scenario.run("one-ip-per-user.sh", u1, u2, python=unpriv["python"],
                       user_src=unpriv["src"])
    assert out == [
        # each stack is its user's socket, mode 0600: nobody else may connect; the team's
        # is root's, for the members of u1's group
        f"srw------- {u1} {unpriv['group']} {u1}.stack",
        f"srw------- {u2} {grp.getgrgid(second_user['gid']).gr_name} {u2}.stack",
        f"srw-rw---- root {unpriv['group']} team.stack",
        # the kernel's httpd saw one address per user
        f"{u1}'s curl: the server saw 10.40.1.11",
        f"{u2}'s curl: the server saw 10.40.1.12",
        f"{u1}'s curl on the team's stack: the server saw 10.40.1.20",
        f"{u2} on {u1}'s stack: refused (EACCES)",
        f"{u1} on {u2}'s stack: refused (EACCES)",
        f"{u2} on the team's stack: refused (EACCES)",
    ]
    # the stacks ran as their users and removed their sockets when ended
    assert not list(Path(scenario.workdir, "run").glob("*.stack"))


# -- 2. QoS per process ------------------------------------------------------------------------------
@pytest.mark.root
@supervised
@pytest.mark.slow
def test_qos_per_process(scenario):
    need_tool("iperf3")
    rate = 1_000_000

    def rates_ok(out: list[str]) -> bool:
        assert len(out) == 5, out
        assert out[0].startswith("limited curl: ") and out[2].startswith("limited iperf3: ")
        # iperf3's rate is within 10 % of the line's (frames carry 1448 bytes of data in
        # 1514: at most ~96 %); the limited curl's, slow start and all, while the free one
        # takes the CPUs for a moment, within 15 % (~0.93-0.95 here)
        return (0.9 * rate <= _numbers(out[2])[1] <= rate
                and 0.85 * rate <= _numbers(out[0])[0] <= rate)

    out = scenario.run("qos-per-process.sh", str(rate))
    if not rates_ok(out):
        # the emulated line is paced by a process that may wait for a CPU on a loaded
        # machine, and time it loses is not made up: measure once more before failing
        again = scenario.run("qos-per-process.sh", str(rate), attempt="again")
        assert rates_ok(again), (out, again)
        out = again
    limited, free, iperf3, delayed, plain = out
    # the other program, at the same time on the same host, is not held back
    assert free.startswith("free curl: ") and free.endswith("still ran: yes"), free
    assert _numbers(free)[0] > 5 * rate, free
    # 100 ms each way, crossed four times (ARP, SYN / SYN-ACK) before curl is connected
    assert 0.4 <= _numbers(delayed)[0] < 1.5, delayed
    assert _numbers(plain)[0] < 0.2, plain


@pytest.mark.root
@supervised
def test_route_per_process(scenario):
    out = scenario.run("route-per-process.sh")
    # the same command, two stacks with their own gateways: two different sites that share
    # one address, each seeing the program's own address
    assert out == [
        'via router 1 (gw=10.40.2.251): curl got "site 1", wget was seen as 10.40.2.21',
        'via router 2 (gw=10.40.2.252): curl got "site 2", wget was seen as 10.40.2.22',
    ]


# -- 3. several servers on the same port -------------------------------------------------------------
@pytest.mark.root
@supervised
def test_same_port_servers(scenario, unpriv):
    user = unpriv["user"]
    out = scenario.run("same-port-servers.sh", user, python=unpriv["python"], user_src=unpriv["src"])
    assert len(out) == 4, out
    client = r"(10\.40\.3\.1|\[::ffff:10\.40\.3\.1\])"  # busybox httpd listens on [::]
    assert re.fullmatch(rf"http://10\.40\.3\.11/ \(port 80\): site one; it saw the client as "
                        rf"{client}", out[0]), out[0]
    assert re.fullmatch(rf"http://10\.40\.3\.12/ \(port 80\): site two; it saw the client as "
                        rf"{client}", out[1]), out[1]
    for line, site in zip(out[2:], ("one", "two"), strict=True):
        assert line.split() == [user, "busybox", "httpd", "-f", "-p", "80", "-h",
                                f"{scenario.workdir}/{site}"]


# -- 4. a VPN for some processes only ----------------------------------------------------------------
@pytest.mark.root
@supervised
def test_vpn_for_some_processes(scenario):
    need_tool("ssh", "ssh-keygen", "vde_plug", "tshark")
    if not os.access("/usr/sbin/sshd", os.X_OK):
        pytest.skip("openssh-server is not installed (scripts/test installs it)")
    out = scenario.run("vpn-for-some-processes.sh")
    assert out[:2] == [
        "curl on the VPN stack: the remote server saw 192.168.77.5",
        "busybox wget on the VPN stack: the remote LAN's server",
    ]
    assert out[2].startswith("plain curl on this machine: (7) Failed to connect to 192.168.77.1"), \
        out[2]
    # ... while the other processes keep the real network
    assert out[3] == "plain curl on the real network: a site on the real network"
    # tshark on this machine's way out: ssh carried the remote page, never in clear (the
    # real network's page, in clear, shows tshark would have seen it)
    m = re.fullmatch(r"on the wire: (\d+) ssh frames; in clear, the remote page 0 times, "
                     r"the real network's page (\d+) times", out[4])
    assert m and int(m.group(1)) >= 10 and int(m.group(2)) >= 1, out[4]
    assert len(out) == 5, out
    # the cable was ssh: the gateway's sshd let our key in, and vde_plug ran there
    log = Path(scenario.workdir, "sshd.log").read_text()
    assert "Accepted publickey for root" in log, log


# -- the document and the scripts stay in step -------------------------------------------------------
def test_each_scenario_of_the_document_is_a_script_and_a_test():
    text = DOC.read_text()
    sections = re.findall(r"^## (\d)\. (.+)$", text, re.M)
    assert [n for n, _ in sections] == ["1", "2", "3", "4", "5"], sections
    scripts = sorted(p.name for p in SCRIPTS.glob("*.sh") if p.name != "lib.sh")
    named = sorted(set(re.findall(r"examples/scenarios/([\w-]+\.sh)", text)))
    assert named == scripts
    tests = {name for name in globals() if name.startswith("test_")}
    for script in scripts:
        assert f"test_{script[:-3].replace('-', '_')}" in tests, script
        assert os.access(SCRIPTS / script, os.X_OK), script
    assert "migration" in sections[4][1].lower()
