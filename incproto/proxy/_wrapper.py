# -*- test-case-name: tests.unit.test_proxy,tests.integration.test_proxy -*-
"""The PROXY wrapper: L{ProxyFactory} and its L{ProxyProtocol}, which start
the wrapped protocol only once the header named the client, on a
L{ProxiedTransport} that answers the proxied addresses."""

from __future__ import annotations

from typing import Any, Optional

from twisted.internet.interfaces import (
    IAddress,
    IProtocolFactory,
    IReactorTime,
)
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import directlyProvides, providedBy

from incproto._kernel.addresses import describe
from incproto._kernel.closing import CloseDeadline, close_politely
from incproto._kernel.preambles import DEFAULT_TIMEOUT, Preamble, Preambles
from incproto._kernel.ratelimit import RateLimitedLog
from incproto._kernel.timers import cancel
from incproto._kernel.wrapping import FactoryWrapper, PassThrough
from incproto.proxy._header import ProxyHeaderError, parse_proxy_header
from incproto.proxy._trust import DEFAULT, TrustedSources

DEFAULT_HEADER_TIMEOUT = DEFAULT_TIMEOUT
PROXY_HEADER = "PROXY header"
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
        self._preamble: Optional[Preamble] = None
        self._closeTimer: Optional[CloseDeadline] = None

    def connectionMade(self) -> None:
        """
        Close a connection from a source not trusted to send a header; give
        any other until the preamble's deadline to send it.
        """
        factory = self.factory
        peer = self.transport.getPeer()
        if not factory.trusted.trusts(peer):
            factory.untrusted += 1
            factory.refusals.warn(
                "closing {peer}: not a trusted source of PROXY headers "
                "(trusted: {trusted})",
                peer=describe(peer),
                trusted=str(factory.trusted),
            )
            self._closeNow()
            return
        factory.pending += 1
        self._preamble = factory.preambles.enter(peer, PROXY_HEADER, self._drop)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        Pass the loss through, if the wrapped protocol started.
        """
        self._headerDone()
        cancel(self._closeTimer)
        super().connectionLost(reason)

    def _headerDone(self) -> Optional[Preamble]:
        """The header arrived, or never will: no longer pending."""
        preamble, self._preamble = self._preamble, None
        if preamble is not None:
            self.factory.pending -= 1
            preamble.done()
        return preamble

    def _refuse(self, why: str) -> None:
        self.factory.refused += 1
        self.factory.refusals.warn(
            "closing {peer}: {why}", peer=describe(self.transport.getPeer()), why=why
        )
        self._headerDone()
        self._close()

    def _drop(self) -> None:
        """
        Closed by the preambles (the oldest beyond their bound, past the
        deadline, or the port stopped): nothing is owed, so close at once
        and free the descriptor (aborted if even that stalls).
        """
        self._preamble = None
        self.factory.pending -= 1
        self._closeNow()

    def _closeNow(self) -> None:
        """Close at once, unread: nothing is owed (aborted if that stalls)."""
        self._refused = True
        self.transport.loseConnection()
        self._closeTimer = CloseDeadline(
            self.transport, self.factory.clock, REFUSAL_CLOSE_TIMEOUT
        )

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
        preamble, self._preamble = self._preamble, None
        assert preamble is not None  # connected, trusted, not refused
        self.factory.pending -= 1
        transport = ProxiedTransport(self.transport, parsed.source, parsed.destination)
        data = buffered[parsed.length :]
        # TLS after the header (proxy:ssl:) goes on with this preamble.
        with self.factory.preambles.handingOver(preamble):
            started = self.startWrapped(transport.getPeer(), transport, data)
        if not started:
            self._close()


class ProxyFactory(FactoryWrapper):
    """
    Wrap C{wrappedFactory} so that its protocols start after a PROXY header
    and see the proxied addresses.

    @ivar trusted: the sources whose headers are believed.
    @ivar preambles: the connections in their preamble (waiting for their
        header, or for TLS after it), bounded and timed.
    @ivar pending: connections waiting for their PROXY header now.
    @ivar refused: connections closed for a malformed header, in total.
    @ivar untrusted: connections closed because their source is not
        trusted to send a header, in total.
    """

    log = Logger()

    def __init__(
        self,
        wrappedFactory: IProtocolFactory,
        clock: Optional[IReactorTime] = None,
        headerTimeout: float = DEFAULT_HEADER_TIMEOUT,
        maxPending: Optional[int] = None,
        trusted: Optional[TrustedSources] = None,
        preambles: Optional[Preambles] = None,
    ) -> None:
        """
        @param clock: the time source; the global reactor by default.
        @param headerTimeout: seconds a connection may take to send its
            PROXY header before it is closed (unless C{preambles} is given).
        @param maxPending: how many connections may wait for their header
            at once (beyond it the oldest waiting is closed), or C{None} for
            no bound but the header timeout (unless C{preambles} is given).
            A L{ConnectionLimit} inside counts connections only once their
            header has named the client.
        @param trusted: the sources a header is believed from; by default
            the loopback and private networks (L{DEFAULT_TRUSTED}).
        @param preambles: the bound and deadline shared with what follows
            the header (a L{incproto.handshake.HandshakeGate} under TLS);
            by default one of its own from C{maxPending} and
            C{headerTimeout}.
        """
        super().__init__(wrappedFactory)
        if preambles is None:
            preambles = Preambles(maxPending, headerTimeout, clock)
        self.clock = preambles.clock
        self.preambles = preambles
        self.trusted = trusted if trusted is not None else DEFAULT
        self.pending = 0
        self.refused = 0
        self.untrusted = 0
        self.refusals = RateLimitedLog(
            self.log,
            self.clock,
            REFUSAL_LOG_INTERVAL,
            "{more} closed for their PROXY header in the last {interval}s",
            ("more connection", "more connections"),
        )

    @property
    def headerTimeout(self) -> float:
        """Seconds a connection may take to send its header."""
        return self.preambles.timeout

    @property
    def maxPending(self) -> Optional[int]:
        """How many connections may be in their preamble at once."""
        return self.preambles.maxPreambles

    def doStop(self) -> None:
        """Close the connections in their preamble; stop the wrapped
        factory and the log summary."""
        self.preambles.stop()
        self.refusals.stop()
        super().doStop()

    def buildProtocol(self, addr: IAddress) -> ProxyProtocol:
        """A L{ProxyProtocol} for every connection."""
        return ProxyProtocol(self)

    def logPrefix(self) -> str:
        """The wrapped factory's prefix, marked as behind a PROXY header."""
        return f"{super().logPrefix()} (PROXY)"
