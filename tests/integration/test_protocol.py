"""IncrementProtocol over real TCP on 127.0.0.1, client and server in one
reactor (pytest-twisted)."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any, Dict, Generator, List

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import UNIXClientEndpoint
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.protocol import Factory
from twisted.logger import globalLogPublisher

from incproto.tap import Options, makeService
from tests.support.helpers import (
    Client,
    MessageProducer,
    RecordingFactory,
    connect,
    listen,
    within,
)

MiB = 1024 * 1024


@pytest.fixture
def server() -> Generator[RecordingFactory, None, None]:
    factory = RecordingFactory()
    factory.port = listen(factory)  # type: ignore[attr-defined]
    yield factory
    factory.port.stopListening()  # type: ignore[attr-defined]


@pytest.fixture
def logged_errors() -> Generator[List[Dict[str, Any]], None, None]:
    """Log events at error level or with a failure, while the test runs."""
    events: List[Dict[str, Any]] = []

    def observe(event: Dict[str, Any]) -> None:
        level = event.get("log_level")
        if "log_failure" in event or getattr(level, "name", "") in (
            "error",
            "critical",
        ):
            events.append(event)

    globalLogPublisher.addObserver(observe)
    yield events
    globalLogPublisher.removeObserver(observe)


def shrink_buffers(client: Client, server_protocol: Any) -> None:
    """
    Pin the kernel buffers between server and client small, so that bytes in
    flight measure what the server holds, not what Linux autotuning allows.
    """
    client.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    server_protocol.transport.getHandle().setsockopt(
        socket.SOL_SOCKET, socket.SO_SNDBUF, 65536
    )


@pytest_twisted.inlineCallbacks
def test_protocol_table(
    server: RecordingFactory,
) -> Generator[Deferred[Any], Any, None]:
    client = yield connect(server.port)  # type: ignore[attr-defined]
    expected = b"*"
    yield client.wait_for(len(expected))
    rows = [
        (b"^abc$de^abte$f", b"bcdbcuf"),
        (b"xyz^123", b"234"),
        (b"25$^ab0000$abab", b"36bc1111"),
    ]
    for sent, reply in rows:
        client.transport.write(sent)
        expected += reply
        received = yield client.wait_for(len(expected))
        assert received == expected
    client.transport.loseConnection()
    yield within(client.closed)


@pytest_twisted.inlineCallbacks
def test_reply_streams_without_message_end(
    server: RecordingFactory,
) -> Generator[Deferred[Any], Any, None]:
    client = yield connect(server.port)  # type: ignore[attr-defined]
    client.transport.write(b"abcdef")
    client.transport.write(b"^")
    client.transport.write(b"f")
    received = yield client.wait_for(2)
    assert received == b"*g"
    client.transport.loseConnection()
    yield within(client.closed)


@pytest_twisted.inlineCallbacks
def test_half_close_delivers_everything(
    server: RecordingFactory,
) -> Generator[Deferred[Any], Any, None]:
    client = yield connect(server.port)  # type: ignore[attr-defined]
    client.transport.write(b"^abc$")
    client.transport.loseWriteConnection()
    received = yield within(client.closed)
    assert received == b"*bcd"
    assert client.reason is not None and client.reason.check(ConnectionDone)


@pytest_twisted.inlineCallbacks
def test_ten_megabytes_half_close_round_trip(
    server: RecordingFactory,
) -> Generator[Deferred[Any], Any, None]:
    client = yield connect(server.port)  # type: ignore[attr-defined]
    MessageProducer(client.transport, 10 * MiB, half_close=True)
    received = yield within(client.closed)
    assert len(received) == 1 + 10 * MiB
    assert received == b"*" + b"b" * (10 * MiB)


@pytest_twisted.inlineCallbacks
def test_backpressure_bounds_bytes_in_flight(
    server: RecordingFactory,
) -> Generator[Deferred[Any], Any, None]:
    """
    A client that sends 48 MiB without reading stops being read from: the
    bytes the server has taken in but the client has not yet received stay
    under 4 MiB, and once the client reads, every byte arrives.
    """
    total = 48 * MiB
    client = yield connect(server.port)  # type: ignore[attr-defined]
    server_protocol = yield within(server.connected)
    shrink_buffers(client, server_protocol)
    client.transport.pauseProducing()  # the client stops reading
    in_flight: List[int] = []
    server_protocol.on_data = lambda data: in_flight.append(
        server_protocol.bytesReceived - len(client.received)
    )
    MessageProducer(client.transport, total, half_close=True)
    yield within(server_protocol.paused)
    received_when_paused = server_protocol.bytesReceived
    client.transport.resumeProducing()
    received = yield within(client.closed, 120)
    assert received_when_paused < 4 * MiB
    assert max(in_flight) < 4 * MiB, max(in_flight)
    assert len(received) == 1 + total
    assert received.count(b"b") == total


@pytest_twisted.inlineCallbacks
def test_stop_reading_half_close_then_read_everything(
    server: RecordingFactory,
) -> Generator[Deferred[Any], Any, None]:
    """
    The client stops reading, sends enough to make the server pause,
    half-closes, and only then reads: it gets every owed byte, then a close.
    """
    size = 8 * MiB
    client = yield connect(server.port)  # type: ignore[attr-defined]
    server_protocol = yield within(server.connected)
    shrink_buffers(client, server_protocol)
    client.transport.pauseProducing()
    client.transport.write(b"^" + b"a" * size)
    client.transport.loseWriteConnection()
    yield within(server_protocol.paused)
    client.transport.resumeProducing()
    received = yield within(client.closed, 60)
    assert received == b"*" + b"b" * size
    yield within(server_protocol.lost)


@pytest_twisted.inlineCallbacks
def test_finish_while_paused_delivers_then_closes(
    server: RecordingFactory,
) -> Generator[Deferred[Any], Any, None]:
    """
    The close trap: C{loseConnection()} with a paused producer registered
    never completes (the drained buffer resumes the producer instead).
    L{IncrementProtocol.finish} on a paused connection must still deliver
    what was written and then close.
    """
    size = 4 * MiB
    client = yield connect(server.port)  # type: ignore[attr-defined]
    server_protocol = yield within(server.connected)
    shrink_buffers(client, server_protocol)
    client.transport.pauseProducing()
    client.transport.write(b"^" + b"a" * size)
    yield within(server_protocol.paused)
    owed = server_protocol.bytesSent
    server_protocol.finish()
    client.transport.resumeProducing()
    received = yield within(client.closed)
    assert len(received) == owed
    assert received == b"*" + b"b" * (owed - 1)
    assert client.reason is not None and client.reason.check(ConnectionDone)


@pytest_twisted.inlineCallbacks
def test_reset_mid_message_costs_only_that_connection(
    server: RecordingFactory, logged_errors: List[Dict[str, Any]]
) -> Generator[Deferred[Any], Any, None]:
    other = yield connect(server.port)  # type: ignore[attr-defined]
    yield other.wait_for(1)
    client = yield connect(server.port)  # type: ignore[attr-defined]
    client.transport.write(b"^abc")
    yield client.wait_for(4)
    client.transport.abortConnection()  # RST
    reason = yield within(server.built[1].lost)
    assert isinstance(reason, ConnectionLost)
    other.transport.write(b"^xyz$")
    assert (yield other.wait_for(4)) == b"*yz{"
    other.transport.loseConnection()
    yield within(other.closed)
    assert logged_errors == []


@pytest_twisted.inlineCallbacks
def test_reset_while_replies_are_pending(
    server: RecordingFactory, logged_errors: List[Dict[str, Any]]
) -> Generator[Deferred[Any], Any, None]:
    """A client that vanishes while the server is paused on it logs nothing."""
    client = yield connect(server.port)  # type: ignore[attr-defined]
    server_protocol = yield within(server.connected)
    shrink_buffers(client, server_protocol)
    client.transport.pauseProducing()
    client.transport.write(b"^" + b"a" * (4 * MiB))
    yield within(server_protocol.paused)
    client.transport.abortConnection()
    yield within(server_protocol.lost)
    assert logged_errors == []


@pytest_twisted.inlineCallbacks
def test_unix_socket_through_make_service(
    tmp_path: Path,
) -> Generator[Deferred[Any], Any, None]:
    """C{--port unix:PATH} serves the protocol, half-close included."""
    path = tmp_path / "incproto.sock"
    service = makeService(Options.parse(["--port", f"unix:{path}"]), reactor=reactor)
    service.startService()
    try:
        endpoint = UNIXClientEndpoint(reactor, str(path))
        client = Client()
        yield within(endpoint.connect(Factory.forProtocol(lambda: client)))
        client.transport.write(b"^abc$de^abte$f")
        client.transport.loseWriteConnection()
        received = yield within(client.closed)
        assert received == b"*bcdbcuf"
    finally:
        yield service.stopService()
