# -*- test-case-name: tests.unit.test_proxy,tests.integration.test_proxy -*-
"""L{ProxyEndpoint}: any server endpoint with PROXY headers in front, and
TLS after the header where the endpoint is C{ssl:} (L{TLSAfterProxyReactor},
L{with_tls})."""

from __future__ import annotations

from typing import Any, Optional

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IListeningPort,
    IProtocolFactory,
    IReactorTime,
    IStreamServerEndpoint,
)
from zope.interface import implementer

from incproto._kernel.preambles import Preambles
from incproto.proxy._trust import TrustedSources
from incproto.proxy._wrapper import DEFAULT_HEADER_TIMEOUT, ProxyFactory


@implementer(IStreamServerEndpoint)
class ProxyEndpoint:
    """
    A server endpoint that accepts PROXY v1/v2 headers in front of
    C{wrappedEndpoint}'s connections.
    """

    def __init__(
        self,
        wrappedEndpoint: IStreamServerEndpoint,
        clock: Optional[IReactorTime] = None,
        headerTimeout: float = DEFAULT_HEADER_TIMEOUT,
        maxPending: Optional[int] = None,
        trusted: Optional[TrustedSources] = None,
        preambles: Optional[Preambles] = None,
    ) -> None:
        """
        See L{ProxyFactory} for the parameters.
        """
        self.wrappedEndpoint = wrappedEndpoint
        self.clock = clock
        self.headerTimeout = headerTimeout
        self.maxPending = maxPending
        self.trusted = trusted
        self.preambles = preambles
        self.factory: Optional[ProxyFactory] = None

    def listen(self, protocolFactory: IProtocolFactory) -> Deferred[IListeningPort]:
        """
        Listen on the wrapped endpoint with a L{ProxyFactory}, kept as
        C{self.factory} (its counters are the endpoint's).  Where the
        wrapped endpoint does TLS itself (an C{SSL4ServerEndpoint} built
        directly, not from a C{proxy:ssl:} description), TLS stays outside
        the header; see L{ProxyEndpointParser}.
        """
        self.factory = ProxyFactory(
            protocolFactory,
            self.clock,
            self.headerTimeout,
            self.maxPending,
            self.trusted,
            self.preambles,
        )
        return self.wrappedEndpoint.listen(self.factory)


def with_tls(factory: IProtocolFactory, contextFactory: Any) -> IProtocolFactory:
    """
    C{factory} with TLS added, as a C{listenSSL} call would add it, but
    inside a L{ProxyFactory}: the same L{ProxyFactory} (its settings and
    counters stay the endpoint's), now wrapping C{TLS(inner)}, so the PROXY
    header is read in clear before the TLS handshake.  Any other factory
    gets TLS outside, as C{listenSSL} does.

    @param contextFactory: the server's TLS context factory, as given to
        C{listenSSL}.
    @return: a factory to listen with over plain TCP.
    """
    from twisted.protocols.tls import TLSMemoryBIOFactory

    if not isinstance(factory, ProxyFactory):
        return TLSMemoryBIOFactory(contextFactory, False, factory)
    factory.wrappedFactory = TLSMemoryBIOFactory(
        contextFactory, False, factory.wrappedFactory
    )
    return factory


class TLSAfterProxyReactor:
    """
    A reactor for the endpoint under C{proxy:}: the given reactor, except
    that C{listenSSL} of a L{ProxyFactory} listens with C{listenTCP} and
    does TLS inside the PROXY layer (L{with_tls}).  Any other call, and
    C{listenSSL} of any other factory, is the given reactor's own.
    """

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reactor, name)

    def listenSSL(
        self,
        port: int,
        factory: IProtocolFactory,
        contextFactory: Any,
        backlog: int = 50,
        interface: str = "",
    ) -> IListeningPort:
        """Listen on plain TCP with TLS after the PROXY header."""
        if not isinstance(factory, ProxyFactory):
            listening: IListeningPort = self._reactor.listenSSL(
                port, factory, contextFactory, backlog, interface
            )
            return listening
        tcp: IListeningPort = self._reactor.listenTCP(
            port, with_tls(factory, contextFactory), backlog, interface
        )
        return tcp
