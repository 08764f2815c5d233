# -*- test-case-name: tests.unit.test_handshake,tests.integration.test_handshake -*-
"""L{HandshakeGate}: a factory's protocols start only once TLS is up.

Twisted's TLS wrapper (C{TLSMemoryBIOProtocol}) connects the protocol it
wraps as soon as TCP connects, before the handshake; under a
L{incproto.limit.ConnectionLimit} that connection would take a slot while
its client has not even sent a ClientHello.  Put inside TLS, the gate
builds and starts the wrapped protocol only when TLS reports the handshake
complete (C{IHandshakeListener.handshakeCompleted}); until then the
connection is in its preamble (L{incproto._kernel.preambles.Preambles}):
bounded in number, oldest closed first, and closed at its deadline.  Over a
transport that is not TLS the wrapped protocol starts at once.
"""

from __future__ import annotations

from typing import Any, Optional, cast

from twisted.internet.endpoints import SSL4ServerEndpoint
from twisted.internet.interfaces import (
    IAddress,
    IHandshakeListener,
    INegotiated,
    IProtocolFactory,
)
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from incproto._kernel.closing import CloseDeadline
from incproto._kernel.preambles import Preamble, Preambles
from incproto._kernel.timers import cancel
from incproto._kernel.wrapping import FactoryWrapper, PassThrough
from incproto.proxy import ProxyEndpoint

TLS_HANDSHAKE = "TLS handshake"
# Seconds a connection closed in its handshake may take to close.
CLOSE_TIMEOUT = 10.0


@implementer(IHandshakeListener)
class HandshakingConnection(PassThrough):
    """
    One connection under a L{HandshakeGate}: in its preamble until TLS
    completes the handshake, then a L{PassThrough} to the wrapped protocol.
    """

    def __init__(self, gate: HandshakeGate, addr: IAddress) -> None:
        super().__init__(gate.wrappedFactory)
        self.gate = gate
        self.addr = addr
        self.preamble: Optional[Preamble] = None
        self._closing: Optional[CloseDeadline] = None

    def connectionMade(self) -> None:
        """Wait for the handshake under TLS; start at once otherwise."""
        if not INegotiated.providedBy(self.transport):
            self._start()
            return
        self.preamble = self.gate.preambles.enter(
            self.transport.getPeer(), TLS_HANDSHAKE, self._close
        )

    def handshakeCompleted(self) -> None:
        """TLS is up: the preamble is over, start the wrapped protocol."""
        if self._closing is not None:
            return
        if self.preamble is not None:
            self.preamble.done()
            self.preamble = None
        self._start()
        if IHandshakeListener.providedBy(self.wrapped):
            cast(Any, self.wrapped).handshakeCompleted()

    def _start(self) -> None:
        if not self.startWrapped(self.addr, self.transport):
            self._close()

    def _close(self) -> None:
        """
        Close without serving, at once: the connection under TLS is closed
        (a TLS close before the handshake would be a reset), which frees its
        descriptor; it is aborted if even that stalls.
        """
        self.preamble = None
        under = getattr(self.transport, "transport", None) or self.transport
        under.loseConnection()
        self._closing = CloseDeadline(under, self.gate.clock, CLOSE_TIMEOUT)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Leave the preamble if still in it; forward if started."""
        if self.preamble is not None:
            self.preamble.done()
            self.preamble = None
        cancel(self._closing)
        super().connectionLost(reason)


class HandshakeGate(FactoryWrapper):
    """
    Wrap C{wrappedFactory}, inside TLS, so that its protocols start only once
    the TLS handshake is complete.

    @ivar preambles: the connections in their handshake, bounded and timed.
    """

    def __init__(
        self, wrappedFactory: IProtocolFactory, preambles: Optional[Preambles] = None
    ) -> None:
        """
        @param wrappedFactory: the factory whose protocols are served once
            TLS is up (a L{incproto.limit.ConnectionLimit}, for instance).
        @param preambles: the bound and deadline of the port's connections
            in their preamble; by default a L{Preambles} of its own, with
            its defaults.
        """
        super().__init__(wrappedFactory)
        self.preambles = preambles if preambles is not None else Preambles()
        self.clock = self.preambles.clock

    def buildProtocol(self, addr: IAddress) -> HandshakingConnection:
        """A L{HandshakingConnection} for every connection."""
        return HandshakingConnection(self, addr)

    def doStop(self) -> None:
        """Close the connections still in their handshake; stop the wrapped."""
        self.preambles.stop()
        super().doStop()

    def watchAccepting(self, accepting: Any) -> None:
        """Hand the port's accept control to the wrapped factory, if it
        paces accepting (see L{incproto.limit.ConnectionLimit.watchAccepting})."""
        watch = getattr(self.wrappedFactory, "watchAccepting", None)
        if watch is not None:
            watch(accepting)


def is_tls(endpoint: Any) -> bool:
    """
    Whether C{endpoint} does TLS: an C{ssl:} endpoint, alone or under
    C{proxy:}; its factory then goes inside a L{HandshakeGate}.
    """
    if isinstance(endpoint, ProxyEndpoint):
        return is_tls(endpoint.wrappedEndpoint)
    return isinstance(endpoint, SSL4ServerEndpoint)
