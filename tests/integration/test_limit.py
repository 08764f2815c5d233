"""ConnectionLimit over real TCP, TLS and PROXY-protocol connections on
127.0.0.1 (pytest-twisted)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Generator, List, Optional, Tuple

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    UNIXClientEndpoint,
    serverFromString,
    wrapClientTLS,
)
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory

from incproto import ConnectionLimit, IncrementFactory
from incproto.limit import LimitedConnection
from incproto.tap import Options, makeService
from tests.support.helpers import Client, within
from tests.unit.test_proxy import V1, v2

Pending = List[Tuple[Callable[[], bool], "Deferred[None]"]]


class ObservedLimit(ConnectionLimit):
    """A ConnectionLimit whose state changes can be waited for."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(IncrementFactory(), *args, **kwargs)
        self._pending: Pending = []

    def until(self, predicate: Callable[[], bool]) -> Deferred[None]:
        """Fire once C{predicate()} holds after a connection arrives or leaves."""
        if predicate():
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._pending.append((predicate, d))
        return within(d)

    def _changed(self) -> None:
        ready = [(p, d) for p, d in self._pending if p()]
        self._pending = [pd for pd in self._pending if pd not in ready]
        for _, d in ready:
            d.callback(None)

    def arrived(self, connection: LimitedConnection) -> None:
        super().arrived(connection)
        self._changed()

    def left(self, connection: LimitedConnection, wasActive: bool) -> None:
        super().left(connection, wasActive)
        self._changed()

    def readingPaused(self) -> None:
        super().readingPaused()
        self._changed()

    @property
    def readingPausedCount(self) -> int:
        """Held connections whose reading is paused by the hold buffer."""
        return sum(c.readingPaused for c in self._queue)


def listen(
    factory: Any, description: str = "tcp:0:interface=127.0.0.1"
) -> IListeningPort:
    ports: List[IListeningPort] = []
    serverFromString(reactor, description).listen(factory).addCallback(ports.append)
    return ports[0]


def connect(port: int, bind: Optional[str] = None, tls: Any = None) -> Deferred[Client]:
    client = Client()
    endpoint: Any = TCP4ClientEndpoint(
        reactor, "127.0.0.1", port, bindAddress=(bind, 0) if bind else None
    )
    if tls is not None:
        endpoint = wrapClientTLS(tls, endpoint)
    return within(endpoint.connect(Factory.forProtocol(lambda: client)))


@pytest.fixture
def limited() -> Generator[Callable[..., Tuple[ObservedLimit, int]], None, None]:
    ports: List[IListeningPort] = []

    def start(*args: Any, **kwargs: Any) -> Tuple[ObservedLimit, int]:
        limit = ObservedLimit(*args, **kwargs)
        ports.append(listen(limit))
        return limit, ports[-1].getHost().port

    yield start
    for port in ports:
        port.stopListening()


@pytest_twisted.inlineCallbacks
def test_third_of_three_is_greeted_when_one_of_two_leaves(
    limited: Any,
) -> Generator[Deferred[Any], Any, None]:
    """The series' thread-pool server with a pool of 2, as a queue."""
    limit, port = limited(2, queueSize=10)
    first = yield connect(port)
    second = yield connect(port)
    yield first.wait_for(1)
    yield second.wait_for(1)
    third = yield connect(port)
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
    first = yield connect(port)
    yield first.wait_for(1)
    held = yield connect(port)
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
    first = yield connect(port)
    yield first.wait_for(1)
    rejected = yield connect(port)
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
    first = yield connect(port)
    yield first.wait_for(1)
    leaving = yield connect(port)
    yield limit.until(lambda: limit.held == 1)
    staying = yield connect(port)
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
    first = yield connect(port, bind="127.0.0.1")
    yield first.wait_for(1)
    same_peer = yield connect(port, bind="127.0.0.1")
    yield within(same_peer.closed)
    other_peer = yield connect(port, bind="127.0.0.2")
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
    port = listen(
        limit,
        f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={certificate}",
    )
    authority = ssl.Certificate.loadPEM(certificate.read_bytes())
    tls = ssl.optionsForClientTLS("localhost", trustRoot=authority)
    try:
        first = yield connect(port.getHost().port, tls=tls)
        assert (yield first.wait_for(1)) == b"*"
        held = yield connect(port.getHost().port, tls=tls)
        held.transport.write(b"^abc$")
        rejected = yield connect(port.getHost().port, tls=tls)
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
        first = yield connect(port)
        first.transport.write(V1[:20])
        first.transport.write(V1[20:] + b"^abc")
        assert (yield first.wait_for(4)) == b"*bcd"
        same_client = yield connect(port)
        same_client.transport.write(V1 + b"^abc$")
        yield within(same_client.closed)
        assert same_client.received == b""
        other = yield connect(port)
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
