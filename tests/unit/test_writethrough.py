"""Tests for incproto._kernel.writethrough without sockets: every transport
that is not a plain TCP one keeps its own write."""

from __future__ import annotations

from twisted.internet.testing import StringTransport

from incproto import IncrementFactory
from incproto._kernel.writethrough import writer


def test_fake_transport_uses_its_own_write() -> None:
    transport = StringTransport()
    assert writer(transport) == transport.write
    protocol = IncrementFactory(logConnections=False).buildProtocol(None)
    assert protocol is not None
    protocol.makeConnection(transport)
    protocol.dataReceived(b"^abc$")
    assert transport.value() == b"*bcd"


def test_only_tcp_connections() -> None:
    """UNIX sockets (which can carry descriptors) and anything whose write is
    not a TCP transport's own keep their write."""
    from twisted.internet import unix

    class Wrapper:
        def write(self, data: bytes) -> None:
            pass

    wrapper = Wrapper()
    assert writer(wrapper) == wrapper.write
    server = unix.Server.__new__(unix.Server)  # no socket: only its class counts
    assert writer(server) == server.write
