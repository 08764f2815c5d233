"""Tests for incproto.protocol on a fake transport (StringTransport).

Written as trial SynchronousTestCases: C{python -m twisted.trial tests.unit}
and pytest both run them."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple, Union

from twisted.internet.error import ConnectionAborted, ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IHalfCloseableProtocol, IPushProducer
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

import incproto.protocol as protocol_module
from incproto import IncrementFactory, IncrementProtocol
from incproto._kernel import memory
from incproto.handlers import IncrementHandler
from incproto.pools import HandlerTimeoutError, PoolProcessLostError
from incproto.protocol import (
    CLIENT_CLOSED,
    CLOSE_TIMEOUT,
    CLOSING,
    CONNECTION_LOST,
    HANDLER_ERROR,
    HANDLER_TIMEOUT,
    IDLE_TIMEOUT,
    POOL_PROCESS_LOST,
    SERVER_CLOSED,
    SHUTDOWN,
)
from tests.support.fakes import HalfCloseableTransport, SocketLikeTransport, connect_to
from tests.support.pools import Failing, ManualPool


class OrderedTransport(HalfCloseableTransport):
    """Records writes and closes in the order they happen."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: List[Union[bytes, str]] = []

    def write(self, data: bytes) -> None:
        self.calls.append(data)
        super().write(data)

    def loseWriteConnection(self) -> None:
        self.calls.append("loseWriteConnection")
        super().loseWriteConnection()

    def loseConnection(self) -> None:
        self.calls.append("loseConnection")
        super().loseConnection()


def capture(case: SynchronousTestCase) -> List[Dict[str, Any]]:
    """The log events of the test that calls it."""
    events: List[Dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    case.addCleanup(globalLogPublisher.removeObserver, events.append)
    return events


def connect(
    clock: Optional[Clock] = None, transport: Optional[StringTransport] = None
) -> Tuple[IncrementProtocol, StringTransport]:
    return connect_to(
        IncrementFactory(clock=clock or Clock(), closeTimeout=5.0), transport
    )


def connect_pooled() -> Tuple[
    ManualPool, IncrementFactory, IncrementProtocol, StringTransport
]:
    """A connection whose factory runs its jobs in a L{ManualPool}."""
    pool = ManualPool()
    factory = IncrementFactory(clock=Clock(), pool=pool)
    protocol, transport = connect_to(factory)
    return pool, factory, protocol, transport


class GreetingTests(SynchronousTestCase):
    def test_greeting_is_one_star(self) -> None:
        _, transport = connect()
        self.assertEqual(transport.value(), b"*")

    def test_registered_as_streaming_producer_on_first_input(self) -> None:
        """
        Not at connection time: under TLS, the greeting's write before the
        handshake would pause the producer and stall the handshake.
        """
        protocol, transport = connect()
        self.assertIsNone(transport.producer)
        protocol.dataReceived(b"x")
        self.assertIs(transport.producer, protocol)
        self.assertTrue(transport.streaming)
        self.assertTrue(IPushProducer.providedBy(protocol))

    def test_close_before_any_input(self) -> None:
        protocol, transport = connect()
        protocol.readConnectionLost()
        self.assertTrue(transport.disconnecting)


class StreamingTests(SynchronousTestCase):
    def test_reply_owed_as_soon_as_read(self) -> None:
        protocol, transport = connect()
        protocol.dataReceived(b"abcdef")
        protocol.dataReceived(b"^")
        self.assertEqual(transport.value(), b"*")
        protocol.dataReceived(b"f")
        self.assertEqual(transport.value(), b"*g")

    def test_protocol_table_on_one_connection(self) -> None:
        protocol, transport = connect()
        for chunk in (b"^abc$de^abte$f", b"xyz^123", b"25$^ab0000$abab"):
            protocol.dataReceived(chunk)
        self.assertEqual(transport.value(), b"*bcdbcuf23436bc1111")

    def test_byte_at_a_time(self) -> None:
        protocol, transport = connect()
        for byte in b"^ab$^kl$^80$50":
            protocol.dataReceived(bytes([byte]))
        self.assertEqual(transport.value(), b"*bclm91")

    def test_counters(self) -> None:
        protocol, _ = connect()
        protocol.dataReceived(b"xx^abc$")
        self.assertEqual((protocol.bytesReceived, protocol.bytesSent), (7, 4))


class HalfCloseTests(SynchronousTestCase):
    def test_half_closeable(self) -> None:
        """
        A client that shuts down its sending side while a reply is still
        being computed (in a pool) keeps its connection until that reply
        is written; only then does the server close.
        """
        self.assertTrue(IHalfCloseableProtocol.implementedBy(IncrementProtocol))
        pool, factory, protocol, transport = connect_pooled()
        protocol.dataReceived(b"^abc")
        protocol.readConnectionLost()
        self.assertFalse(transport.disconnecting)
        pool.finish()
        self.assertEqual(transport.value(), b"*bcd")
        self.assertTrue(transport.disconnecting)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(factory.closedBy, {CLIENT_CLOSED: 1})

    def test_read_side_closed_delivers_then_closes(self) -> None:
        """
        After the client's FIN the owed bytes stay queued for delivery, the
        producer is unregistered first (so that a paused producer cannot stall
        the close), and the connection is closed after the writes.
        """
        protocol, transport = connect()
        protocol.dataReceived(b"^abc")
        transport.pauseProducing()  # as if the client were not reading
        protocol.readConnectionLost()
        self.assertEqual(transport.value(), b"*bcd")
        self.assertIsNone(transport.producer)
        self.assertTrue(transport.disconnecting)

    def test_finish_twice_is_harmless(self) -> None:
        protocol, transport = connect()
        protocol.readConnectionLost()
        protocol.finish()
        self.assertTrue(transport.disconnecting)


class FinishTests(SynchronousTestCase):
    """
    L{IncrementProtocol.finish} before the client's end of input: FIN after
    the flush, discard input until the client closes, bounded by a timeout.
    """

    def test_shuts_down_sending_side_and_keeps_reading(self) -> None:
        protocol, transport = connect()
        protocol.dataReceived(b"^ab")
        protocol.pauseProducing()
        protocol.finish()
        assert isinstance(transport, HalfCloseableTransport)
        self.assertTrue(transport.write_closed)
        self.assertFalse(transport.disconnecting)
        self.assertIsNone(transport.producer)
        self.assertEqual(transport.producerState, "producing")

    def test_input_after_finish_is_discarded(self) -> None:
        protocol, transport = connect()
        protocol.dataReceived(b"^ab")
        protocol.finish()
        protocol.dataReceived(b"cd")
        self.assertEqual(transport.value(), b"*bc")

    def test_client_end_of_input_completes_close(self) -> None:
        clock = Clock()
        protocol, transport = connect(clock)
        protocol.finish()
        protocol.readConnectionLost()
        self.assertTrue(transport.disconnecting)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_client_that_never_closes_is_aborted(self) -> None:
        clock = Clock()
        protocol, transport = connect(clock)
        protocol.finish()
        clock.advance(4.9)
        self.assertFalse(transport.disconnected)
        clock.advance(0.1)
        self.assertTrue(transport.disconnected)

    def test_without_half_close_closes_outright(self) -> None:
        """Transports with no write-side shutdown (TLS) just close."""
        protocol, transport = connect(transport=StringTransport())
        protocol.finish()
        self.assertTrue(transport.disconnecting)


class BackpressureTests(SynchronousTestCase):
    def test_pause_stops_reading(self) -> None:
        protocol, transport = connect()
        protocol.pauseProducing()
        self.assertEqual(transport.producerState, "paused")

    def test_resume_reads_again(self) -> None:
        protocol, transport = connect()
        protocol.pauseProducing()
        protocol.resumeProducing()
        self.assertEqual(transport.producerState, "producing")

    def test_stop_producing_leaves_transport_alone(self) -> None:
        protocol, transport = connect()
        protocol.stopProducing()
        self.assertEqual(transport.producerState, "producing")


class ConnectionLossTests(SynchronousTestCase):
    def test_reset_mid_message_logs_nothing(self) -> None:
        protocol, transport = connect()
        protocol.dataReceived(b"^abc")
        protocol.connectionLost(Failure(ConnectionLost("reset by peer")))
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertEqual(transport.value(), b"*bcd")

    def test_clean_close(self) -> None:
        """
        A client that sends a message and closes gets its reply, then the
        server's FIN (a close after the flush, never an abort); the close
        is counted and logged as the client's, with the byte counts.
        """
        events = capture(self)
        factory = IncrementFactory(clock=Clock())
        protocol, transport = connect_to(factory)
        protocol.dataReceived(b"^abc$")
        protocol.readConnectionLost()
        self.assertEqual(transport.value(), b"*bcd")
        self.assertTrue(transport.disconnecting)
        self.assertFalse(transport.disconnected)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(factory.closedBy, {CLIENT_CLOSED: 1})
        self.assertEqual((factory.bytesIn, factory.bytesOut), (5, 4))
        self.assertEqual(factory.connections, set())
        [closed] = [e for e in events if "why" in e]
        self.assertEqual(
            (closed["why"], closed["bytesIn"], closed["bytesOut"]),
            (CLIENT_CLOSED, 5, 4),
        )
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_server_close_is_fin_first(self) -> None:
        """
        The server closing first writes what is owed, then shuts down its
        sending side (a FIN), and closes only when the client closes too.
        """
        factory = IncrementFactory(clock=Clock())
        transport = OrderedTransport()
        protocol, _ = connect_to(factory, transport)
        protocol.dataReceived(b"^ab")
        protocol.finish()
        protocol.dataReceived(b"c$")
        self.assertEqual(transport.calls, [b"*", b"bc", "loseWriteConnection"])
        protocol.readConnectionLost()
        self.assertEqual(transport.calls[-1], "loseConnection")
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(factory.closedBy, {SERVER_CLOSED: 1})

    def test_reset_is_counted_as_connection_lost(self) -> None:
        factory = IncrementFactory(clock=Clock())
        protocol, _ = connect_to(factory)
        protocol.connectionLost(Failure(ConnectionLost("reset by peer")))
        self.assertEqual(factory.closedBy, {CONNECTION_LOST: 1})


def idle_connection(
    timeout: float = 10.0,
) -> Tuple[IncrementFactory, IncrementProtocol, SocketLikeTransport, Clock]:
    """A connection with an idle timeout, on a transport whose C{dataBuffer}
    plays the bytes its client has not acknowledged yet."""
    clock = Clock()
    factory = IncrementFactory(clock=clock, closeTimeout=5.0, idleTimeout=timeout)
    transport = SocketLikeTransport()
    protocol, _ = connect_to(factory, transport)
    return factory, protocol, transport, clock


class IdleTimeoutTests(SynchronousTestCase):
    """
    The idle timeout closes a connection with no traffic either way; a
    client reading what it is owed, however slowly, is traffic.
    """

    def test_no_timer_without_an_idle_timeout(self) -> None:
        clock = Clock()
        connect(clock)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_silence_closes_after_the_timeout(self) -> None:
        factory, protocol, transport, clock = idle_connection()
        clock.advance(9.9)
        self.assertFalse(transport.write_closed)
        clock.advance(0.1)
        self.assertTrue(transport.write_closed)
        protocol.readConnectionLost()
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(factory.closedBy, {IDLE_TIMEOUT: 1})
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_input_restarts_the_timeout(self) -> None:
        _, protocol, transport, clock = idle_connection()
        clock.advance(6.0)
        protocol.dataReceived(b"x")  # no reply, but traffic
        clock.advance(4.0)  # the first check: idle 4s, next check in 6s
        self.assertFalse(transport.write_closed)
        self.assertEqual([c.getTime() for c in clock.getDelayedCalls()], [16.0])
        clock.advance(5.9)
        self.assertFalse(transport.write_closed)
        clock.advance(0.1)
        self.assertTrue(transport.write_closed)

    def test_replies_restart_the_timeout(self) -> None:
        _, protocol, transport, clock = idle_connection()
        clock.advance(3.0)
        protocol.dataReceived(b"^a")
        self.assertEqual(transport.value(), b"*b")
        clock.advance(7.0)
        self.assertFalse(transport.write_closed)
        clock.advance(3.0)
        self.assertTrue(transport.write_closed)

    def test_a_client_reading_slowly_is_not_idle(self) -> None:
        """Bytes owed at one check and acknowledged by the next are traffic
        (the client read them), though nothing else moved."""
        _, protocol, transport, clock = idle_connection()
        protocol.dataReceived(b"^" + b"a" * 99)
        transport.dataBuffer = b"x" * 60  # 60 of the 101 bytes unacknowledged
        clock.advance(10.0)  # idle by the clock, but owed bytes were read
        self.assertFalse(transport.write_closed)
        transport.dataBuffer = b"x" * 30
        clock.advance(10.0)  # 30 more read
        self.assertFalse(transport.write_closed)
        clock.advance(10.0)  # none read: idle
        self.assertTrue(transport.write_closed)

    def test_owed_bytes_read_since_the_last_check_are_traffic(self) -> None:
        """Owed at the last check, all read by this one: traffic now."""
        _, protocol, transport, clock = idle_connection()
        clock.advance(5.0)
        protocol.dataReceived(b"^abc")
        transport.dataBuffer = b"xxx"
        clock.advance(5.0)  # the check at 10: 3 bytes owed
        self.assertFalse(transport.write_closed)
        transport.dataBuffer = b""
        clock.advance(5.0)  # at 15: the 3 owed bytes were read since
        clock.advance(9.9)
        self.assertFalse(transport.write_closed)
        clock.advance(0.1)
        self.assertTrue(transport.write_closed)

    def test_a_client_reading_nothing_is_idle(self) -> None:
        _, protocol, transport, clock = idle_connection()
        clock.advance(5.0)
        protocol.dataReceived(b"^abc")
        transport.dataBuffer = b"xxx"  # never read
        clock.advance(5.0)  # the check at 10: written 5s ago
        self.assertFalse(transport.write_closed)
        clock.advance(5.0)
        self.assertTrue(transport.write_closed)

    def test_bytes_read_with_none_owed_are_not_traffic_again(self) -> None:
        """
        Bytes acknowledged since a check at which none were owed were
        written since, and their write counted already: the greeting, read
        at once, does not keep the connection open.
        """
        _, protocol, transport, clock = idle_connection()
        clock.advance(5.0)
        protocol.dataReceived(b"^a")  # written and acknowledged at 5
        clock.advance(5.0)  # the check at 10: 5s idle
        self.assertFalse(transport.write_closed)
        clock.advance(5.0)  # at 15: idle 10s; the read does not count twice
        self.assertTrue(transport.write_closed)

    def test_the_greeting_read_is_not_traffic(self) -> None:
        _, _, transport, clock = idle_connection()
        clock.advance(10.0)
        self.assertTrue(transport.write_closed)

    def test_without_a_socket_the_clock_alone_decides(self) -> None:
        """On a transport without a socket (no C{dataBuffer}) only reads
        and writes count."""
        clock = Clock()
        factory = IncrementFactory(clock=clock, idleTimeout=10.0)
        _protocol, transport = connect_to(factory)
        clock.advance(10.0)
        self.assertTrue(transport.write_closed)  # type: ignore[attr-defined]

    def test_finish_cancels_the_idle_timer(self) -> None:
        _, protocol, _transport, clock = idle_connection()
        protocol.finish()
        protocol.readConnectionLost()
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_connection_lost_cancels_the_idle_timer(self) -> None:
        _, protocol, _, clock = idle_connection()
        protocol.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(clock.getDelayedCalls(), [])


class CloseAccountingTests(SynchronousTestCase):
    """Each close is counted and logged with its reason, peer and time."""

    def test_access_log_fields(self) -> None:
        events = capture(self)
        clock = Clock()
        factory = IncrementFactory(clock=clock)
        clock.advance(100.0)
        protocol, _ = connect_to(factory)
        protocol.dataReceived(b"^ab")
        clock.advance(2.5)
        protocol.connectionLost(Failure(ConnectionLost()))
        [closed] = [e for e in events if "why" in e]
        self.assertEqual(
            {k: closed[k] for k in ("peer", "why", "duration", "bytesIn", "bytesOut")},
            {
                "peer": "192.168.1.1:54321",
                "why": CONNECTION_LOST,
                "duration": 2.5,
                "bytesIn": 3,
                "bytesOut": 3,
            },
        )
        self.assertEqual((factory.bytesIn, factory.bytesOut), (3, 3))
        self.assertEqual(factory.accepted, 1)

    def test_no_access_log_when_turned_off(self) -> None:
        events = capture(self)
        factory = IncrementFactory(clock=Clock(), logConnections=False)
        protocol, _ = connect_to(factory)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual([e for e in events if "why" in e], [])
        self.assertEqual(factory.closedBy, {CLIENT_CLOSED: 1})

    def test_counts_add_up_per_reason(self) -> None:
        factory = IncrementFactory(clock=Clock())
        for _ in range(2):
            connect_to(factory)[0].connectionLost(Failure(ConnectionDone()))
        connect_to(factory)[0].connectionLost(Failure(ConnectionLost()))
        self.assertEqual(factory.closedBy, {CLIENT_CLOSED: 2, CONNECTION_LOST: 1})
        self.assertEqual(factory.accepted, 3)

    def test_input_ended_then_reset_counts_as_client_closed(self) -> None:
        factory = IncrementFactory(clock=Clock())
        protocol, _ = connect_to(factory)
        protocol._inputEnded = True  # the FIN arrived, then the reset
        protocol.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(factory.closedBy, {CLIENT_CLOSED: 1})

    def test_close_timeout_is_the_reason_when_the_linger_expired(self) -> None:
        clock = Clock()
        factory = IncrementFactory(clock=clock, closeTimeout=5.0)
        protocol, transport = connect_to(factory)
        protocol.finish()
        clock.advance(5.0)
        self.assertTrue(transport.disconnected)
        protocol.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(factory.closedBy, {CLOSE_TIMEOUT: 1})

    def test_client_end_of_input_while_closing_closes(self) -> None:
        """After the server's FIN, the client's completes the close, and
        the linger deadline then bounds the flush."""
        clock = Clock()
        factory = IncrementFactory(clock=clock, closeTimeout=5.0)
        protocol, transport = connect_to(factory)
        protocol.finish(SHUTDOWN)
        self.assertFalse(transport.disconnecting)
        protocol.readConnectionLost()
        self.assertTrue(transport.disconnecting)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(factory.closedBy, {SHUTDOWN: 1})

    def test_finish_after_end_of_input_closes_with_a_deadline(self) -> None:
        clock = Clock()
        factory = IncrementFactory(clock=clock, closeTimeout=5.0)
        protocol, transport = connect_to(factory)
        protocol._inputEnded = True
        protocol.finish(SERVER_CLOSED)
        self.assertTrue(transport.disconnecting)
        self.assertFalse(transport.disconnected)
        clock.advance(5.0)
        self.assertTrue(transport.disconnected)

    def test_finish_without_a_transport_does_nothing(self) -> None:
        protocol = IncrementProtocol()
        protocol.factory = IncrementFactory(clock=Clock())
        protocol.finish()
        self.assertFalse(protocol._readPauses & CLOSING)


class HandlerFailureTests(SynchronousTestCase):
    """A failed job closes only its connection, with a reason and a log line."""

    def setUp(self) -> None:
        self.events = capture(self)
        self.pool = ManualPool()
        self.factory = IncrementFactory(clock=Clock(), pool=self.pool)
        self.protocol, self.transport = connect_to(self.factory)
        self.protocol.dataReceived(b"^abc")

    def fail(self, error: Exception) -> None:
        _, done = self.pool.jobs.pop()
        done(False, Failure(error))
        self.protocol.readConnectionLost()
        self.protocol.connectionLost(Failure(ConnectionDone()))

    def test_timeout_is_a_one_line_warning(self) -> None:
        self.fail(HandlerTimeoutError("the handler ran longer than 1s"))
        self.assertEqual(self.factory.closedBy, {HANDLER_TIMEOUT: 1})
        self.assertEqual(self.factory.handlerErrors, 0)
        [warning] = [e for e in self.events if "error" in e]
        self.assertEqual(
            formatEvent(warning),
            "the handler ran longer than 1s; closing the connection from "
            "192.168.1.1:54321",
        )
        self.assertNotIn("log_failure", warning)
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_lost_process_is_a_one_line_warning(self) -> None:
        self.fail(PoolProcessLostError("the process died"))
        self.assertEqual(self.factory.closedBy, {POOL_PROCESS_LOST: 1})
        [warning] = [e for e in self.events if "error" in e]
        self.assertEqual(
            formatEvent(warning),
            "the process died; closing the connection from 192.168.1.1:54321",
        )

    def test_handler_exception_is_logged_with_its_traceback(self) -> None:
        self.fail(RuntimeError("broke"))
        self.assertEqual(self.factory.closedBy, {HANDLER_ERROR: 1})
        self.assertEqual(self.factory.handlerErrors, 1)
        [logged] = [e for e in self.events if "log_failure" in e]
        self.assertEqual(
            formatEvent(logged),
            f"handler {self.factory.handler!r} failed; closing the connection "
            "from 192.168.1.1:54321",
        )
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class FactoryDrainTests(SynchronousTestCase):
    """L{IncrementFactory.drain} and L{IncrementFactory.whenEmpty}."""

    def test_empty_at_once_without_connections(self) -> None:
        factory = IncrementFactory(clock=Clock())
        self.assertIsNone(self.successResultOf(factory.whenEmpty()))
        self.assertIsNone(self.successResultOf(factory.drain()))

    def test_when_empty_fires_once_the_last_connection_closes(self) -> None:
        factory = IncrementFactory(clock=Clock())
        first, _ = connect_to(factory)
        second, _ = connect_to(factory)
        waiters = [factory.whenEmpty(), factory.whenEmpty()]
        first.connectionLost(Failure(ConnectionDone()))
        self.assertNoResult(waiters[0])
        second.connectionLost(Failure(ConnectionDone()))
        for d in waiters:
            self.assertIsNone(self.successResultOf(d))
        self.assertEqual(factory._empty, [])
        # fired once: a later connection and close fire nothing twice
        third, _ = connect_to(factory)
        later = factory.whenEmpty()
        third.connectionLost(Failure(ConnectionDone()))
        self.successResultOf(later)

    def test_drain_shuts_every_connection_down(self) -> None:
        factory = IncrementFactory(clock=Clock())
        connections = [connect_to(factory) for _ in range(2)]
        for protocol, _ in connections:
            protocol.dataReceived(b"^ab")
        drained = factory.drain()
        self.assertNoResult(drained)
        for protocol, transport in connections:
            self.assertEqual(transport.value(), b"*bc")
            self.assertTrue(transport.write_closed)  # type: ignore[attr-defined]
            protocol.dataReceived(b"c")  # read only to be discarded
            self.assertEqual(transport.value(), b"*bc")
            protocol.readConnectionLost()
            protocol.connectionLost(Failure(ConnectionDone()))
        self.successResultOf(drained)
        self.assertEqual(factory.closedBy, {SHUTDOWN: 2})

    def test_drain_waits_for_the_pool_then_closes(self) -> None:
        pool, factory, protocol, transport = connect_pooled()
        protocol.dataReceived(b"^ab")
        factory.drain()
        self.assertEqual(transport.producerState, "paused")  # reads no more
        self.assertFalse(transport.write_closed)  # type: ignore[attr-defined]
        protocol.resumeProducing()  # the client reads: still paused for work
        self.assertEqual(transport.producerState, "paused")
        pool.finish()
        self.assertEqual(transport.value(), b"*bc")
        self.assertTrue(transport.write_closed)  # type: ignore[attr-defined]
        protocol.readConnectionLost()
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(factory.closedBy, {SHUTDOWN: 1})

    def test_a_connection_aborted_while_its_work_runs_closed_for_shutdown(
        self,
    ) -> None:
        """The drain deadline's abort of a connection whose job never ended
        was logged as "connection lost" (stranger trial)."""
        _, factory, protocol, transport = connect_pooled()
        protocol.dataReceived(b"^ab")
        factory.drain()
        protocol.abort()
        self.assertTrue(transport.disconnected)
        protocol.connectionLost(Failure(ConnectionAborted()))
        self.assertEqual(factory.closedBy, {SHUTDOWN: 1})

    def test_an_abort_keeps_the_reason_of_a_close_under_way(self) -> None:
        factory = IncrementFactory(clock=Clock())
        protocol, _ = connect_to(factory)
        protocol.dataReceived(b"^!")
        protocol.finish(IDLE_TIMEOUT)
        protocol.abort()
        protocol.connectionLost(Failure(ConnectionAborted()))
        self.assertEqual(factory.closedBy, {IDLE_TIMEOUT: 1})

    def test_shutdown_with_an_idle_pool_closes_at_once(self) -> None:
        _, _, protocol, transport = connect_pooled()
        protocol.shutdown()
        self.assertTrue(transport.write_closed)  # type: ignore[attr-defined]


class PoolFlowTests(SynchronousTestCase):
    def test_client_end_of_input_waits_then_counts_as_client_closed(self) -> None:
        pool, factory, protocol, transport = connect_pooled()
        protocol.dataReceived(b"^ab")
        protocol.readConnectionLost()
        self.assertFalse(transport.disconnecting)
        pool.finish()
        self.assertTrue(transport.disconnecting)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(factory.closedBy, {CLIENT_CLOSED: 1})

    def test_work_done_without_end_of_input_keeps_the_connection(self) -> None:
        pool, _, protocol, transport = connect_pooled()
        protocol.dataReceived(b"^ab")
        pool.finish()
        self.assertEqual(transport.value(), b"*bc")
        self.assertFalse(transport.write_closed)  # type: ignore[attr-defined]
        self.assertFalse(transport.disconnecting)

    def test_paused_writes_hold_the_pool_reply(self) -> None:
        pool, _, protocol, transport = connect_pooled()
        protocol.dataReceived(b"^ab")
        protocol.pauseProducing()
        pool.finish()
        self.assertEqual(transport.value(), b"*")
        protocol.resumeProducing()
        self.assertEqual(transport.value(), b"*bc")


class PausingTransport(HalfCloseableTransport):
    """A transport whose write buffer fills at every write: it pauses its
    producer at once, as a TCP transport does when its client stops reading."""

    def write(self, data: bytes) -> None:
        super().write(data)
        if self.producer is not None:
            self.producer.pauseProducing()


class MoreProtocolTests(SynchronousTestCase):
    def test_a_new_connection_is_outside_any_message(self) -> None:
        protocol, _ = connect()
        self.assertIs(protocol.inMessage, False)

    def test_counters_add_up_over_reads(self) -> None:
        protocol, _ = connect()
        protocol.dataReceived(b"xx^a")
        protocol.dataReceived(b"bc$")
        self.assertEqual((protocol.bytesReceived, protocol.bytesSent), (7, 4))

    def test_finish_cancels_the_idle_timer_at_once(self) -> None:
        _, protocol, _, clock = idle_connection()
        protocol.finish()
        # only the close deadline is left
        self.assertEqual([c.getTime() for c in clock.getDelayedCalls()], [5.0])

    def test_handler_errors_are_counted_and_their_log_rate_limited(self) -> None:
        """
        Every handler error is counted; the first is logged with its
        traceback, the others within C{faultLogInterval} only counted, in
        one line at the interval's end (issue 22).
        """
        clock = Clock()
        factory = IncrementFactory(clock=clock, handler=Failing())  # type: ignore[arg-type]
        events = capture(self)
        for _ in range(5):
            connect_to(factory)[0].dataReceived(b"^a")
        clock.advance(factory.faultLogInterval)
        self.assertEqual(factory.handlerErrors, 5)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        lines = [formatEvent(e) for e in events if "handler" in formatEvent(e)]
        self.assertEqual(
            lines,
            [
                "handler tests.support.pools.Failing failed; closing the "
                "connection from 192.168.1.1:54321",
                "4 more handler faults in the last 10.0s (not logged)",
            ],
        )
        factory.doStop()

    def test_a_pool_reply_is_traffic(self) -> None:
        """A reply written long after its request restarts the idle timeout."""
        pool = ManualPool()
        clock = Clock()
        factory = IncrementFactory(clock=clock, pool=pool, idleTimeout=10.0)
        protocol, transport = connect_to(factory)
        protocol.dataReceived(b"^a")
        clock.advance(5.0)
        pool.finish()
        clock.advance(5.0)
        self.assertFalse(transport.write_closed)  # type: ignore[attr-defined]
        clock.advance(5.0)
        self.assertTrue(transport.write_closed)  # type: ignore[attr-defined]

    def test_work_catching_up_does_not_resume_a_client_not_reading(self) -> None:
        """
        A reply that fills the write buffer pauses the protocol; the work
        that falls under its limit in the same step must not resume reading.
        """
        pool = ManualPool()
        factory = IncrementFactory(clock=Clock(), pool=pool, workBuffer=4)
        protocol, transport = connect_to(factory, PausingTransport())
        protocol.dataReceived(b"^abcd")  # a job of 2, 2 waiting: the limit
        self.assertEqual(transport.producerState, "paused")
        pool.finish()  # the reply pauses writes; the work is under its limit
        self.assertEqual(transport.value(), b"*bc")
        self.assertEqual(transport.producerState, "paused")
        protocol.resumeProducing()
        self.assertEqual(transport.producerState, "producing")

    def test_draining_does_not_resume_reading_while_work_is_left(self) -> None:
        pool = ManualPool()
        factory = IncrementFactory(clock=Clock(), pool=pool, workBuffer=4)
        protocol, transport = connect_to(factory)
        protocol.dataReceived(b"^abcd")
        protocol.shutdown()
        pool.finish()  # the next job goes in: under the limit, but draining
        self.assertEqual(transport.value(), b"*bc")
        self.assertEqual(transport.producerState, "paused")
        self.assertFalse(transport.write_closed)  # type: ignore[attr-defined]
        pool.finish()
        self.assertEqual(transport.value(), b"*bcde")
        self.assertTrue(transport.write_closed)  # type: ignore[attr-defined]

    def test_draining_does_not_resume_reading_when_the_client_catches_up(
        self,
    ) -> None:
        """The pool caught up but still has work; the client then reads its
        replies: while draining, nothing more is read all the same."""
        pool = ManualPool()
        factory = IncrementFactory(clock=Clock(), pool=pool, workBuffer=4)
        protocol, transport = connect_to(factory)
        protocol.dataReceived(b"^abcd")
        protocol.shutdown()
        pool.finish()  # work no longer blocks reading; one more job left
        protocol.pauseProducing()  # the client stops reading ...
        protocol.resumeProducing()  # ... and catches up
        self.assertEqual(transport.producerState, "paused")

    def test_bytes_read_since_an_unowed_check_are_not_traffic(self) -> None:
        """A write at 12, read at once: the checks at 15 and 22 see it read
        with nothing owed at 10, so only the write counts (idle at 22)."""
        _, protocol, transport, clock = idle_connection()
        clock.advance(5.0)
        protocol.dataReceived(b"^a")
        clock.advance(7.0)  # the check at 10 saw nothing owed
        protocol.dataReceived(b"b")
        clock.advance(9.9)
        self.assertFalse(transport.write_closed)
        clock.advance(0.1)
        self.assertTrue(transport.write_closed)

    def test_one_owed_byte_read_later_is_traffic(self) -> None:
        _, protocol, transport, clock = idle_connection()
        clock.advance(5.0)
        protocol.dataReceived(b"^abc")
        transport.dataBuffer = b"x"  # one byte owed at the check at 10
        clock.advance(5.0)
        transport.dataBuffer = b""
        clock.advance(10.0)  # at 20 it was read: traffic
        self.assertFalse(transport.write_closed)
        clock.advance(10.0)
        self.assertTrue(transport.write_closed)


class FactoryTests(SynchronousTestCase):
    def test_defaults(self) -> None:
        from twisted.internet import reactor

        factory = IncrementFactory()
        self.assertIs(factory.clock, reactor)
        self.assertEqual(
            (factory.closeTimeout, factory.idleTimeout, factory.workBuffer),
            (30.0, None, 256 * 1024),
        )

    def test_handler_or_pool_not_both(self) -> None:
        error = self.assertRaises(
            ValueError, IncrementFactory, handler=IncrementHandler(), pool=ManualPool()
        )
        self.assertEqual(
            str(error), "give a handler or a pool (which has one), not both"
        )

    def test_the_pool_brings_its_handler(self) -> None:
        handler = IncrementHandler()
        factory = IncrementFactory(clock=Clock(), pool=ManualPool(handler))
        self.assertIs(factory.handler, handler)

    def test_closes_go_to_the_access_log_given(self) -> None:
        records: List[Tuple[Any, ...]] = []

        class Recording:
            def record(self, *args: Any) -> None:
                records.append(args)

        clock = Clock()
        factory = IncrementFactory(clock=clock, accessLog=Recording())
        protocol, _ = connect_to(factory)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(records, [("192.168.1.1:54321", CLIENT_CLOSED, 0.0, 0, 1)])

    def test_byte_totals_add_up_over_connections(self) -> None:
        factory = IncrementFactory(clock=Clock())
        for data in (b"^ab", b"^abc"):
            protocol, _ = connect_to(factory)
            protocol.dataReceived(data)
            protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual((factory.bytesIn, factory.bytesOut), (7, 7))


class GiveBackTests(SynchronousTestCase):
    """Connections that held megabytes give memory back when they close
    (issue 22)."""

    def test_a_big_connection_gives_memory_back_within_a_second(self) -> None:
        calls: List[None] = []
        self.patch(protocol_module, "give_back", lambda: calls.append(None))
        clock = Clock()
        factory = IncrementFactory(clock=clock)
        for size in (10, 2 * 1024 * 1024, 2 * 1024 * 1024):
            protocol, _ = connect_to(factory)
            protocol.dataReceived(b"^" + b"a" * size + b"$")
            protocol.connectionLost(Failure(ConnectionDone()))
        clock.advance(0.5)
        self.assertEqual(calls, [])
        clock.advance(0.5)
        self.assertEqual(calls, [None])  # once for both
        factory.doStop()

    def test_small_connections_do_not(self) -> None:
        clock = Clock()
        factory = IncrementFactory(clock=clock)
        protocol, _ = connect_to(factory)
        protocol.dataReceived(b"^abc$")
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_give_back_is_harmless(self) -> None:
        self.assertIn(memory.give_back(), (True, False))
