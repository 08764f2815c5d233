"""Tests for incproto.serving.service.ListeningService."""

from __future__ import annotations

from typing import Any, Dict, List

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.error import ConnectionAborted
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.internet.protocol import Factory
from twisted.internet.testing import MemoryReactor
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from incproto import IncrementFactory
from incproto.serving.service import ListeningService


@implementer(IStreamServerEndpoint)
class SlowEndpoint:
    """An endpoint whose listen() answers later."""

    def __init__(self) -> None:
        self.listening: Deferred[Any] = Deferred()

    def listen(self, factory: Factory) -> Deferred[Any]:
        return self.listening


class StoppablePort:
    """Just enough of an IListeningPort."""

    stopped = False

    def getHost(self) -> IPv4Address:
        return IPv4Address("TCP", "127.0.0.1", 9191)

    def stopListening(self) -> None:
        self.stopped = True


class ListeningServiceTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.events: List[Dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def test_logs_the_address_it_listens_on(self) -> None:
        reactor = MemoryReactor()
        endpoint = TCP4ServerEndpoint(reactor, 9191)
        service = ListeningService(endpoint, IncrementFactory(clock=reactor), "9191")
        service.startService()
        [event] = [e for e in self.events if "address" in e]
        self.assertEqual((event["address"], event["port"]), ("0.0.0.0:9191", 9191))
        self.assertEqual(event["log_format"], "{what} listening on {address}")
        self.assertEqual(event["what"], "incproto")
        self.assertIsNotNone(service.port)

    def test_stop_stops_listening(self) -> None:
        endpoint = SlowEndpoint()
        port = StoppablePort()
        endpoint.listening.callback(port)
        service = ListeningService(endpoint, IncrementFactory(), "fake:")
        service.startService()
        service.stopService()
        self.assertTrue(port.stopped)
        self.assertIsNone(service.port)
        self.assertFalse(service.running)

    def test_late_failure_is_logged(self) -> None:
        endpoint = SlowEndpoint()
        service = ListeningService(endpoint, IncrementFactory(), "slow:")
        service.startService()
        endpoint.listening.errback(OSError("no such socket"))
        [failure] = self.flushLoggedErrors(OSError)
        self.assertEqual(failure.getErrorMessage(), "no such socket")

    def test_stop_before_listening_cancels(self) -> None:
        endpoint = SlowEndpoint()
        service = ListeningService(endpoint, IncrementFactory(), "slow:")
        service.startService()
        service.stopService()
        self.assertTrue(endpoint.listening.called)
        self.assertEqual(self.flushLoggedErrors(), [])


class RecordingAccessLog:
    """An access log that keeps its lines."""

    def __init__(self, lines: List[str]) -> None:
        self.lines = lines

    def record(
        self, peer: str, why: str, duration: float, bytesIn: int, bytesOut: int
    ) -> None:
        self.lines.append(f"{peer} ({why})")


class OneStopDeadlineTests(SynchronousTestCase):
    def test_the_drain_and_the_pool_share_one_timeout(self) -> None:
        """
        A connection that never finishes holds the drain for the whole
        timeout; the pool, whose job never finishes either, then gets what
        is left (nothing), not a timeout of its own.
        """
        from twisted.internet.task import Clock

        from incproto.serving.service import DrainingService, SequentialMultiService
        from tests.support.fakes import connect_to
        from tests.unit.test_pools import ManualPool

        pool = ManualPool(drainTimeout=10.0)
        clock: Clock = pool.reactor  # one clock for all
        factory = IncrementFactory(clock=clock, pool=pool)
        service = SequentialMultiService(10.0, clock)
        pool.setServiceParent(service)
        DrainingService(factory, 10.0, clock).setServiceParent(service)
        service.startService()
        protocol, transport = connect_to(factory)
        aborted: List[bool] = []

        def abort() -> None:  # as Twisted does: reported on the next turn
            aborted.append(True)
            clock.callLater(0, protocol.connectionLost, Failure(ConnectionAborted()))

        transport.abortConnection = abort  # type: ignore[method-assign]
        protocol.dataReceived(b"^stuck")
        stopped: List[Any] = []
        service.stopService().addCallback(stopped.append)
        clock.advance(9.9)
        self.assertEqual((stopped, pool.stopped), ([], None))
        clock.advance(0.1)  # abort; reported on the next turn, then the pool
        self.assertEqual(aborted, [True])
        self.assertEqual((len(stopped), pool.stopped), (1, False))

    def test_the_drain_logs_what_it_aborted_before_it_ends(self) -> None:
        """
        A connection aborted at the drain deadline is closed (counted, and
        its line logged) before the drain's Deferred fires, so a process
        that exits right after the stop loses no close line.
        """
        from twisted.internet.task import Clock

        from incproto.serving.service import ABORT_GRACE, DrainingService
        from tests.support.fakes import connect_to

        clock = Clock()
        lines: List[str] = []
        factory = IncrementFactory(clock=clock, accessLog=RecordingAccessLog(lines))
        drainer = DrainingService(factory, 5.0, clock)
        drainer.startService()
        protocol, transport = connect_to(factory)
        transport.abortConnection = lambda: clock.callLater(  # type: ignore[method-assign]
            0, protocol.connectionLost, Failure(ConnectionAborted())
        )
        protocol.dataReceived(b"^ab")
        logged_by_then: List[int] = []
        drainer.stopService().addCallback(lambda _: logged_by_then.append(len(lines)))
        clock.advance(5.0)
        self.assertEqual(logged_by_then, [1])
        self.assertIn("(shutdown)", lines[0])
        # An abort never reported does not hold the stop past the grace.
        factory = IncrementFactory(clock=clock, accessLog=RecordingAccessLog(lines))
        drainer = DrainingService(factory, 5.0, clock)
        drainer.startService()
        _, transport = connect_to(factory)
        transport.abortConnection = lambda: None  # type: ignore[method-assign]
        again: List[Any] = []
        drainer.stopService().addCallback(again.append)
        clock.advance(5.0)
        clock.advance(ABORT_GRACE / 2)
        self.assertEqual(again, [])
        clock.advance(ABORT_GRACE / 2)
        self.assertEqual(len(again), 1)
