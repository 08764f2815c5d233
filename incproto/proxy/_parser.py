# -*- test-case-name: tests.unit.test_proxy,tests.integration.test_proxy -*-
"""The C{proxy:} endpoint description (L{ProxyEndpointParser}, the plugin in
C{twisted/plugins/incproto_endpoints.py}), and C{--port}'s C{haproxy:}."""

from __future__ import annotations

import re
from typing import Any, Optional, Tuple

from twisted.internet.endpoints import quoteStringArgument, serverFromString
from twisted.internet.interfaces import IStreamServerEndpointStringParser
from twisted.plugin import IPlugin
from zope.interface import implementer

from incproto.proxy._endpoint import ProxyEndpoint, TLSAfterProxyReactor
from incproto.proxy._trust import TrustedSources

PREFIX = "proxy"
TWISTED_PREFIX = "haproxy"
TRUSTED = "trusted"


def trusted_sources(text: str) -> TrustedSources:
    """
    The C{trusted=} of a C{proxy:} description.

    @raise ValueError: a one-line reason, naming C{trusted=}.
    """
    try:
        return TrustedSources.parse(text)
    except ValueError as e:
        raise ValueError(f"{TRUSTED}={text}: {e}") from None


def trusted_in(description: str) -> Optional[TrustedSources]:
    """
    The sources that C{description}'s C{trusted=} lists, or C{None} if it
    names none (for code that builds the endpoint itself).
    """
    found = re.search(r"(?:^|:)trusted=((?:\\.|[^:\\])*)", description)
    if found is None:
        return None
    return trusted_sources(re.sub(r"\\(.)", r"\1", found.group(1)))


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

    C{trusted=} (C{proxy:tcp:9090:trusted=10.0.0.0/8,127.0.0.1}) lists the
    sources a header is believed from (L{TrustedSources}); a colon in an
    IPv6 network is escaped (C{trusted=fd00\\:\\:/8}).  By default the
    loopback and private networks.
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
        trusted = kwargs.pop(TRUSTED, None)
        sources = None if trusted is None else trusted_sources(trusted)
        inner = ":".join(
            [quoteStringArgument(str(arg)) for arg in args]
            + [
                f"{quoteStringArgument(str(k))}={quoteStringArgument(str(v))}"
                for k, v in sorted(kwargs.items())
            ]
        )
        wrapped = serverFromString(TLSAfterProxyReactor(reactor), inner)
        return ProxyEndpoint(wrapped, reactor, trusted=sources)
