"""ConnectionLimit over real TCP, TLS and PROXY-protocol connections on
127.0.0.1 (pytest-twisted)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Generator

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import UNIXClientEndpoint
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory

from incproto.tap import Options, makeService
from tests.support.formats import V1, v2
from tests.support.helpers import (
    Client,
    ObservedLimit,
    connect_port,
    listen_on,
    within,
)


@pytest_twisted.inlineCallbacks
def test_third_of_three_is_greeted_when_one_of_two_leaves(
    limited: Any,
) -> Generator[Deferred[Any], Any, None]:
    """The series' thread-pool server with a pool of 2, as a queue."""
    limit, port = limited(2, queueSize=10)
    first = yield connect_port(port)
    second = yield connect_port(port)
    yield first.wait_for(1)
    yield second.wait_for(1)
    third = yield connect_port(port)
    third.transport.write(b"^abc$")
    yield limit.until(lambda: limit.held == 1)
    second.transport.write(b"^xyz$")
    assert (yield second.wait_for(4)) == b"*yz{"
    assert third.received == b""
    first.transport.loseConnection()
    assert (yield third.wait_for(4)) == b"*bcd"
    for client in (second, third):
        client.transport.loseConnection()
        yield within(client.closed)
    assert (limit.admitted, limit.rejected, limit.peak) == (3, 0, 2)


@pytest_twisted.inlineCallbacks
def test_queue_timeout_closes_with_a_fin(
    limited: Any,
) -> Generator[Deferred[Any], Any, None]:
    limit, port = limited(1, queueSize=10, queueTimeout=0.2)
    first = yield connect_port(port)
    yield first.wait_for(1)
    held = yield connect_port(port)
    held.transport.write(b"^unanswered")
    received = yield within(held.closed)
    assert received == b""
    assert held.reason is not None and held.reason.check(ConnectionDone)
    assert limit.timedOut == 1
    first.transport.loseConnection()
    yield within(first.closed)


@pytest_twisted.inlineCallbacks
def test_reject_closes_with_a_fin_even_after_client_bytes(
    limited: Any,
) -> Generator[Deferred[Any], Any, None]:
    limit, port = limited(1, queueSize=0)
    first = yield connect_port(port)
    yield first.wait_for(1)
    rejected = yield connect_port(port)
    rejected.transport.write(b"^" + b"a" * 100_000)
    yield within(rejected.closed)
    assert rejected.received == b""
    assert rejected.reason is not None and rejected.reason.check(ConnectionDone)
    assert limit.rejected == 1
    first.transport.write(b"^ok$")
    assert (yield first.wait_for(3)) == b"*pl"
    first.transport.loseConnection()
    yield within(first.closed)


@pytest_twisted.inlineCallbacks
def test_held_client_leaving_leaves_the_queue(
    limited: Any,
) -> Generator[Deferred[Any], Any, None]:
    limit, port = limited(1, queueSize=10)
    first = yield connect_port(port)
    yield first.wait_for(1)
    leaving = yield connect_port(port)
    yield limit.until(lambda: limit.held == 1)
    staying = yield connect_port(port)
    yield limit.until(lambda: limit.held == 2)
    leaving.transport.loseConnection()
    yield limit.until(lambda: limit.held == 1)
    first.transport.loseConnection()
    assert (yield staying.wait_for(1)) == b"*"
    assert limit.admitted == 2
    staying.transport.loseConnection()
    yield within(staying.closed)


@pytest_twisted.inlineCallbacks
def test_per_peer_limit(limited: Any) -> Generator[Deferred[Any], Any, None]:
    limit, port = limited(10, queueSize=10, maxPerPeer=1)
    first = yield connect_port(port, bind="127.0.0.1")
    yield first.wait_for(1)
    same_peer = yield connect_port(port, bind="127.0.0.1")
    yield within(same_peer.closed)
    other_peer = yield connect_port(port, bind="127.0.0.2")
    assert (yield other_peer.wait_for(1)) == b"*"
    assert (same_peer.received, limit.rejected, limit.active) == (b"", 1, 2)
    for client in (first, other_peer):
        client.transport.loseConnection()
        yield within(client.closed)


@pytest_twisted.inlineCallbacks
def test_tls(tmp_path: Path) -> Generator[Deferred[Any], Any, None]:
    """Admission, holding and rejection work the same under TLS."""
    ssl = pytest.importorskip("twisted.internet.ssl")
    from tests.support.certificates import make_certificate

    key, certificate = make_certificate(tmp_path)
    limit = ObservedLimit(1, queueSize=1)
    port = listen_on(
        limit,
        f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={certificate}",
    )
    authority = ssl.Certificate.loadPEM(certificate.read_bytes())
    tls = ssl.optionsForClientTLS("localhost", trustRoot=authority)
    try:
        first = yield connect_port(port.getHost().port, tls=tls)
        assert (yield first.wait_for(1)) == b"*"
        held = yield connect_port(port.getHost().port, tls=tls)
        held.transport.write(b"^abc$")
        rejected = yield connect_port(port.getHost().port, tls=tls)
        yield within(rejected.closed)
        assert rejected.received == b""
        assert (limit.held, limit.rejected) == (1, 1)
        first.transport.loseConnection()
        assert (yield held.wait_for(4)) == b"*bcd"
        assert held.transport.getPeerCertificate() is not None
        held.transport.loseConnection()
        yield within(held.closed)
    finally:
        yield port.stopListening()


@pytest_twisted.inlineCallbacks
def test_proxy_protocol_through_make_service() -> Generator[Deferred[Any], Any, None]:
    """
    C{--port haproxy:tcp:...}: PROXY v1 and v2 headers name the client, the
    per-peer limit counts proxied clients, and half-close survives.
    """
    options = Options.parse(
        ["--port", "haproxy:tcp:0:interface=127.0.0.1",
         "--max-connections", "10", "--max-per-peer", "1"]
    )  # fmt: skip
    service = makeService(options, reactor=reactor)
    service.startService()
    port = service.getServiceNamed("incproto").port.getHost().port
    try:
        first = yield connect_port(port)
        first.transport.write(V1[:20])
        first.transport.write(V1[20:] + b"^abc")
        assert (yield first.wait_for(4)) == b"*bcd"
        same_client = yield connect_port(port)
        same_client.transport.write(V1 + b"^abc$")
        yield within(same_client.closed)
        assert same_client.received == b""
        other = yield connect_port(port)
        other.transport.write(v2("192.0.2.50", "192.0.2.2") + b"^xyz$")
        other.transport.loseWriteConnection()
        assert (yield within(other.closed)) == b"*yz{"
        first.transport.loseConnection()
        yield within(first.closed)
    finally:
        yield service.stopService()


@pytest_twisted.inlineCallbacks
def test_unix_socket_peers_are_one_group(
    tmp_path: Path,
) -> Generator[Deferred[Any], Any, None]:
    path = tmp_path / "limited.sock"
    options = Options.parse(
        ["--port", f"unix:{path}", "--max-connections", "5", "--max-per-peer", "1"]
    )
    service = makeService(options, reactor=reactor)
    service.startService()
    endpoint = UNIXClientEndpoint(reactor, str(path))
    try:
        clients = [Client(), Client()]
        for client in clients:
            yield within(endpoint.connect(Factory.forProtocol(lambda c=client: c)))
        assert (yield clients[0].wait_for(1)) == b"*"
        yield within(clients[1].closed)
        assert clients[1].received == b""
        clients[0].transport.loseConnection()
        yield within(clients[0].closed)
    finally:
        yield service.stopService()
