"""A stack configured by DHCP is of use to a program only once its lease is bound:
``threadnet.Stack.wait_configured`` and ``threadnet run/stack --config-wait`` wait for it
(issue 11's acceptance 5 needs ``threadnet run --config dhcp`` to fetch at once)."""

from __future__ import annotations

import subprocess
import sys

import threadnet

from conftest import threadnet_cmd, threadnet_env


def test_wait_configured_returns_once_the_lease_is_bound(threadnet_switch):
    d, _, _ = threadnet_switch()
    server = threadnet.Stack("eth,ip=10.31.0.1/24,dhcpd=10.31.0.50-10.31.0.59",
                             link=f"vde://{d}")
    client = threadnet.Stack("eth,dhcp", link=f"vde://{d}")
    try:
        assert client.wait_configured(60)
        assert any(a.startswith("10.31.0.5") for a in client.addresses())
    finally:
        client.close()
        server.close()


def test_wait_configured_gives_up_without_a_server(threadnet_switch):
    d, _, _ = threadnet_switch()
    client = threadnet.Stack("eth,dhcp", link=f"vde://{d}")
    try:
        assert not client.wait_configured(0.5)
        assert not any(a.startswith("10.") for a in client.addresses())
    finally:
        client.close()


def test_run_with_dhcp_starts_the_program_after_the_lease(threadnet_switch):
    d, _, _ = threadnet_switch()
    server = threadnet.Stack("eth,ip=10.32.0.1/24,dhcpd=10.32.0.50-10.32.0.59",
                             link=f"vde://{d}")
    srv = server.socket()
    try:
        srv.bind(("10.32.0.1", 8000))
        srv.listen()
        code = ("import socket; s = socket.create_connection(('10.32.0.1', 8000), timeout=10);"
                " print(s.getsockname()[0])")
        proc = subprocess.Popen(threadnet_cmd("run", "--link", f"vde://{d}", "--config",
                                              "eth,dhcp", "--", sys.executable, "-c", code),
                                env=threadnet_env(), stdout=subprocess.PIPE, text=True)
        conn, _ = srv.accept()
        conn.close()
        out, _ = proc.communicate(timeout=90)
        assert proc.returncode == 0 and out.strip().startswith("10.32.0.5")
    finally:
        srv.close()
        server.close()


def test_run_warns_when_the_configuration_does_not_come(threadnet_switch):
    d, _, _ = threadnet_switch()
    proc = subprocess.run(threadnet_cmd("run", "--link", f"vde://{d}", "--config", "eth,dhcp",
                                        "--config-wait", "0.5", "--", sys.executable, "-c",
                                        "print('ran')"),
                          env=threadnet_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "ran"
    assert "warning: no answer to dhcp4 after 0.5 s" in proc.stderr
