"""incproto: the increment protocol as a Twisted service.

C{IncrementFactory} drops into any Twisted application, C{ConnectionLimit}
limits any factory, and C{incproto.tap} holds the twistd plugin's options and
service wiring.
"""

from incproto._version import __version__
from incproto.limit import ConnectionLimit
from incproto.parser import IncrementParser, extract_payload, increment
from incproto.protocol import IncrementFactory, IncrementProtocol

__all__ = [
    "ConnectionLimit",
    "IncrementFactory",
    "IncrementParser",
    "IncrementProtocol",
    "__version__",
    "extract_payload",
    "increment",
]
