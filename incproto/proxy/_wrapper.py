# -*- test-case-name: tests.unit.test_proxy,tests.integration.test_proxy -*-
"""The PROXY wrapper: L{ProxyFactory} and its L{ProxyProtocol}, which start
the wrapped protocol only once the header named the client, on a
L{ProxiedTransport} that answers the proxied addresses."""

from __future__ import annotations

from typing import Any, Optional

from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IProtocolFactory,
    IReactorTime,
)
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import directlyProvides, providedBy

from incproto._kernel.addresses import describe
from incproto._kernel.closing import CloseDeadline, close_politely
from incproto._kernel.ratelimit import RateLimitedLog
from incproto._kernel.reactors import global_reactor
from incproto._kernel.timers import cancel
from incproto._kernel.wrapping import FactoryWrapper, PassThrough
from incproto.proxy._header import ProxyHeaderError, parse_proxy_header

DEFAULT_HEADER_TIMEOUT = 30.0
# Seconds a refused connection may take to read its FIN and close.
REFUSAL_CLOSE_TIMEOUT = 10.0
REFUSAL_LOG_INTERVAL = 10.0


class ProxiedTransport:
    """
    The real transport, except that C{getPeer} and C{getHost} answer the
    addresses from the PROXY header.  The methods of the data path are the
    real transport's own bound methods, so writing costs nothing extra.
    """

    def __init__(
        self, transport: Any, peer: Optional[IAddress], host: Optional[IAddress]
    ) -> None:
        self._transport = transport
        self._peer = peer or transport.getPeer()
        self._host = host or transport.getHost()
        self.write = transport.write
        self.writeSequence = transport.writeSequence
        directlyProvides(self, *providedBy(transport))

    def getPeer(self) -> IAddress:
        """The client's address, from the PROXY header."""
        return self._peer

    def getHost(self) -> IAddress:
        """The address the client connected to, from the PROXY header."""
        return self._host

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class ProxyProtocol(PassThrough):
    """
    Reads the PROXY header, then starts the wrapped protocol on a
    L{ProxiedTransport} and passes everything through.
    """

    log = Logger()

    def __init__(self, factory: ProxyFactory) -> None:
        super().__init__(factory.wrappedFactory)
        self.factory = factory
        self._buffered = b""
        self._refused = False
        self._headerTimer: Optional[IDelayedCall] = None
        self._closeTimer: Optional[CloseDeadline] = None

    def connectionMade(self) -> None:
        """
        Give the proxy C{headerTimeout} seconds to send the header, unless
        C{maxPending} connections are waiting for theirs already.
        """
        factory = self.factory
        if factory.maxPending is not None and factory.pending >= factory.maxPending:
            self._refuse("too many connections waiting for a PROXY header")
            return
        factory.pending += 1
        self._headerTimer = factory.clock.callLater(
            factory.headerTimeout, self._refuse, "no PROXY header in time"
        )

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        Pass the loss through, if the wrapped protocol started.
        """
        self._headerDone()
        cancel(self._closeTimer)
        super().connectionLost(reason)

    def _headerDone(self) -> None:
        """The header arrived, or never will: no longer pending."""
        if self._headerTimer is not None:
            cancel(self._headerTimer)
            self._headerTimer = None
            self.factory.pending -= 1

    def _refuse(self, why: str) -> None:
        self.factory.refused += 1
        self.factory.refusals.warn(
            "closing {peer}: {why}", peer=describe(self.transport.getPeer()), why=why
        )
        self._headerDone()
        self._close()

    def _close(self) -> None:
        """
        Close without starting the wrapped protocol: FIN first, then discard
        input until the client closes (see L{close_politely}).
        """
        self._refused = True
        self._closeTimer = close_politely(
            self.transport, self.factory.clock, REFUSAL_CLOSE_TIMEOUT
        )

    def dataReceived(self, data: bytes) -> None:
        """
        Before the header is complete, collect it (a few hundred bytes at
        most); then pass data through.
        """
        if self.wrapped is not None:
            self.wrapped.dataReceived(data)
            return
        if self._refused:
            return
        buffered, self._buffered = self._buffered + data, b""
        try:
            parsed = parse_proxy_header(buffered)
        except ProxyHeaderError as e:
            self._refuse(str(e))
            return
        if parsed is None:
            self._buffered = buffered
            return
        self._headerDone()
        transport = ProxiedTransport(self.transport, parsed.source, parsed.destination)
        data = buffered[parsed.length :]
        if not self.startWrapped(transport.getPeer(), transport, data):
            self._close()


class ProxyFactory(FactoryWrapper):
    """
    Wrap C{wrappedFactory} so that its protocols start after a PROXY header
    and see the proxied addresses.

    @ivar pending: connections waiting for their PROXY header now.
    @ivar refused: connections closed without a valid header, in total.
    """

    log = Logger()

    def __init__(
        self,
        wrappedFactory: IProtocolFactory,
        clock: Optional[IReactorTime] = None,
        headerTimeout: float = DEFAULT_HEADER_TIMEOUT,
        maxPending: Optional[int] = None,
    ) -> None:
        """
        @param clock: the time source; the global reactor by default.
        @param headerTimeout: seconds a connection may take to send its
            PROXY header before it is closed.
        @param maxPending: how many connections may wait for their header
            at once (beyond it they are closed at once), or C{None} for no
            bound but the header timeout.  A L{ConnectionLimit} inside
            counts connections only once their header has named the client.
        """
        super().__init__(wrappedFactory)
        self.clock = clock if clock is not None else global_reactor()
        self.headerTimeout = headerTimeout
        self.maxPending = maxPending
        self.pending = 0
        self.refused = 0
        self.refusals = RateLimitedLog(
            self.log,
            self.clock,
            REFUSAL_LOG_INTERVAL,
            "{more} closed for their PROXY header in the last {interval}s",
            ("more connection", "more connections"),
        )

    def doStop(self) -> None:
        """Stop the wrapped factory and the log summary."""
        self.refusals.stop()
        super().doStop()

    def buildProtocol(self, addr: IAddress) -> ProxyProtocol:
        """A L{ProxyProtocol} for every connection."""
        return ProxyProtocol(self)

    def logPrefix(self) -> str:
        """The wrapped factory's prefix, marked as behind a PROXY header."""
        return f"{super().logPrefix()} (PROXY)"
