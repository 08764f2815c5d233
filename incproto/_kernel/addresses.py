# -*- test-case-name: tests.unit.test_accesslog -*-
"""Addresses as incproto's log lines, access log and JSON logs write them."""

from __future__ import annotations

from typing import Any


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
