"""PROXY headers before TLS, over real TCP and TLS on 127.0.0.1 (pytest-twisted;
kept apart from tests/unit/test_proxy.py, whose tests need no reactor, so that
mutation testing can run those)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Generator, List

import pytest
import pytest_twisted
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, race
from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS
from twisted.internet.error import ConnectionLost
from twisted.internet.protocol import Factory
from twisted.logger import formatEvent, globalLogPublisher

from incproto.proxy import ProxyEndpoint, ProxyEndpointParser
from tests.support.certificates import make_certificate
from tests.support.helpers import Client, RecordingFactory, within
from tests.unit.test_proxy import v2


class ProxiedTLSClient(Client):
    """
    Sends C{header} in clear, as HAProxy's C{ssl send-proxy} does, then
    starts TLS on the same connection.
    """

    def __init__(self, header: bytes, tls: Any) -> None:
        super().__init__()
        self.header = header
        self.tls = tls

    def connectionMade(self) -> None:
        self.transport.write(self.header)
        self.transport.startTLS(self.tls)


def connect_proxied_tls(port: int, header: bytes, tls: Any) -> Deferred[Client]:
    """Connect to 127.0.0.1:C{port}, send C{header}, then TLS."""
    from twisted.internet import reactor

    client = ProxiedTLSClient(header, tls)
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
    return within(endpoint.connect(Factory.forProtocol(lambda: client)))


def client_tls(certificate: Path) -> Any:
    """Client TLS options trusting the self-signed C{certificate}."""
    from twisted.internet import ssl

    authority = ssl.Certificate.loadPEM(certificate.read_bytes())
    return ssl.optionsForClientTLS("localhost", trustRoot=authority)


def increment_over(client: Client) -> Deferred[bytes]:
    """
    Send C{^abc$}; fire with what arrived once the reply has, or once the
    connection is gone (so a server that drops it fails fast, not late).
    """
    client.transport.write(b"^abc$")
    return within(race([client.wait_for(4), client.closed]).addCallback(lambda r: r[1]))


HEADERS = [
    pytest.param(b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n", id="v1"),
    pytest.param(v2("192.0.2.1", "198.51.100.2", (56324, 443)), id="v2"),
]


@pytest.mark.parametrize("header", HEADERS)
@pytest_twisted.inlineCallbacks
def test_proxy_header_in_clear_then_tls(
    tmp_path: Path, header: bytes
) -> Generator[Deferred[Any], Any, None]:
    """
    C{proxy:ssl:}: the header comes first, in clear, then the TLS handshake,
    as HAProxy sends it; the protocol over TLS sees the proxied client.
    (Before, TLS was outside the PROXY layer and the header was taken for
    a TLS record: the connection died without a reply.)
    """
    pytest.importorskip("twisted.internet.ssl")
    from twisted.internet import reactor

    key, certificate = make_certificate(tmp_path)
    endpoint = proxy_ssl_endpoint(reactor, key, certificate)
    factory = RecordingFactory()
    port = yield within(endpoint.listen(factory))
    try:
        client = yield connect_proxied_tls(
            port.getHost().port, header, client_tls(certificate)
        )
        assert (yield increment_over(client)) == b"*bcd"
        assert client.transport.getPeerCertificate() is not None
        protocol = yield within(factory.connected)
        assert protocol.transport.getPeer() == IPv4Address("TCP", "192.0.2.1", 56324)
        assert protocol.transport.getHost() == IPv4Address("TCP", "198.51.100.2", 443)
        client.transport.loseConnection()
        yield within(client.closed)
    finally:
        yield port.stopListening()


def proxy_ssl_endpoint(reactor: Any, key: Path, certificate: Path) -> ProxyEndpoint:
    """What C{proxy:ssl:0:interface=127.0.0.1:privateKey=...:certKey=...}
    gives, from the parser itself (the plugin's lookup is tested in
    test_packaging and test_twistd; mutation testing runs without it)."""
    return ProxyEndpointParser().parseStreamServer(
        reactor,
        "ssl",
        "0",
        interface="127.0.0.1",
        privateKey=str(key),
        certKey=str(certificate),
    )


@pytest_twisted.inlineCallbacks
def test_tls_without_a_header_is_refused_in_clear(
    tmp_path: Path,
) -> Generator[Deferred[Any], Any, None]:
    """
    A TLS client that sends no header is refused before any TLS (its
    ClientHello is no PROXY header), and logged as such.
    """
    pytest.importorskip("twisted.internet.ssl")
    from twisted.internet import reactor

    events: List[Dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    key, certificate = make_certificate(tmp_path)
    endpoint = proxy_ssl_endpoint(reactor, key, certificate)
    factory = RecordingFactory()
    port = yield within(endpoint.listen(factory))
    try:
        client = Client()
        endpoint = wrapClientTLS(
            client_tls(certificate),
            TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port),
        )
        yield within(endpoint.connect(Factory.forProtocol(lambda: client)))
        assert (yield within(client.closed)) == b""
        assert factory.built == []
        # Closed in TCP, before any TLS: no close_notify, which the client's
        # TLS layer reports as a lost connection.
        assert client.reason is not None and client.reason.check(ConnectionLost)
        logged = [formatEvent(e) for e in events if "log_format" in e]
        assert [line for line in logged if line.endswith(": no PROXY header")]
    finally:
        globalLogPublisher.removeObserver(events.append)
        yield port.stopListening()
