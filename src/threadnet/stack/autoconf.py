"""What the configuration words start: the agents (``stack/agents.py``) behind
``dhcp``, ``dhcp6``, ``rd``, ``slaac`` and ``auto*`` (iothconf's clients) and behind
``dhcpd``, ``dhcpd6`` and ``ra`` (threadnet's servers), and applying a parsed
configuration's dynamic part to an interface.

``CLIENTS`` maps a method (``Config.dynamic``: dhcp4, dhcp6, rd; ``slaac`` is router
discovery that also makes addresses) to a factory ``(stack, iface, config) -> Agent``;
``SERVERS`` maps a server's name to ``(stack, iface, options) -> Agent``, where options
are the ``NAME.OPTION=VALUE`` items (``Config.servers``). A factory checks its options
and raises ConfigError naming the bad one. A method without a factory is refused with
DynamicConfigNotImplemented before anything is applied.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from threadnet.stack.config import Config, ConfigError, DynamicConfigNotImplemented

if TYPE_CHECKING:
    from threadnet.stack.agents import Agent
    from threadnet.stack.stack import Interface, Stack

ClientFactory = Callable[["Stack", "Interface", Config], "Agent"]
ServerFactory = Callable[["Stack", "Interface", dict[str, list[str]]], "Agent"]

#: method -> factory; the agent's ``kind`` is the method's name
CLIENTS: dict[str, ClientFactory] = {}
#: server name -> factory; the agent's ``kind`` is the server's name
SERVERS: dict[str, ServerFactory] = {}


def methods(cfg: Config) -> list[str]:
    """The client methods a configuration asks for (``slaac`` is ``rd`` with addresses)."""
    wanted = [m for m in cfg.dynamic if m != "slaac"]
    if cfg.slaac and "rd" not in wanted:
        wanted.append("rd")
    return wanted


def check(cfg: Config) -> None:
    """DynamicConfigNotImplemented if ``cfg`` asks for a method or a server threadnet
    has no agent for."""
    missing = [m for m in methods(cfg) if m not in CLIENTS]
    missing += [s for s in cfg.servers if s not in SERVERS]
    if missing:
        raise DynamicConfigNotImplemented(
            f"{', '.join(missing)}: not implemented yet; use ip= and gw=")


def apply(stack: Stack, iface: Interface, cfg: Config, now: float) -> None:
    """Stop what ``cfg`` undoes (``-dhcp``, ``-dhcpd``...), then start the clients and
    servers it asks for on ``iface``. A client already running there stays; a server
    asked for again restarts with the new options. Call ``check`` first."""
    for kind in sorted(cfg.clean - {"static", "eth"}) + sorted(cfg.servers_off):
        for agent in stack.find_agents(kind, iface.index):
            stack.remove_agent(agent, now)
    for method in methods(cfg):
        running = stack.find_agents(method, iface.index)
        if running:
            if method == "rd" and cfg.slaac:
                running[0].slaac = True  # type: ignore[attr-defined]
            continue
        stack.add_agent(CLIENTS[method](stack, iface, cfg), now)
    for name, options in cfg.servers.items():
        agent = SERVERS[name](stack, iface, options)  # raises before anything stops
        for old in stack.find_agents(name, iface.index):
            stack.remove_agent(old, now)
        stack.add_agent(agent, now)


def option(options: dict[str, list[str]], name: str, server: str,
           known: tuple[str, ...]) -> list[str]:
    """The values of ``server``'s option ``name``; ConfigError for an option not in
    ``known`` (call once with name "" to check them all)."""
    unknown = [o for o in options if o and o not in known]
    if unknown:
        raise ConfigError(f"unknown option {server}.{unknown[0]} (known: "
                          f"{', '.join(f'{server}.{k}' for k in known)})")
    return options.get(name, [])


def _rd(stack: Stack, iface: Interface, cfg: Config) -> Agent:
    from threadnet.stack.rdisc import RouterDiscovery

    return RouterDiscovery.from_config(stack, iface, cfg)


CLIENTS["rd"] = _rd


def _ra(stack: Stack, iface: Interface, options: dict[str, list[str]]) -> Agent:
    from threadnet.stack.raserver import RaServer

    return RaServer.from_options(stack, iface, options)


SERVERS["ra"] = _ra


def _dhcp6(stack: Stack, iface: Interface, cfg: Config) -> Agent:
    from threadnet.stack.dhcp6client import Dhcp6Client

    return Dhcp6Client(iface.index, iface.mac)


CLIENTS["dhcp6"] = _dhcp6


def _dhcpd6(stack: Stack, iface: Interface, options: dict[str, list[str]]) -> Agent:
    from threadnet.stack.dhcp6server import server_from_options

    return server_from_options(stack, iface, options)


SERVERS["dhcpd6"] = _dhcpd6


def _dhcp4_client(stack: Stack, iface: Interface, cfg: Config) -> Agent:
    from threadnet.stack.dhcp4client import from_config

    return from_config(stack, iface, cfg)


def _dhcp4_server(stack: Stack, iface: Interface, options: dict[str, list[str]]) -> Agent:
    from threadnet.stack.dhcp4server import from_options

    return from_options(stack, iface, options)


CLIENTS["dhcp4"] = _dhcp4_client
SERVERS["dhcpd"] = _dhcp4_server
