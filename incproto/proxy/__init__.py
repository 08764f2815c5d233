# -*- test-case-name: tests.unit.test_proxy,tests.integration.test_proxy -*-
"""PROXY protocol (v1 and v2) in front of any factory, done transparently.

Load balancers such as HAProxy prepend a PROXY header naming the real
client.  Twisted's own wrapper (C{haproxy:} endpoints) starts the wrapped
protocol before the header has arrived, so that protocol first sees the
proxy's address; it closes connections whose first read is shorter than a
header; and it drops half-close.  L{ProxyEndpoint} instead starts the
wrapped protocol only once the header is parsed, with C{getPeer()} and
C{getHost()} already answering the proxied addresses, and forwards
half-close like every incproto wrapper (L{incproto._kernel.wrapping.PassThrough}).

From an endpoint description, the C{proxy:} prefix (a Twisted endpoint
parser plugin, L{ProxyEndpointParser}) gives the same endpoint:
C{serverFromString(reactor, "proxy:tcp:9090")}.  Twisted's C{haproxy:}
prefix still means Twisted's wrapper; incproto's C{--port} maps it to
C{proxy:} (L{from_haproxy}).

Under C{proxy:ssl:...} the header is read before TLS, as a proxy passing
TLS through sends it (HAProxy's C{server ... ssl send-proxy}): the header
comes first on the connection, in clear, then the TLS handshake.  So the
layers are PROXY, then TLS, then the application (L{with_tls}); Twisted's
own C{haproxy:ssl:} puts TLS outside and waits for the header inside it.

A header is believed only from trusted sources (L{TrustedSources}, the
C{trusted=} of a C{proxy:} description; by default the loopback and
private networks): a connection from anywhere else is closed unread.
"""

from incproto.proxy._endpoint import ProxyEndpoint, TLSAfterProxyReactor, with_tls
from incproto.proxy._header import (
    V1_MAX_LENGTH,
    V1_PREFIX,
    V2_MAX_LENGTH,
    V2_SIGNATURE,
    ProxyHeader,
    ProxyHeaderError,
    parse_proxy_header,
)
from incproto.proxy._parser import (
    PREFIX,
    TRUSTED,
    TWISTED_PREFIX,
    ProxyEndpointParser,
    from_haproxy,
    split_proxy,
    trusted_in,
    trusted_sources,
)
from incproto.proxy._trust import DEFAULT_TRUSTED, TrustedSources
from incproto.proxy._wrapper import (
    DEFAULT_HEADER_TIMEOUT,
    PROXY_HEADER,
    REFUSAL_CLOSE_TIMEOUT,
    REFUSAL_LOG_INTERVAL,
    ProxiedTransport,
    ProxyFactory,
    ProxyProtocol,
)

__all__ = [
    "DEFAULT_HEADER_TIMEOUT",
    "DEFAULT_TRUSTED",
    "PREFIX",
    "PROXY_HEADER",
    "REFUSAL_CLOSE_TIMEOUT",
    "REFUSAL_LOG_INTERVAL",
    "TRUSTED",
    "TWISTED_PREFIX",
    "V1_MAX_LENGTH",
    "V1_PREFIX",
    "V2_MAX_LENGTH",
    "V2_SIGNATURE",
    "ProxiedTransport",
    "ProxyEndpoint",
    "ProxyEndpointParser",
    "ProxyFactory",
    "ProxyHeader",
    "ProxyHeaderError",
    "ProxyProtocol",
    "TLSAfterProxyReactor",
    "TrustedSources",
    "from_haproxy",
    "parse_proxy_header",
    "split_proxy",
    "trusted_in",
    "trusted_sources",
    "with_tls",
]
