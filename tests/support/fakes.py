"""Fake transports, a fake listening port, a clock that spawns fake
processes, and an in-memory network, for tests that run without a reactor."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Set, Tuple, TypeVar

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IHalfCloseableDescriptor,
    IHalfCloseableProtocol,
    IProtocolFactory,
)
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.test import iosim
from twisted.test.iosim import FakeTransport, IOPump
from zope.interface import implementer

from incproto import IncrementFactory, IncrementProtocol
from incproto.limit import ConnectionLimit
from incproto.workers.process import WorkerProcess

T = TypeVar("T")


class HalfCloseableTransport(StringTransport):
    """
    A StringTransport that can shut down its sending side, as TCP can.

    @ivar write_closed: whether C{loseWriteConnection} was called.
    """

    write_closed = False

    def loseWriteConnection(self) -> None:
        self.write_closed = True


def connect_to(
    factory: IncrementFactory, transport: Optional[StringTransport] = None
) -> Tuple[IncrementProtocol, StringTransport]:
    """Connect a protocol of C{factory} to C{transport} (a half-closeable
    StringTransport by default)."""
    protocol = factory.buildProtocol(None)
    assert isinstance(protocol, IncrementProtocol)
    transport = transport or HalfCloseableTransport()
    protocol.makeConnection(transport)
    return protocol, transport


class SocketLikeTransport(HalfCloseableTransport):
    """
    A half-closeable StringTransport with the write buffer attributes of a
    Twisted socket transport, so that L{incproto._kernel.sockets.unacknowledged}
    reads C{len(dataBuffer)} as the bytes the client has not acknowledged
    (set it to play a client that reads slowly, or not at all).
    """

    dataBuffer = b""
    offset = 0
    _tempDataLen = 0

    def fileno(self) -> int:
        raise OSError("no socket")


@implementer(IHalfCloseableDescriptor)
class HalfCloseableFakeTransport(FakeTransport):
    """
    An C{iosim} transport that can shut down its sending side: once what it
    wrote is delivered, L{Loopback} tells the peer its input ended.

    @ivar write_closed: whether C{loseWriteConnection} was called.
    """

    write_closed = False

    def loseWriteConnection(self) -> None:
        self.write_closed = True


class Loopback:
    """
    Serves the TCP connections a C{MemoryReactorClock} was asked for with
    C{server}'s protocols, in memory: L{pump} connects them and delivers
    every byte, half-close and close, without the reactor running, so that
    a test drives time alone with the clock.
    """

    def __init__(self, reactor: MemoryReactorClock, server: IProtocolFactory) -> None:
        self.reactor = reactor
        self.server = server
        self._pumps: List[IOPump] = []
        self._ended: Set[int] = set()

    def pump(self) -> None:
        """Connect, deliver and close until nothing moves."""
        moved = True
        while moved:
            moved = self._connect()
            for pump in self._pumps:
                moved = pump.flush(advanceClock=False) or moved
                moved = self._half_close(pump.clientIO, pump.serverIO) or moved
                moved = self._half_close(pump.serverIO, pump.clientIO) or moved

    def _connect(self) -> bool:
        connected = False
        while self.reactor.tcpClients:
            host, port, factory, _, _ = self.reactor.tcpClients.pop(0)
            self.reactor.connectors.pop(0)
            number = len(self._pumps) + 1
            client_address = IPv4Address("TCP", "127.0.0.1", 40000 + number)
            server_address = IPv4Address("TCP", host, port)
            server = self.server.buildProtocol(client_address)
            client = factory.buildProtocol(server_address)
            assert server is not None and client is not None
            self._pumps.append(
                iosim.connect(
                    server,
                    HalfCloseableFakeTransport(
                        server, True, server_address, client_address
                    ),
                    client,
                    HalfCloseableFakeTransport(
                        client, False, client_address, server_address
                    ),
                    greet=False,
                    clock=self.reactor,
                )
            )
            connected = True
        return connected

    def _half_close(
        self, writer: HalfCloseableFakeTransport, reader: HalfCloseableFakeTransport
    ) -> bool:
        """Tell C{reader}'s protocol its input ended, once C{writer} shut
        down its sending side and everything it wrote was delivered."""
        if (
            not writer.write_closed
            or writer.stream
            or writer.disconnected
            or reader.disconnected
            or id(writer) in self._ended
        ):
            return False
        self._ended.add(id(writer))
        protocol = reader.protocol
        if IHalfCloseableProtocol.providedBy(protocol):
            protocol.readConnectionLost()
        else:
            writer.loseConnection()
        return True


def in_memory(run: Deferred[T], network: Loopback, limit: float = 60.0) -> T:
    """
    Deliver C{network}'s bytes and jump its clock from one delayed call to
    the next until C{run} has fired (within C{limit} simulated seconds).

    @return: C{run}'s result.
    """
    outcome: List[Any] = []
    run.addBoth(outcome.append)
    clock = network.reactor
    network.pump()
    while not outcome:
        calls = clock.getDelayedCalls()
        assert calls and clock.seconds() < limit, "the run never ended"
        clock.advance(max(min(c.getTime() for c in calls) - clock.seconds(), 0))
        network.pump()
    if isinstance(outcome[0], Failure):
        outcome[0].raiseException()
    result: T = outcome[0]
    return result


def limited_network(limit: int) -> Loopback:
    """incproto behind a limit of C{limit} connections, in memory, on the
    network's C{MemoryReactorClock}."""
    clock = MemoryReactorClock()
    server = ConnectionLimit(IncrementFactory(clock=clock), limit, clock=clock)
    return Loopback(clock, server)


class FakePort:
    """The parts of a Twisted listening port that AcceptControl uses."""

    _logger = Logger(namespace="twisted.internet.tcp.Port")
    numberAccepts = 100
    connected = True
    disconnecting = False

    def __init__(self) -> None:
        self.reading = True

    def doRead(self) -> None:
        pass

    def stopReading(self) -> None:
        self.reading = False

    def startReading(self) -> None:
        self.reading = True


class FakeProcess:
    """A spawned process: records the signals it is sent, and writes."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.signals: List[str] = []
        self.written: List[Any] = []

    def signalProcess(self, name: str) -> None:
        self.signals.append(name)

    def writeToChild(self, fd: int, data: bytes) -> None:
        self.written.append((fd, data))


class ProcessClock(Clock):
    """A clock that also spawns fake processes."""

    def __init__(self) -> None:
        super().__init__()
        self.spawned: List[Dict[str, Any]] = []

    def spawnProcess(
        self,
        protocol: WorkerProcess,
        executable: str,
        args: List[str],
        env: Dict[str, str],
        childFDs: Dict[int, Any],
    ) -> FakeProcess:
        process = FakeProcess(1000 + len(self.spawned))
        protocol.makeConnection(process)  # type: ignore[arg-type]
        self.spawned.append(
            {"protocol": protocol, "args": args, "childFDs": childFDs, "env": env}
        )
        return process
