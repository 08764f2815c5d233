"""Test helpers: a recording client protocol and bounded waits on real TCP."""

from __future__ import annotations

from typing import Callable, List, Optional, Tuple, TypeVar

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.interfaces import IListeningPort, IPullProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from incproto import IncrementFactory, IncrementProtocol

T = TypeVar("T")
TIMEOUT = 30.0


def within(d: Deferred[T], seconds: float = TIMEOUT) -> Deferred[T]:
    """Fail C{d} with TimeoutError if it has not fired after C{seconds}."""
    return d.addTimeout(seconds, reactor)


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
