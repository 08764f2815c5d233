# -*- test-case-name: tests.test_protocol -*-
"""The increment protocol on a Twisted transport: greeting, flow control, close.

L{IncrementProtocol} is thin glue between a transport and
L{incproto.parser.IncrementParser}.  It is honest about flow control (it
registers as a streaming producer, so a client that does not read its
replies stops being read from) and about half-close (a client that shuts
down its sending side still gets every byte it is owed).
"""

from __future__ import annotations

from typing import Any, Optional, cast

from twisted.internet.interfaces import (
    IDelayedCall,
    IHalfCloseableProtocol,
    IPushProducer,
    IReactorTime,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from incproto.closing import cancel, close_politely
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

    @ivar factory: the L{IncrementFactory} that built this protocol.
    @ivar parser: the connection's L{IncrementParser}.
    @ivar bytesReceived: how many bytes the client has sent.
    @ivar bytesSent: how many reply bytes (greeting included) were written.
    """

    factory: IncrementFactory
    # Twisted types this as ITransport; it is really a TCP, UNIX or TLS
    # transport that is also a consumer and a push producer.
    transport: Any

    def __init__(self) -> None:
        self.parser = IncrementParser()
        self.bytesReceived = 0
        self.bytesSent = 0
        self._producing = False
        self._closing = False
        self._input_ended = False
        self._linger: Optional[IDelayedCall] = None

    def connectionMade(self) -> None:
        """
        Send the greeting.
        """
        self._write(GREETING)

    def dataReceived(self, data: bytes) -> None:
        """
        Answer the bytes that arrived; replies are owed as soon as read.
        Once closing, input is read only to be discarded.

        The first input registers the protocol as its transport's producer.
        Not earlier: under TLS a write before the handshake completes pauses
        the registered producer, and a producer that stops reading then never
        lets the handshake finish.  Input arrives only after the handshake,
        and before it the greeting is all there is to send.
        """
        if not self._producing:
            self._producing = True
            self.transport.registerProducer(self, True)
        self.bytesReceived += len(data)
        if self._closing:
            return
        reply = self.parser.feed(data)
        if reply:
            self._write(reply)

    def readConnectionLost(self) -> None:
        """
        The client shut down its sending side: deliver what is owed, close.
        """
        self._input_ended = True
        if self._closing:
            self.transport.loseConnection()
        else:
            self.finish()

    def writeConnectionLost(self) -> None:
        """
        Our sending side was shut down by L{finish}; the client's end of
        input (or the linger timeout) completes the close.
        """

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        The connection is gone, cleanly or not (a reset costs nothing but this
        connection).
        """
        cancel(self._linger)

    def finish(self) -> None:
        """
        Close the connection after every byte already written is delivered,
        ending with a FIN, not a reset.  This is the one close path.

        The producer is unregistered first: Twisted's C{loseConnection()}
        waits for the write buffer to drain, and while a paused producer is
        registered a drained buffer resumes the producer instead of closing.
        If the client is still sending, see L{incproto.closing}: the sending
        side is shut down and input discarded until the client closes, for
        at most C{factory.closeTimeout} seconds.
        """
        if self._closing or self.transport is None:
            return
        self._closing = True
        if self._producing:
            self.transport.unregisterProducer()
        if self._input_ended:
            self.transport.loseConnection()
        else:
            self._linger = close_politely(
                self.transport, self.factory.clock, self.factory.closeTimeout
            )

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
        self.bytesSent += len(data)
        self.transport.write(data)


class IncrementFactory(Factory):
    """
    Build L{IncrementProtocol}s.  Drop it into any Twisted application:
    C{endpoint.listen(IncrementFactory())}.

    @ivar clock: the time source for close timeouts.
    @ivar closeTimeout: how long, in seconds, a connection being closed
        waits for the client to finish sending before it is aborted.
    """

    # Twisted types Factory.protocol through a generic that older Twisted
    # releases (still used on PyPy 3.9) cannot be subscripted with.
    protocol = IncrementProtocol  # type: ignore[assignment]

    def __init__(
        self, clock: Optional[IReactorTime] = None, closeTimeout: float = 30.0
    ) -> None:
        if clock is None:
            from twisted.internet import reactor

            clock = cast(IReactorTime, reactor)
        self.clock = clock
        self.closeTimeout = closeTimeout
