"""Fake transports for tests that run without a reactor."""

from __future__ import annotations

from typing import Optional, Tuple

from twisted.internet.testing import StringTransport

from incproto import IncrementFactory, IncrementProtocol


class HalfCloseableTransport(StringTransport):
    """
    A StringTransport that can shut down its sending side, as TCP can.

    @ivar write_closed: whether C{loseWriteConnection} was called.
    """

    write_closed = False

    def loseWriteConnection(self) -> None:
        self.write_closed = True


def connect_to(
    factory: IncrementFactory, transport: Optional[StringTransport] = None
) -> Tuple[IncrementProtocol, StringTransport]:
    """Connect a protocol of C{factory} to C{transport} (a half-closeable
    StringTransport by default)."""
    protocol = factory.buildProtocol(None)
    assert isinstance(protocol, IncrementProtocol)
    transport = transport or HalfCloseableTransport()
    protocol.makeConnection(transport)
    return protocol, transport


class SocketLikeTransport(HalfCloseableTransport):
    """
    A half-closeable StringTransport with the write buffer attributes of a
    Twisted socket transport, so that L{incproto.sockets.unacknowledged}
    reads C{len(dataBuffer)} as the bytes the client has not acknowledged
    (set it to play a client that reads slowly, or not at all).
    """

    dataBuffer = b""
    offset = 0
    _tempDataLen = 0

    def fileno(self) -> int:
        raise OSError("no socket")
