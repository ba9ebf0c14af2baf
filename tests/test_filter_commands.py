"""The stack console's filter/ and ct/ commands (stack/filtercommands.py), one by one on an
in-process stack, then through the table a console serves: errors show where a ruleset
is wrong, and filter/load reads files with the console user's rights, never the
service's."""

from __future__ import annotations

import errno
import functools
import os

import pytest

from threadnet import Stack
from threadnet.link.pair import open_pair
from threadnet.mgmt.commands import Caller, CommandError, table_from_entries
from threadnet.peer import PeerCred, own_credentials
from threadnet.stack import commands as c
from threadnet.stack import filtercommands as fc

from conftest import IS_ROOT

RULES = """table inet filter {
    chain input {
        type filter hook input priority 0; policy drop;
        ct state established,related accept
        tcp dport 22 counter accept
        tcp dport 23 log prefix "telnet: " drop
    }
}
"""
ME = Caller(own_credentials())


@pytest.fixture
def m():
    la, lb = open_pair(1518, "fcmds")
    stack = Stack("eth,ip=10.41.0.1/24", link=la, runner=False, name="alpha")
    managed = c.ManagedStack(stack)
    managed.table = table_from_entries(c.COMMANDS, managed,
                                       wrap=functools.partial(c._under_lock, managed))
    yield managed
    stack.close()
    lb.close()


def run(m, line: str, caller: Caller | None = ME) -> tuple[int, list[str] | None]:
    err, out, _ = m.table.run(line, caller)
    return err, out


def test_every_entry_is_a_module_level_function_called_here():
    source = open(__file__).read()
    for path, _, _, handler, _ in fc.FILTER_COMMANDS:
        if handler is not None:
            assert handler is getattr(fc, handler.__name__), path
            assert f"fc.{handler.__name__}" in source, path
    assert fc.UNLOCKED == c.UNLOCKED
    assert all(entry in c.COMMANDS for entry in fc.FILTER_COMMANDS)


def test_filter_load(m, tmp_path):
    path = tmp_path / "rules.nft"
    path.write_text(RULES)
    assert fc.filter_load(m, str(path), ME) == []
    assert "tcp dport 22 counter packets 0 bytes 0 accept" in m.stack.filter_list()
    assert run(m, f"filter/load {path}") == (0, [])
    path.write_text(RULES.replace("dport 22", "dport twentytwo"))
    err, out = run(m, f"filter/load {path}")
    assert err == errno.EINVAL
    assert out[0].startswith(f"{path}:5:19: unknown port or service 'twentytwo'")
    assert out[-1].strip().startswith("^")
    assert "dport 22 " in m.stack.filter_list()  # the old ruleset stays
    err, out = run(m, f"filter/load {tmp_path}/missing.nft")
    assert err == errno.ENOENT and "missing.nft" in out[0]
    assert run(m, f"filter/load {tmp_path}")[0] == errno.EISDIR
    assert run(m, "filter/load")[0] == errno.EINVAL
    assert run(m, f"filter/load {path}", caller=None)[0] == errno.EACCES  # who asks?


def test_filter_load_acts_with_the_callers_rights(m, sockdir):
    """A file only the service's user may read is refused to another console user."""
    path = os.path.join(sockdir, "secret.nft")  # (in a directory anyone may search)
    with open(path, "w") as f:
        f.write(RULES)
    os.chmod(path, 0o600)
    other = Caller(PeerCred(1, os.geteuid() + 4242, os.getegid() + 4242))
    err, out = run(m, f"filter/load {path}", caller=other)
    # as root: the forked child that took the other uid cannot read it; as a normal
    # user: no acting for anybody else at all
    assert err in (errno.EACCES, errno.EPERM), os.strerror(err)
    assert m.stack.filter_list() == ""
    if IS_ROOT:
        os.chmod(path, 0o644)
        assert run(m, f"filter/load {path}", caller=other) == (0, [])


def test_filter_set(m):
    one_line = RULES.replace("\n", " ").replace("accept ", "accept; ").replace("drop ", "drop; ")
    assert fc.filter_set(m, one_line) == []
    assert run(m, r"filter/set table ip t {\n chain c {\n tcp dport 1 drop\n }\n}") == (0, [])
    assert "tcp dport 1 drop" in m.stack.filter_list()
    err, out = run(m, r"filter/set table ip t {\n chain c {\n tcp dport 1 dorp\n }\n}")
    assert err == errno.EINVAL and out[0].startswith("<console>:3:14: unknown statement")
    assert run(m, "filter/set")[0] == errno.EINVAL


def test_filter_list(m):
    assert fc.filter_list(m, "") == []
    m.stack.filter_set(RULES)
    err, out = run(m, "filter/list")
    assert err == 0 and out[0] == "table inet filter {" and out[-1] == "}"
    assert "\t\ttcp dport 22 counter packets 0 bytes 0 accept" in out


def test_filter_flush(m):
    m.stack.filter_set(RULES)
    assert m.stack.hooks_input
    assert fc.filter_flush(m, "") is None
    assert not m.stack.hooks_input and m.stack.filter_list() == ""
    assert run(m, "filter/flush") == (0, None)


def test_filter_log(m):
    pf = m.stack.packet_filter
    pf.log.extend(f"line {i}" for i in range(5))
    assert fc.filter_log(m, "") == [f"line {i}" for i in range(5)]
    assert run(m, "filter/log 2") == (0, ["line 3", "line 4"])
    assert run(m, "filter/log 0") == (0, [])
    assert run(m, "filter/log x")[0] == errno.EINVAL


def test_ct_list_stats_flush(m):
    from test_conntrack import tcp4

    m.stack.filter_set(RULES)
    table = m.stack.conntrack
    syn = tcp4(bytes([10, 41, 0, 2]), bytes([10, 41, 0, 1]), 5555, 22, 1, 0, 2)
    table.track_packet(4, memoryview(syn), m.stack._api_now(None))
    [line] = fc.ct_list(m, "")
    assert line.startswith("tcp      6 ") and "SYN_SENT" in line and "[UNREPLIED]" in line
    err, out = run(m, "ct/stats")
    assert err == 0 and out[0] == "entries 1 max 65536 tracking on" and "new 1" in out
    assert fc.ct_stats(m, "")[0].startswith("entries 1 ")
    assert fc.ct_flush(m, "") is None and len(table) == 0
    assert run(m, "ct/list") == (0, [])
    assert run(m, "ct/flush") == (0, None)


def test_help_lists_the_filter_commands(m):
    err, out = run(m, "help filter")
    assert err == 0 and any(line.startswith("filter/load") for line in out)
    with pytest.raises(CommandError):
        fc.filter_load(m, "", ME)


def test_nat_stats(m):
    assert fc.nat_stats(m, "") == ["nat off"]
    err, _ = run(m, "filter/set table ip n { chain p { type nat hook postrouting priority "
                    "100; masquerade } }")
    assert err == 0
    err, out = run(m, "nat/stats")
    assert err == 0 and out == ["mappings 0", "translated 0", "no_port 0", "errors 0"]
