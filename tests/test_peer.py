"""threadnet.peer: SO_PEERCRED, opening files with a peer's rights, connecting only to a
peer's own sockets (the checks behind docs/security.md)."""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path

import pytest

from threadnet.peer import (
    PeerCred,
    connect_to_socket_of,
    open_as,
    own_credentials,
    peer_credentials,
)

from conftest import IS_ROOT, need_root

NOBODY = PeerCred(0, 65534, 65534)


def test_peer_credentials_of_a_socketpair():
    a, b = socket.socketpair()
    with a, b:
        cred = peer_credentials(a)
    assert cred == (os.getpid(), os.geteuid(), os.getegid())
    assert own_credentials().uid == os.geteuid()


def test_open_as_self_never_blocks_on_a_fifo(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    fd = open_as(own_credentials(), str(fifo), os.O_RDONLY)  # no writer: would block
    try:
        assert os.get_blocking(fd)
    finally:
        os.close(fd)


def test_open_as_another_user_is_refused_without_root(tmp_path):
    if IS_ROOT:
        pytest.skip("as root, open_as takes the peer's rights instead (tested below)")
    with pytest.raises(PermissionError, match="only the service's owner"):
        open_as(PeerCred(0, os.geteuid() + 1, 0), str(tmp_path / "x"), os.O_WRONLY | os.O_CREAT)


def test_open_as_takes_the_peers_rights(sockdir):
    need_root("taking another user's rights")
    tmp_path = Path(sockdir)  # under /tmp, which any user may traverse (pytest's tmp is 0700)
    secret = tmp_path / "secret"
    secret.write_bytes(b"root's")
    secret.chmod(0o600)
    tmp_path.chmod(0o777)
    with pytest.raises(PermissionError):
        open_as(NOBODY, str(secret), os.O_WRONLY | os.O_TRUNC)
    assert secret.read_bytes() == b"root's"
    fd = open_as(NOBODY, str(tmp_path / "theirs"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        assert os.fstat(fd).st_uid == 65534
    finally:
        os.close(fd)
    with pytest.raises(FileNotFoundError):
        open_as(NOBODY, str(tmp_path / "missing"), os.O_RDONLY)


def test_connect_only_to_the_peers_own_socket(tmp_path):
    path = str(tmp_path / "dgram")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(path)
    link = str(tmp_path / "link")
    os.symlink(path, link)
    with server:
        me = own_credentials()
        with connect_to_socket_of(me, path) as c:
            c.send(b"hello")
            assert server.recv(16) == b"hello"
        with pytest.raises(PermissionError, match="symbolic link"):
            connect_to_socket_of(me, link)
        other = PeerCred(0, os.geteuid() + 1, 0)
        if me.uid != 0:
            with pytest.raises(PermissionError, match="belongs to uid"):
                connect_to_socket_of(other, path)
        else:
            with pytest.raises(PermissionError, match="belongs to uid"):
                connect_to_socket_of(NOBODY, path)
    regular = tmp_path / "file"
    regular.write_text("")
    with pytest.raises(OSError) as exc:
        connect_to_socket_of(own_credentials(), str(regular))
    assert exc.value.errno == errno.ENOTSOCK
