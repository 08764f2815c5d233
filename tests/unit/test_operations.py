"""Tests for what operators rely on, on fake transports and a Clock: idle
timeouts, close reasons and logs, the graceful drain and the ordered stop
(the open files limit: test_filelimit)."""

from __future__ import annotations

from typing import Any, Dict, List

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from incproto import IncrementFactory
from incproto.serving.service import (
    ABORT_GRACE,
    DrainingService,
    SequentialMultiService,
)
from tests.support.fakes import connect_to
from tests.support.pools import ManualPool


class OperationsTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.events: List[Dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def closes(self) -> List[Dict[str, Any]]:
        return [
            e
            for e in self.events
            if e.get("log_format", "").startswith("connection from {peer} closed")
        ]


class IdleTimeoutTests(OperationsTestCase):
    def test_silent_connection_is_closed(self) -> None:
        factory = IncrementFactory(clock=self.clock, idleTimeout=10.0)
        protocol, transport = connect_to(factory)
        self.clock.advance(9.9)
        self.assertFalse(transport.write_closed)
        self.clock.advance(0.1)
        self.assertTrue(transport.write_closed)  # FIN, then wait for the client
        protocol.readConnectionLost()
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(factory.closedBy, {"idle timeout": 1})

    def test_traffic_keeps_it_open(self) -> None:
        factory = IncrementFactory(clock=self.clock, idleTimeout=10.0)
        protocol, transport = connect_to(factory)
        for _ in range(5):
            self.clock.advance(6.0)
            protocol.dataReceived(b"^x$")
        self.assertFalse(transport.write_closed)
        self.clock.advance(10.0)
        self.assertTrue(transport.write_closed)

    def test_off_by_default(self) -> None:
        _, transport = connect_to(IncrementFactory(clock=self.clock))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(3600)
        self.assertFalse(transport.write_closed)

    def test_timer_is_cancelled_on_close(self) -> None:
        factory = IncrementFactory(clock=self.clock, idleTimeout=10.0)
        protocol, _ = connect_to(factory)
        protocol.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(self.clock.getDelayedCalls(), [])


class CloseLogTests(OperationsTestCase):
    def test_close_is_logged_with_its_fields(self) -> None:
        factory = IncrementFactory(clock=self.clock)
        protocol, _ = connect_to(factory)
        protocol.dataReceived(b"^abc$")
        self.clock.advance(2.5)
        protocol.readConnectionLost()
        protocol.connectionLost(Failure(ConnectionDone()))
        [event] = self.closes()
        self.assertEqual(
            {k: event[k] for k in ("why", "bytesIn", "bytesOut", "duration")},
            {"why": "client closed", "bytesIn": 5, "bytesOut": 4, "duration": 2.5},
        )
        self.assertEqual(event["peer"], "192.168.1.1:54321")
        self.assertEqual(
            (factory.accepted, factory.bytesIn, factory.bytesOut), (1, 5, 4)
        )
        self.assertEqual(factory.connections, set())

    def test_reasons(self) -> None:
        factory = IncrementFactory(clock=self.clock)
        reset, _ = connect_to(factory)
        reset.connectionLost(Failure(ConnectionLost()))
        clean, _ = connect_to(factory)
        clean.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(factory.closedBy, {"connection lost": 1, "client closed": 1})


class ShutdownDrainTests(OperationsTestCase):
    """The graceful stop as operators see it: every connection closed with a
    FIN once its work is done, and the draining service's timeout."""

    def test_drain_closes_every_connection_with_a_fin(self) -> None:
        factory = IncrementFactory(clock=self.clock)
        connections = [connect_to(factory) for _ in range(3)]
        drained: List[None] = []
        factory.drain().addCallback(drained.append)
        self.assertTrue(all(t.write_closed for _, t in connections))
        for protocol, _ in connections:
            self.assertEqual(drained, [])
            protocol.readConnectionLost()
            protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(drained, [None])
        self.assertEqual(factory.closedBy, {"shutdown": 3})

    def test_drain_waits_for_the_pool_and_stops_reading(self) -> None:
        pool = ManualPool()
        factory = IncrementFactory(clock=self.clock, pool=pool)
        protocol, transport = connect_to(factory)
        protocol.dataReceived(b"^abc")
        factory.drain()
        self.assertEqual(transport.producerState, "paused")
        self.assertFalse(transport.write_closed)
        pool.finish()
        self.assertEqual(transport.value(), b"*bcd")
        self.assertTrue(transport.write_closed)

    def test_nothing_to_drain(self) -> None:
        self.assertTrue(IncrementFactory(clock=self.clock).drain().called)

    def test_draining_service_aborts_after_its_timeout(self) -> None:
        factory = IncrementFactory(clock=self.clock)
        _, transport = connect_to(factory)
        service = DrainingService(factory, 5.0, self.clock)
        service.startService()
        stopped: List[Any] = []
        service.stopService().addCallback(stopped.append)
        self.clock.advance(4.9)
        self.assertFalse(transport.disconnected)
        self.clock.advance(0.1)
        self.assertTrue(transport.disconnected)  # aborted
        self.assertEqual(stopped, [])  # waiting for the abort to be reported
        self.clock.advance(ABORT_GRACE)  # a fake transport never reports it
        self.assertEqual(len(stopped), 1)


class Recording(Service):
    def __init__(
        self, name: str, log: List[str], wait: Deferred[None] | None = None
    ) -> None:
        self.setName(name)
        self.record = log
        self.wait = wait

    def stopService(self) -> Any:
        self.record.append(self.name)
        return self.wait


class SequentialStopTests(SynchronousTestCase):
    def test_children_stop_one_after_another_in_reverse(self) -> None:
        stopped: List[str] = []
        slow: Deferred[None] = Deferred()
        parent = SequentialMultiService()
        for name, wait in (("pool", None), ("drain", slow), ("listener", None)):
            Recording(name, stopped, wait).setServiceParent(parent)
        parent.startService()
        done: List[Any] = []
        parent.stopService().addCallback(done.append)
        self.assertEqual((stopped, done), (["listener", "drain"], []))
        slow.callback(None)
        self.assertEqual(stopped, ["listener", "drain", "pool"])
        self.assertEqual(len(done), 1)
