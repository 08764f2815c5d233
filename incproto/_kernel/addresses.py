# -*- test-case-name: tests.unit.test_accesslog -*-
"""Addresses as incproto's log lines, access log and JSON logs write them."""

from __future__ import annotations

from typing import Any

from twisted.internet import tcp


def describe(address: Any) -> str:
    """
    An address as log lines and JSON logs want it: C{host:port},
    C{[v6host]:port}, or a UNIX socket's path.
    """
    host = getattr(address, "host", None)
    if host is not None:
        return f"[{host}]:{address.port}" if ":" in host else f"{host}:{address.port}"
    name = getattr(address, "name", None)
    if name is not None:
        return name.decode(errors="replace") if isinstance(name, bytes) else str(name)
    return str(address)


def describe_peer(transport: Any) -> str:
    """
    C{describe(transport.getPeer())}, without building the address object
    where the transport is the reactor's own TCP server transport, or a
    subclass that keeps its C{getPeer} (incproto's C{LeanServer}), which
    builds it from C{client}, the address C{accept} returned: a
    connection's close then costs one formatted string, not an attrs class
    with its validators.
    """
    if (
        isinstance(transport, tcp.Server)
        and type(transport).getPeer is tcp.Server.getPeer
    ):
        client: Any = transport.client
        host: str = client[0]
        port: int = client[1]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return describe(transport.getPeer())
