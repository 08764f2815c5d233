# -*- test-case-name: tests.unit.test_wrapping,tests.unit.test_limit -*-
"""The transparent pass-through that incproto's protocol wrappers share.

A wrapper protocol sits between a transport and the protocol it wraps, which
it starts later (after admission, or after a PROXY header).  Once started,
the wrapped protocol must behave exactly as if unwrapped: it gets the
transport itself (so writes, producers, C{getPeer} and C{getHost} are the
transport's own), every inbound event including half-close is forwarded,
and log lines carry the wrapped protocol's prefix.  Twisted's
C{policies.ProtocolWrapper} instead proxies every write and drops
C{IHalfCloseableProtocol}.
"""

from __future__ import annotations

from typing import Any, Optional, cast

from twisted.internet.interfaces import (
    IHalfCloseableProtocol,
    ILoggingContext,
    IProtocol,
    IProtocolFactory,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer


@implementer(IHalfCloseableProtocol)
class PassThrough(Protocol):
    """
    Forwards every event to C{wrapped} once L{startWrapped} has connected
    it; subclasses decide what happens before.

    @ivar wrappedFactory: the factory that builds the wrapped protocol.
    @ivar wrapped: the wrapped protocol, once started.
    """

    wrapped: Optional[IProtocol] = None
    # Twisted types this as ITransport; it is a TCP, UNIX or TLS transport.
    transport: Any

    def __init__(self, wrappedFactory: IProtocolFactory) -> None:
        self.wrappedFactory = wrappedFactory

    def startWrapped(self, addr: Any, transport: Any, data: bytes = b"") -> bool:
        """
        Build the wrapped protocol for C{addr} and connect it to
        C{transport}, then deliver C{data}.

        @return: C{False} if the wrapped factory refused (built C{None}).
        """
        wrapped = self.wrappedFactory.buildProtocol(addr)
        if wrapped is None:
            return False
        self.wrapped = wrapped
        wrapped.makeConnection(transport)
        if data:
            wrapped.dataReceived(data)
        return True

    def logPrefix(self) -> str:
        """
        The wrapped protocol's log prefix, as if unwrapped; before it starts,
        the name of the protocol class the wrapped factory builds.
        """
        if ILoggingContext.providedBy(self.wrapped):
            return cast(str, cast(Any, self.wrapped).logPrefix())
        protocol = getattr(self.wrappedFactory, "protocol", None)
        return getattr(protocol, "__name__", self.__class__.__name__)

    def dataReceived(self, data: bytes) -> None:
        """
        Forward data to the wrapped protocol, if started.
        """
        if self.wrapped is not None:
            self.wrapped.dataReceived(data)

    def readConnectionLost(self) -> None:
        """
        Forward the client's end of input; a wrapped protocol without
        half-close gets the connection closed, as Twisted would do.
        """
        if IHalfCloseableProtocol.providedBy(self.wrapped):
            cast(Any, self.wrapped).readConnectionLost()
        else:
            self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        """
        Forward to a half-closeable wrapped protocol.
        """
        if IHalfCloseableProtocol.providedBy(self.wrapped):
            cast(Any, self.wrapped).writeConnectionLost()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        Forward the loss to the wrapped protocol, if started.
        """
        wrapped, self.wrapped = self.wrapped, None
        if wrapped is not None:
            wrapped.connectionLost(reason)


@implementer(IProtocolFactory, ILoggingContext)
class FactoryWrapper:
    """
    The factory side of incproto's wrappers: it starts, stops and names
    itself after the factory it wraps; subclasses build the protocols.

    @ivar wrappedFactory: the factory whose protocols are wrapped.
    """

    def __init__(self, wrappedFactory: IProtocolFactory) -> None:
        self.wrappedFactory = wrappedFactory

    def buildProtocol(self, addr: Any) -> Optional[IProtocol]:
        """Subclasses build the wrapping protocol."""
        raise NotImplementedError

    def doStart(self) -> None:
        """Start the wrapped factory."""
        self.wrappedFactory.doStart()

    def doStop(self) -> None:
        """Stop the wrapped factory."""
        self.wrappedFactory.doStop()

    def logPrefix(self) -> str:
        """The wrapped factory's log prefix, or its class name."""
        if ILoggingContext.providedBy(self.wrappedFactory):
            return cast(str, cast(Any, self.wrappedFactory).logPrefix())
        return self.wrappedFactory.__class__.__name__
