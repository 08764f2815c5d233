"""incproto: the increment protocol as a Twisted service.

C{IncrementFactory} drops into any Twisted application, C{ConnectionLimit}
limits any factory, and C{incproto.tap} holds the twistd plugin's options and
service wiring.

The names below are imported when first used, not with the package: a pool
process imports C{incproto.handlers} and L{incproto._kernel.poolprocess}
only, and must not pay for Twisted's reactor-facing modules to start.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from incproto._version import __version__

if TYPE_CHECKING:
    from incproto.limit import ConnectionLimit
    from incproto.parser import IncrementParser, extract_payload, increment
    from incproto.protocol import IncrementFactory, IncrementProtocol

_WHERE = {
    "ConnectionLimit": "incproto.limit",
    "IncrementFactory": "incproto.protocol",
    "IncrementParser": "incproto.parser",
    "IncrementProtocol": "incproto.protocol",
    "extract_payload": "incproto.parser",
    "increment": "incproto.parser",
}

__all__ = [
    "ConnectionLimit",
    "IncrementFactory",
    "IncrementParser",
    "IncrementProtocol",
    "__version__",
    "extract_payload",
    "increment",
]


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module 'incproto' has no attribute {name!r}")
    value = getattr(importlib.import_module(where), name)
    globals()[name] = value
    return value
