"""Helpers for tests on the real reactor: recording client and server
protocols, bounded waits, listening and connecting on 127.0.0.1 (TCP, and
TLS with a PROXY header in clear first), and a ConnectionLimit whose state
changes can be waited for."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, List, Optional, Tuple, TypeVar

import pytest
from twisted.internet import reactor
from twisted.internet.defer import Deferred, race, succeed
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    TCP4ServerEndpoint,
    serverFromString,
    wrapClientTLS,
)
from twisted.internet.interfaces import IListeningPort, IPullProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from incproto import ConnectionLimit, IncrementFactory, IncrementProtocol
from incproto.limit import LimitedConnection
from tests.support.formats import v2

T = TypeVar("T")
TIMEOUT = 30.0


def within(d: Deferred[T], seconds: float = TIMEOUT) -> Deferred[T]:
    """Fail C{d} with TimeoutError if it has not fired after C{seconds}."""
    return d.addTimeout(seconds, reactor)


def polled(predicate: Callable[[], bool], interval: float = 0.02) -> Deferred[None]:
    """
    Fire once C{predicate()} holds, checking every C{interval} seconds, or
    fail with TimeoutError after L{TIMEOUT}.  Only for state that another
    thread or process changes and nothing on the reactor announces (a pool
    manager starting a process).
    """
    pending: List[Any] = []

    def stop(_: Deferred[None]) -> None:
        if pending and pending[0].active():
            pending[0].cancel()

    done: Deferred[None] = Deferred(stop)

    def check() -> None:
        try:
            held = predicate()
        except Exception:
            done.errback()
            return
        if held:
            done.callback(None)
        else:
            pending[:] = [reactor.callLater(interval, check)]

    check()
    return within(done)


class ObservedProtocol(IncrementProtocol):
    """
    An IncrementProtocol that reports its first pause (C{paused}), its
    connection loss (C{lost}, with the reason) and each read (C{on_data}).
    """

    def __init__(self) -> None:
        super().__init__()
        self.paused: Deferred[None] = Deferred()
        self.lost: Deferred[BaseException] = Deferred()
        self.on_data: Optional[Callable[[bytes], None]] = None

    def dataReceived(self, data: bytes) -> None:
        super().dataReceived(data)
        if self.on_data is not None:
            self.on_data(data)

    def pauseProducing(self) -> None:
        super().pauseProducing()
        if not self.paused.called:
            self.paused.callback(None)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        super().connectionLost(reason)
        self.lost.callback(reason.value)


class FirstBuiltFactory(IncrementFactory):
    """
    An IncrementFactory (no access log) whose C{built} fires with the first
    protocol it builds; subclasses set C{protocol}.
    """

    def __init__(self) -> None:
        super().__init__(logConnections=False)
        self.built: Deferred[Any] = Deferred()

    def buildProtocol(self, addr: Any) -> Any:
        protocol = super().buildProtocol(addr)
        if not self.built.called:
            self.built.callback(protocol)
        return protocol


class RecordingFactory(IncrementFactory):
    """An IncrementFactory of L{ObservedProtocol}s that keeps them."""

    protocol = ObservedProtocol

    def __init__(self) -> None:
        super().__init__()
        self.built: List[ObservedProtocol] = []
        self.connected: Deferred[ObservedProtocol] = Deferred()

    def buildProtocol(self, addr: object) -> ObservedProtocol:
        protocol = super().buildProtocol(addr)
        assert isinstance(protocol, ObservedProtocol)
        self.built.append(protocol)
        if not self.connected.called:
            self.connected.callback(protocol)
        return protocol


class Client(Protocol):
    """
    Records what the server sends; C{closed} fires with the bytes when the
    connection is gone.  C{wait_for(n)} fires once C{n} bytes have arrived.
    """

    def __init__(self) -> None:
        self.received = bytearray()
        self.closed: Deferred[bytes] = Deferred()
        self.reason: Optional[Failure] = None
        self._waiters: List[Tuple[int, Deferred[bytes]]] = []
        self.on_data: Optional[Callable[[bytes], None]] = None

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if self.on_data is not None:
            self.on_data(data)
        ready = [w for w in self._waiters if len(self.received) >= w[0]]
        self._waiters = [w for w in self._waiters if w not in ready]
        for _, d in ready:
            d.callback(bytes(self.received))

    def wait_for(self, count: int) -> Deferred[bytes]:
        d: Deferred[bytes] = Deferred()
        if len(self.received) >= count:
            d.callback(bytes(self.received))
        else:
            self._waiters.append((count, d))
        return within(d)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.reason = reason
        self.closed.callback(bytes(self.received))


@implementer(IPullProducer)
class MessageProducer:
    """
    Writes C{^} then C{total} bytes of C{a} in chunks, as fast as the
    transport takes them, then optionally half-closes.
    """

    def __init__(self, transport, total: int, half_close: bool = True) -> None:  # type: ignore[no-untyped-def]
        self.transport = transport
        self.remaining = total
        self.half_close = half_close
        self.sent = 0
        self.done: Deferred[int] = Deferred()
        transport.write(b"^")
        transport.registerProducer(self, False)

    def resumeProducing(self) -> None:
        chunk = min(self.remaining, 256 * 1024)
        if chunk:
            self.remaining -= chunk
            self.sent += chunk
            self.transport.write(b"a" * chunk)
            return
        self.transport.unregisterProducer()
        if self.half_close:
            self.transport.loseWriteConnection()
        self.done.callback(self.sent)

    def stopProducing(self) -> None:
        pass


def listen(factory: Factory, backlog: int = 50) -> IListeningPort:
    """Listen on an ephemeral port of 127.0.0.1 (synchronous for TCP)."""
    ports: List[IListeningPort] = []
    endpoint = TCP4ServerEndpoint(reactor, 0, backlog=backlog, interface="127.0.0.1")
    endpoint.listen(factory).addCallback(ports.append)
    return ports[0]


def connect(port: IListeningPort, client: Optional[Client] = None) -> Deferred[Client]:
    """Connect a L{Client} to C{port}."""
    client = client or Client()
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)
    return within(endpoint.connect(Factory.forProtocol(lambda: client)))


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


def listen_on(
    factory: Any, description: str = "tcp:0:interface=127.0.0.1"
) -> IListeningPort:
    """Listen on a server endpoint C{description} (synchronous for TCP)."""
    ports: List[IListeningPort] = []
    serverFromString(reactor, description).listen(factory).addCallback(ports.append)
    return ports[0]


def connect_port(
    port: int, bind: Optional[str] = None, tls: Any = None
) -> Deferred[Client]:
    """Connect a L{Client} to 127.0.0.1:C{port}, from C{bind} if given, over
    TLS if C{tls} (client TLS options) is."""
    client = Client()
    endpoint: Any = TCP4ClientEndpoint(
        reactor, "127.0.0.1", port, bindAddress=(bind, 0) if bind else None
    )
    if tls is not None:
        endpoint = wrapClientTLS(tls, endpoint)
    return within(endpoint.connect(Factory.forProtocol(lambda: client)))


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
