"""PROXY headers before TLS, over real TCP and TLS on 127.0.0.1 (pytest-twisted;
kept apart from tests/unit/test_proxy.py, whose tests need no reactor, so that
mutation testing can run those)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Generator, List

import pytest
import pytest_twisted
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS
from twisted.internet.error import ConnectionLost
from twisted.internet.protocol import Factory
from twisted.logger import formatEvent, globalLogPublisher

from incproto.proxy import ProxyEndpoint, ProxyEndpointParser
from tests.support.certificates import make_certificate
from tests.support.helpers import (
    HEADERS,
    Client,
    RecordingFactory,
    client_tls,
    connect_proxied_tls,
    increment_over,
    within,
)


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
