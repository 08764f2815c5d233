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
"""

from __future__ import annotations

import ipaddress
import struct
from typing import Any, NamedTuple, Optional, Tuple, Union

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import quoteStringArgument, serverFromString
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IListeningPort,
    IProtocolFactory,
    IReactorTime,
    IStreamServerEndpoint,
    IStreamServerEndpointStringParser,
)
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.plugin import IPlugin
from twisted.python.failure import Failure
from zope.interface import directlyProvides, implementer, providedBy

from incproto._kernel.addresses import describe
from incproto._kernel.closing import CloseDeadline, cancel, close_politely
from incproto._kernel.ratelimit import RateLimitedLog
from incproto._kernel.reactors import global_reactor
from incproto._kernel.wrapping import FactoryWrapper, PassThrough

V1_PREFIX = b"PROXY "
V1_MAX_LENGTH = 107  # the longest v1 header, CRLF included
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_MAX_LENGTH = 16 + 4096  # more address/TLV data than any proxy sends
DEFAULT_HEADER_TIMEOUT = 30.0
# Seconds a refused connection may take to read its FIN and close.
REFUSAL_CLOSE_TIMEOUT = 10.0
REFUSAL_LOG_INTERVAL = 10.0
PREFIX = "proxy"
TWISTED_PREFIX = "haproxy"

Address = Union[IPv4Address, IPv6Address, UNIXAddress]


class ProxyHeader(NamedTuple):
    """
    A parsed PROXY header.

    @ivar source: the client's address, or C{None} where the connection's
        own peer address stands (v1 C{UNKNOWN}, v2 C{LOCAL} or an
        unspecified family).
    @ivar destination: the address the client connected to, or C{None}
        likewise.
    @ivar length: the header's length in bytes; the client's data follows.
    """

    source: Optional[Address]
    destination: Optional[Address]
    length: int


class ProxyHeaderError(ValueError):
    """
    The connection did not start with a valid PROXY header.
    """


def parse_proxy_header(
    data: bytes,
) -> Optional[ProxyHeader]:
    """
    Parse the PROXY header (v1 or v2) at the start of C{data}.

    @return: C{None} if more bytes are needed, else the header.
    @raise ProxyHeaderError: if C{data} cannot start a valid header.
    """
    if data[:12] == V2_SIGNATURE[: len(data)] and len(data) < 16:
        return None
    if data.startswith(V2_SIGNATURE):
        return _parse_v2(data)
    if V1_PREFIX.startswith(data[:6]) and len(data) < 6:
        return None
    if data.startswith(V1_PREFIX):
        return _parse_v1(data)
    raise ProxyHeaderError("no PROXY header")


def _parse_v1(
    data: bytes,
) -> Optional[ProxyHeader]:
    end = data.find(b"\r\n", 0, V1_MAX_LENGTH)
    if end < 0:
        if len(data) >= V1_MAX_LENGTH:
            raise ProxyHeaderError("PROXY v1 header too long")
        return None
    fields = data[:end].split(b" ")
    if fields[1:2] == [b"UNKNOWN"]:
        return ProxyHeader(None, None, end + 2)
    if len(fields) != 6 or fields[1] not in (b"TCP4", b"TCP6"):
        raise ProxyHeaderError("malformed PROXY v1 header")
    family = IPv4Address if fields[1] == b"TCP4" else IPv6Address
    try:
        source_ip, destination_ip = (
            ipaddress.ip_address(field.decode("ascii")) for field in fields[2:4]
        )
        source_port, destination_port = (_port(field) for field in fields[4:6])
    except ValueError as e:
        raise ProxyHeaderError(f"malformed PROXY v1 header: {e}") from None
    if {source_ip.version, destination_ip.version} != {
        4 if family is IPv4Address else 6
    }:
        raise ProxyHeaderError("PROXY v1 address family mismatch")
    return ProxyHeader(
        family("TCP", str(source_ip), source_port),
        family("TCP", str(destination_ip), destination_port),
        end + 2,
    )


def _port(field: bytes) -> int:
    if not field.isdigit() or int(field) > 65535:
        raise ValueError(f"bad port {field!r}")
    return int(field)


def _parse_v2(
    data: bytes,
) -> Optional[ProxyHeader]:
    version_command, family_protocol, length = struct.unpack("!BBH", data[12:16])
    total = 16 + length
    if version_command >> 4 != 2 or version_command & 0x0F not in (0, 1):
        raise ProxyHeaderError("unsupported PROXY v2 version or command")
    if total > V2_MAX_LENGTH:
        raise ProxyHeaderError("PROXY v2 header too long")
    if len(data) < total:
        return None
    body = data[16:total]
    if version_command & 0x0F == 0:  # LOCAL: the proxy's own connection
        return ProxyHeader(None, None, total)
    if family_protocol == 0x11 and length >= 12:  # TCP over IPv4
        src, dst, sport, dport = struct.unpack("!4s4sHH", body[:12])
        return ProxyHeader(
            IPv4Address("TCP", str(ipaddress.IPv4Address(src)), sport),
            IPv4Address("TCP", str(ipaddress.IPv4Address(dst)), dport),
            total,
        )
    if family_protocol == 0x21 and length >= 36:  # TCP over IPv6
        src, dst, sport, dport = struct.unpack("!16s16sHH", body[:36])
        return ProxyHeader(
            IPv6Address("TCP", str(ipaddress.IPv6Address(src)), sport),
            IPv6Address("TCP", str(ipaddress.IPv6Address(dst)), dport),
            total,
        )
    if family_protocol == 0x31 and length >= 216:  # UNIX stream
        src, dst = (raw.split(b"\0", 1)[0] for raw in (body[:108], body[108:216]))
        return ProxyHeader(UNIXAddress(src), UNIXAddress(dst), total)
    if family_protocol >> 4 == 0:  # UNSPEC: keep the connection's addresses
        return ProxyHeader(None, None, total)
    raise ProxyHeaderError("unsupported PROXY v2 address family")


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
            "{count} more connections closed for their PROXY header "
            "in the last {interval}s",
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
    ) -> None:
        """
        See L{ProxyFactory} for the parameters.
        """
        self.wrappedEndpoint = wrappedEndpoint
        self.clock = clock
        self.headerTimeout = headerTimeout
        self.maxPending = maxPending
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
            protocolFactory, self.clock, self.headerTimeout, self.maxPending
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
