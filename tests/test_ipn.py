"""The IPN bus (threadnet.ipn, ipn:// links, threadnet ipn): eight processes under each
policy, lossless and lossy delivery, permissions, dead members, stacks on a bus and a
switch port bridged to one, and bad input."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time

import pytest

from threadnet import Stack
from threadnet.errors import LinkError, URLError
from threadnet.ipn import BusConfig, IpnError, Member, create_bus, remove_bus
from threadnet.ipn.member import BAD, DEAD, DROPPED, FLOODED, RECEIVED, SENT, UNICAST, WAITS
from threadnet.link import open_link

from conftest import run_as, threadnet_cmd, threadnet_env, wait_for

HELPERS = os.path.join(os.path.dirname(__file__), "ipn_helpers.py")


def helper(procs, *args: str, user: dict | None = None) -> subprocess.Popen:
    p = procs.popen([sys.executable, HELPERS, *args], env=threadnet_env(),
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    assert line.startswith("joined "), f"helper {args} did not join: {line!r}"
    return p


def sender_done(*ps: subprocess.Popen) -> None:
    for p in ps:
        p.stdin.write("done\n")
        p.stdin.flush()


def report(p: subprocess.Popen) -> dict:
    line = p.stdout.readline()
    assert line, f"helper {p.args} ended without a report"
    return json.loads(line)


def finish(ps: list[subprocess.Popen]) -> None:
    for p in ps:
        p.stdin.close()
    for p in ps:
        assert p.wait(10) == 0


@pytest.fixture
def bus(sockdir):
    made = []

    def make(**kw) -> str:
        group = kw.pop("group", None)
        path = create_bus(os.path.join(sockdir, f"bus{len(made)}"), BusConfig(**kw), group)
        made.append(path)
        return path

    yield make
    for path in made:
        if os.path.isdir(path):
            remove_bus(path)


# -- eight processes on one bus ----------------------------------------------------
def test_broadcast_eight_processes_every_message_to_every_other_member(bus, procs):
    path = bus(policy="broadcast")
    n, count = 8, 300
    ps = [helper(procs, "member", path, str(i), str(n), str(count)) for i in range(n)]
    reports = [report(p) for p in ps]
    finish(ps)
    for r in reports:
        assert r["complete"], r
        # every other member's messages, all of them, in order; none of its own
        assert sorted(r["got"]) == sorted(str(i) for i in range(n) if i != r["index"])
        for seqs in r["got"].values():
            assert seqs == list(range(count))
        c = r["counters"]
        assert c[SENT] == count and c[RECEIVED] == (n - 1) * count
        assert c[DROPPED] == 0 and c[BAD] == 0 and c[DEAD] == 0


def test_switch_eight_processes_unicast_reaches_only_its_destination(bus, procs):
    path = bus(policy="switch")
    n, count = 8, 200
    ps = [helper(procs, "member", path, str(i), str(n), str(count)) for i in range(n)]
    reports = [report(p) for p in ps]
    finish(ps)
    for r in reports:
        i = r["index"]
        assert r["complete"], r
        assert r["learned"] == n - 1 and r["hellos"] == n - 1
        # after learning: only the frames addressed to it, from its one sender, in order
        assert r["misaddressed"] == 0
        assert r["got"] == {str((i - 1) % n): list(range(count))}
        c = r["counters"]
        assert c[UNICAST] == count and c[FLOODED] == 1  # the hello
        assert c[RECEIVED] == n - 1 + count


# -- lossless and lossy --------------------------------------------------------------
def _send_numbers(member: Member, count: int) -> float:
    """Send ``count`` numbered messages; returns when the last one went (time.time())."""
    for seq in range(count):
        member.send(b"%d" % seq + bytes(30))
    return time.time()


def test_lossless_a_slow_member_holds_the_sender_back_and_nothing_is_lost(bus, procs):
    path = bus(policy="broadcast", lossless=True)
    count, stall = 400, 1.5
    slowp = helper(procs, "slow", path, str(stall), str(count))
    fastp = helper(procs, "slow", path, "0", str(count))
    with Member(path) as sender:
        wait_for(lambda: len(sender.members()) == 2, what="two receivers")
        ended = _send_numbers(sender, count)
        c = list(sender.counters[:8])
    sender_done(slowp, fastp)
    slow_r, fast_r = report(slowp), report(fastp)
    finish([slowp, fastp])
    assert slow_r["seqs"] == list(range(count))  # nothing lost, in order
    assert fast_r["seqs"] == list(range(count))
    # the sender could not finish before the slow member started reading
    assert ended >= slow_r["started"], "the sender was not held back by the slow member"
    assert c[WAITS] >= 1 and c[DROPPED] == 0 and c[SENT] == count


def test_lossy_drops_and_counts_and_never_blocks(bus, procs):
    path = bus(policy="broadcast", lossless=False)
    count, stall = 400, 2.0
    slowp = helper(procs, "slow", path, str(stall), str(count))
    fastp = helper(procs, "slow", path, "0", str(count))
    with Member(path) as sender:
        wait_for(lambda: len(sender.members()) == 2, what="two receivers")
        ended = _send_numbers(sender, count)
        c = list(sender.counters[:8])
    sender_done(slowp, fastp)
    slow_r, fast_r = report(slowp), report(fastp)
    finish([slowp, fastp])
    assert ended < slow_r["started"], "a lossy sender waited for the slow member"
    assert c[WAITS] == 0
    # the slow member's queue held what the kernel queues (11 by default), the rest
    # was dropped; every loss is counted by the sender, exactly
    assert len(slow_r["seqs"]) < count
    lost = (count - len(slow_r["seqs"])) + (count - len(fast_r["seqs"]))
    assert c[DROPPED] == lost
    assert slow_r["seqs"] == sorted(slow_r["seqs"])


def test_a_member_killed_with_sigkill_blocks_nobody(bus, procs):
    path = bus(policy="broadcast", lossless=True)
    victim = helper(procs, "idle", path)
    witness = helper(procs, "slow", path, "0", "200")
    done = threading.Event()
    with Member(path) as sender:
        wait_for(lambda: len(sender.members()) == 2, what="two members")

        def send_all() -> None:
            _send_numbers(sender, 200)
            done.set()

        t = threading.Thread(target=send_all, daemon=True)
        t.start()
        # the victim reads nothing: its queue fills and the sender waits on it
        wait_for(lambda: sender.counters[WAITS] >= 1, what="the sender to wait")
        assert not done.is_set()
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(5)
        assert done.wait(5), "the sender stayed blocked on a dead member"
        t.join(5)
        assert sender.counters[DEAD] == 1
        assert len(sender.members()) == 1
        sender_done(witness)
        witness_r = report(witness)
    finish([witness])
    assert witness_r["seqs"] == list(range(200))
    # the dead member's socket and counters were removed (same user as the sender)
    assert [n for n in os.listdir(path) if n != "bus"] == []


# -- permissions ---------------------------------------------------------------------
JOIN = "import sys; from threadnet.ipn import Member; m = Member(sys.argv[1]); print('joined')"
SEND = """
import select, sys
from threadnet.ipn import Member
m = Member(sys.argv[1])
m.send(b"from unpriv")
assert select.select([m], [], [], 10)[0], "no answer"
print(m.recv()[0].decode())
m.close()
"""


@pytest.mark.root
def test_an_unprivileged_user_without_permission_is_refused(bus, unpriv):
    path = bus(policy="broadcast")  # root's, mode 0660, group root
    r = run_as(unpriv, [unpriv["python"], "-c", JOIN, path], capture_output=True, text=True,
               timeout=30)
    assert r.returncode != 0 and "joined" not in r.stdout
    assert "permission denied" in r.stderr and "IpnError" in r.stderr
    r = run_as(unpriv, [unpriv["python"], "-m", "threadnet", "ipn", "show", path],
               capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "permission denied" in r.stderr
    # nothing of the user's was left in the bus
    assert os.listdir(path) == ["bus"]


@pytest.mark.root
def test_the_bus_group_may_join_and_send(bus, unpriv):
    path = bus(policy="broadcast", group=unpriv["gid"])
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o3770  # sticky, setgid, rwx for the group
    with Member(path) as m:
        child = threading.Thread(target=lambda: result.append(run_as(
            unpriv, [unpriv["python"], "-c", SEND, path], capture_output=True, text=True,
            timeout=30)))
        result: list[subprocess.CompletedProcess] = []
        child.start()
        msg, sender = m.recv()
        assert msg == b"from unpriv" and sender == ""  # (broadcast: connected, unnamed)
        # and back: its socket is another user's, reached through a pinned descriptor
        assert len(m.members()) == 1
        assert [p.addr.startswith("/proc/self/fd/") for p in m._order] == [True]
        m.send(b"from root")
        child.join(30)
        assert result and result[0].returncode == 0, result and result[0].stderr
        assert result[0].stdout.strip() == "from root"


# -- stacks and links ----------------------------------------------------------------
@pytest.mark.parametrize("policy", ["broadcast", "switch"])
def test_a_stack_on_ipn_pings_another_stack_on_the_bus(bus, policy):
    path = bus(policy=policy)
    a = Stack("eth,ip=10.77.0.1/24,ip=fc00:77::1/64", link=f"ipn://{path}")
    b = Stack("eth,ip=10.77.0.2/24,ip=fc00:77::2/64", link=f"ipn://{path}")
    try:
        assert len(a.ping("10.77.0.2", count=3)) == 3
        wait_for(lambda: "fc00:77::2/64" in b.addresses(6), what="DAD")
        assert len(b.ping("fc00:77::1", count=2)) == 2
    finally:
        a.close()
        b.close()
    assert os.listdir(path) == ["bus"]  # both left the bus


def test_a_stack_in_another_process_on_a_switch_bus(bus, procs, sockdir):
    path = bus(policy="switch")
    pidfile = os.path.join(sockdir, "st.pid")
    procs.daemon(threadnet_cmd("stack", os.path.join(sockdir, "st"), "--link", f"ipn://{path}",
                               "--config", "eth,ip=10.78.0.2/24", "-d", "-p", pidfile),
                 pidfile, env=threadnet_env())
    a = Stack("eth,ip=10.78.0.1/24", link=f"ipn://{path}")
    try:
        assert len(a.ping("10.78.0.2", count=3)) == 3
        link = a.links[next(iter(a.links))]
        assert link.member.counters[UNICAST] >= 2  # learned: no more flooding
    finally:
        a.close()


def test_a_switch_port_bridged_to_a_bus(bus, procs, sockdir, vde_switch):
    path = bus(policy="switch")
    sw, _mgmt, _pid = vde_switch()  # Debian's vde_switch
    pidfile = os.path.join(sockdir, "plug.pid")
    procs.daemon(threadnet_cmd("plug", f"vde://{sw}", f"ipn://{path}", "-d", "-p", pidfile),
                 pidfile, env=threadnet_env())
    on_switch = Stack("eth,ip=10.79.0.1/24", link=f"vde://{sw}")
    on_bus = Stack("eth,ip=10.79.0.2/24", link=f"ipn://{path}")
    try:
        assert len(on_switch.ping("10.79.0.2", count=3)) == 3
        assert len(on_bus.ping("10.79.0.1", count=2)) == 2
    finally:
        on_switch.close()
        on_bus.close()


def test_threadnet_ipn_create_show_rm(sockdir):
    path = os.path.join(sockdir, "cli-bus")
    env = threadnet_env()
    r = subprocess.run(threadnet_cmd("ipn", "create", path, "--policy", "switch", "--lossy",
                                     "--queue", "64"), env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    with Member(path) as a, Member(path) as b:
        a.send(b"\xff" * 6 + b"\x02" * 6 + b"\x88\xb5hi")
        b.setblocking(False)
        assert b.recv()[0].endswith(b"hi")
        r = subprocess.run(threadnet_cmd("ipn", "show", "-j", path), env=env,
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        info = json.loads(r.stdout)
        assert (info["policy"], info["delivery"], info["queue"]) == ("switch", "lossy", 64)
        byname = {m["name"]: m for m in info["members"]}
        assert byname[a.name]["sent"] == 1 and byname[a.name]["flooded"] == 1
        assert byname[b.name]["received"] == 1
        assert {m["state"] for m in info["members"]} == {"alive"}
        assert all(m["pid"] == os.getpid() for m in info["members"])
        r = subprocess.run(threadnet_cmd("ipn", "show", path), env=env, capture_output=True,
                           text=True)
        assert "policy switch, lossy, queue 64, mode 0660" in r.stdout and "2 members" in r.stdout
    r = subprocess.run(threadnet_cmd("ipn", "rm", path), env=env, capture_output=True, text=True)
    assert r.returncode == 0 and not os.path.exists(path)


# -- bad input -------------------------------------------------------------------------
@pytest.mark.parametrize("argv, message", [
    (["create", "/tmp/x", "--mode", "0640"], "read and write together"),
    (["create", "/tmp/x", "--mode", "0777"], "only read/write bits"),
    (["create", "/tmp/x", "--queue", "0"], "queue must be"),
    (["create", "/tmp/x", "--policy", "hub"], "invalid choice"),
    (["create", "/tmp/x", "--group", "no-such-group-x"], "unknown group"),
    (["create", "/tmp/" + "x" * 120], "longer than"),
    (["show", "/nonexistent/bus"], "no IPN bus"),
    (["show", "/etc"], "not an IPN bus"),
    (["rm", "/tmp"], "not an IPN bus"),
])
def test_cli_bad_arguments(argv, message):
    r = subprocess.run(threadnet_cmd("ipn", *argv), env=threadnet_env(), capture_output=True,
                       text=True)
    assert r.returncode in (1, 2) and message in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_bus_settings_parse_rejects_malformed_files():
    ok = BusConfig(policy="switch", lossless=False, queue=7, mode=0o600)
    assert BusConfig.parse(ok.format()) == ok
    for bad in (b"", b"\xff\xfe", b"threadnet-ipn 2\n", b"threadnet-ipn 1\npolicy=hub\n",
                b"threadnet-ipn 1\ndelivery=maybe\n", b"threadnet-ipn 1\nqueue=-1\n",
                b"threadnet-ipn 1\nqueue=10\nqueue=11\n", b"threadnet-ipn 1\nnonsense\n",
                b"threadnet-ipn 1\nmode=0777\n", b"threadnet-ipn 1\nextra=1\n"):
        with pytest.raises(IpnError) as info:
            BusConfig.parse(bad)
        assert info.value.errno == errno.EINVAL


def test_bad_bus_paths_are_refused(bus, sockdir):
    with pytest.raises(IpnError, match="bad IPN bus path"):
        Member("")
    with pytest.raises(IpnError, match="bad IPN bus path"):
        Member("/tmp/a\0b")
    # a symbolic link to a bus is not followed
    path = bus()
    link = os.path.join(sockdir, "link-to-bus")
    os.symlink(path, link)
    with pytest.raises(IpnError, match="symbolic link"):
        Member(link)
    # a directory that is not a bus, and one whose settings are a symbolic link
    plain = os.path.join(sockdir, "plain")
    os.mkdir(plain)
    with pytest.raises(IpnError, match="not an IPN bus"):
        Member(plain)
    os.symlink(os.path.join(path, "bus"), os.path.join(plain, "bus"))
    with pytest.raises(IpnError, match="symbolic link"):
        Member(plain)
    # a directory others may write in that is not sticky: members could swap sockets
    os.unlink(os.path.join(plain, "bus"))
    with open(os.path.join(plain, "bus"), "wb") as f:
        f.write(BusConfig().format())
    os.chmod(plain, 0o777)
    with pytest.raises(IpnError, match="not sticky"):
        Member(plain)
    with pytest.raises(IpnError, match="exists"):
        create_bus(path)


def test_bad_messages_are_refused_and_foreign_ones_dropped(bus, sockdir):
    path = bus(policy="switch")
    with Member(path) as a, Member(path) as b:
        for msg, err in ((b"", errno.EINVAL), (b"x" * 65536, errno.EMSGSIZE),
                         (b"short", errno.EINVAL)):
            with pytest.raises(IpnError) as info:
                a.send(msg)
            assert info.value.errno == err
        # datagrams from outside the bus (unbound, or bound elsewhere) are not members'
        b.setblocking(False)
        stranger = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        elsewhere = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        elsewhere.bind(os.path.join(sockdir, "m.fake"))
        try:
            stranger.sendto(b"\xff" * 6 + b"\x02" * 6 + b"\x88\xb5x", f"{path}/{b.name}")
            elsewhere.sendto(b"\xff" * 6 + b"\x02" * 6 + b"\x88\xb5x", f"{path}/{b.name}")
            stranger.sendto(b"", f"{path}/{b.name}")
        finally:
            stranger.close()
            elsewhere.close()
        with pytest.raises(BlockingIOError):
            b.recv()
        assert b.counters[BAD] == 3 and b.counters[RECEIVED] == 0
        assert b.learned() == {}


def test_a_symlink_or_file_in_the_bus_is_not_a_member(bus, sockdir):
    path = bus()
    target = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    target.bind(os.path.join(sockdir, "victim.sock"))
    target.setblocking(False)
    os.symlink(os.path.join(sockdir, "victim.sock"), os.path.join(path, "m.evil"))
    with open(os.path.join(path, "m.file"), "w"):
        pass
    try:
        with Member(path) as a, Member(path) as b:
            assert a.members() == [b.name]
            a.send(b"hello")
            b.setblocking(False)
            assert b.recv()[0] == b"hello"
            with pytest.raises(BlockingIOError):
                target.recv(100)  # nothing went through the symbolic link
    finally:
        target.close()
        os.unlink(os.path.join(path, "m.evil"))
        os.unlink(os.path.join(path, "m.file"))


def test_ipn_urls():
    with pytest.raises(URLError, match="needs the bus's path"):
        open_link("ipn://")
    with pytest.raises(URLError, match="no options"):
        open_link("ipn:///tmp/x[mode=0600]")
    with pytest.raises(LinkError, match="no IPN bus"):
        open_link("ipn:///nonexistent/bus")


def test_a_removed_bus_ends_its_members(bus):
    path = bus()
    with Member(path) as a:
        remove_bus(path)
        with pytest.raises(IpnError, match="was removed"):
            a.send(b"x")


# -- batches (send_many) -----------------------------------------------------------------
def test_send_many_lossless_keeps_order_behind_a_slow_reader(bus):
    path = bus(policy="broadcast", lossless=True)
    with Member(path) as sender, Member(path) as reader:
        got: list[int] = []

        def read() -> None:
            while len(got) < 500:
                got.append(int(reader.recv()[0].rstrip(b"\0")))
                if len(got) % 10 == 0:
                    time.sleep(0.002)

        t = threading.Thread(target=read, daemon=True)
        t.start()
        for first in range(0, 500, 25):
            sender.send_many([b"%d" % i + bytes(20) for i in range(first, first + 25)])
        t.join(10)
        assert got == list(range(500))
        assert sender.counters[WAITS] >= 1 and sender.counters[DROPPED] == 0


def test_send_many_lossy_drops_exactly_what_does_not_fit(bus):
    path = bus(policy="broadcast", lossless=False)
    with Member(path) as sender, Member(path) as reader:
        reader.setblocking(False)
        sender.send_many([b"%d" % i for i in range(40)])
        got = []
        while True:
            try:
                got.append(int(reader.recv()[0]))
            except BlockingIOError:
                break
        assert 0 < len(got) < 40 and got == list(range(len(got)))
        assert sender.counters[DROPPED] == 40 - len(got) and sender.counters[WAITS] == 0


def test_a_link_driven_by_a_loop_never_waits_and_its_backlog_drains_in_order(bus):
    import select

    path = bus(policy="broadcast", lossless=True, queue=100)
    link = open_link(f"ipn://{path}")
    woken = []
    with Member(path) as reader:
        assert link.attach_tx(woken.append)
        t0 = time.monotonic()
        for i in range(60):  # the reader's queue takes 11: the rest waits in the backlog
            link.send(b"%d" % i + bytes(20))
        assert time.monotonic() - t0 < 1.0
        assert woken == [link] and link.member.pending() == 60 - 11
        fd = link.tx_fileno()
        assert not select.select([], [fd], [], 0)[1]  # no room: the loop waits
        got = []
        reader.setblocking(False)
        while len(got) < 60:
            try:
                got.append(int(reader.recv()[0].rstrip(b"\0")))
                continue
            except BlockingIOError:
                pass
            assert select.select([], [fd], [], 2)[1], "the backlog's descriptor never woke"
            link.on_writable()
        assert got == list(range(60))
        assert link.member.pending() == 0 and not link.on_writable()
        for _ in range(200):  # beyond the bus's queue (100), dropped and counted
            link.send(b"x")
        assert link.drops == 200 - 11 - 100
    link.close()
