# -*- test-case-name: tests.test_protocol -*-
"""The increment protocol on a Twisted transport: greeting, flow control, close.

L{IncrementProtocol} is thin glue between a transport and
L{incproto.parser.IncrementParser}.  It is honest about flow control (it
registers as a streaming producer, so a client that does not read its
replies stops being read from) and about half-close (a client that shuts
down its sending side still gets every byte it is owed).
"""

from __future__ import annotations

from twisted.internet.interfaces import IHalfCloseableProtocol, IPushProducer
from twisted.internet.protocol import Factory, Protocol
from zope.interface import implementer

from incproto.parser import IncrementParser

GREETING = b"*"


@implementer(IHalfCloseableProtocol, IPushProducer)
class IncrementProtocol(Protocol):
    """
    Serve one connection of the increment protocol.

    The protocol is its own transport's producer: when the transport's write
    buffer fills because the client is not reading, the transport pauses
    this protocol, which stops reading from the client; when the buffer
    drains, reading resumes.  Memory per connection is therefore bounded by
    the transport's buffer plus one read, however much the client sends.

    @ivar parser: the connection's L{IncrementParser}.
    @ivar bytes_received: how many bytes the client has sent.
    @ivar bytes_sent: how many reply bytes (greeting included) were written.
    """

    def __init__(self) -> None:
        self.parser = IncrementParser()
        self.bytes_received = 0
        self.bytes_sent = 0

    def connectionMade(self) -> None:
        """
        Register as the transport's producer and send the greeting.
        """
        self.transport.registerProducer(self, True)
        self._write(GREETING)

    def dataReceived(self, data: bytes) -> None:
        """
        Answer the bytes that arrived; replies are owed as soon as read.
        """
        self.bytes_received += len(data)
        reply = self.parser.feed(data)
        if reply:
            self._write(reply)

    def readConnectionLost(self) -> None:
        """
        The client shut down its sending side: deliver what is owed, close.
        """
        self.finish()

    def writeConnectionLost(self) -> None:
        """
        Our sending side was shut down; nothing to do (we never do that
        before closing).
        """

    def finish(self) -> None:
        """
        Close the connection after every byte already written is delivered.

        This is the one close path.  The producer is unregistered first:
        Twisted's C{loseConnection()} waits for the write buffer to drain,
        and while a paused producer is registered a drained buffer resumes
        the producer instead of completing the close.
        """
        transport = self.transport
        if transport is None:
            return
        transport.unregisterProducer()
        transport.loseConnection()

    # IPushProducer: the transport calls these as its write buffer fills and
    # drains; they start and stop reading from the client.

    def pauseProducing(self) -> None:
        """
        The client is not reading its replies: stop reading its requests.
        """
        self.transport.pauseProducing()

    def resumeProducing(self) -> None:
        """
        The client caught up with its replies: read its requests again.
        """
        self.transport.resumeProducing()

    def stopProducing(self) -> None:
        """
        The transport is going away; there is nothing of ours to stop.
        """

    def _write(self, data: bytes) -> None:
        self.bytes_sent += len(data)
        self.transport.write(data)


class IncrementFactory(Factory):
    """
    Build L{IncrementProtocol}s.  Drop it into any Twisted application:
    C{endpoint.listen(IncrementFactory())}.
    """

    protocol = IncrementProtocol
