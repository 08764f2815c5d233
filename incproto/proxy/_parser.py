# -*- test-case-name: tests.unit.test_proxy,tests.integration.test_proxy -*-
"""The C{proxy:} endpoint description (L{ProxyEndpointParser}, the plugin in
C{twisted/plugins/incproto_endpoints.py}), and C{--port}'s C{haproxy:}."""

from __future__ import annotations

from typing import Any, Tuple

from twisted.internet.endpoints import quoteStringArgument, serverFromString
from twisted.internet.interfaces import IStreamServerEndpointStringParser
from twisted.plugin import IPlugin
from zope.interface import implementer

from incproto.proxy._endpoint import ProxyEndpoint, TLSAfterProxyReactor

PREFIX = "proxy"
TWISTED_PREFIX = "haproxy"


def from_haproxy(description: str) -> str:
    """
    C{description} with Twisted's C{haproxy:} prefix replaced by incproto's
    C{proxy:}, as C{--port} reads it; any other description unchanged.
    """
    kind, colon, rest = description.partition(":")
    return f"{PREFIX}:{rest}" if colon and kind == TWISTED_PREFIX else description


def split_proxy(description: str) -> Tuple[bool, str]:
    """
    Whether C{description} starts with C{proxy:}, and the description of
    the endpoint under it.
    """
    kind, colon, rest = description.partition(":")
    return (True, rest) if colon and kind == PREFIX else (False, description)


@implementer(IPlugin, IStreamServerEndpointStringParser)
class ProxyEndpointParser:
    """
    The C{proxy:} endpoint description: C{proxy:} followed by any server
    endpoint description (C{proxy:tcp:9090}, C{proxy:unix:/run/inc.sock},
    C{proxy:ssl:443:privateKey=...}) gives a L{ProxyEndpoint} around that
    endpoint, with the default header timeout and no bound on connections
    waiting for their header.

    Under C{proxy:ssl:} the PROXY header comes first, in clear, and TLS
    after it, as HAProxy sends it (C{server ... ssl send-proxy}): the
    wrapped endpoint is built on a L{TLSAfterProxyReactor}, so it listens
    on plain TCP with C{ProxyFactory(TLS(factory))}.  The application's
    C{transport.getPeer()} is the proxied client (TLS asks the PROXY
    transport under it).
    """

    prefix = PREFIX

    def parseStreamServer(
        self, reactor: Any, *args: Any, **kwargs: Any
    ) -> ProxyEndpoint:
        """
        Parse the wrapped endpoint's description, given as C{args} and
        C{kwargs}, and wrap it.

        @raise ValueError: if no endpoint follows C{proxy:}.
        """
        if not args or args == ("",):
            raise ValueError(
                f"{PREFIX}: needs an endpoint after it, as in {PREFIX}:tcp:9090"
            )
        inner = ":".join(
            [quoteStringArgument(str(arg)) for arg in args]
            + [
                f"{quoteStringArgument(str(k))}={quoteStringArgument(str(v))}"
                for k, v in sorted(kwargs.items())
            ]
        )
        wrapped = serverFromString(TLSAfterProxyReactor(reactor), inner)
        return ProxyEndpoint(wrapped, reactor)
