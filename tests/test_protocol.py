"""Tests for incproto.protocol on a fake transport (StringTransport).

Written as trial SynchronousTestCases: C{python -m twisted.trial tests} and
pytest both run them."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple, Union

from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IHalfCloseableProtocol, IPushProducer
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from incproto import IncrementFactory, IncrementProtocol
from incproto.protocol import CLIENT_CLOSED, CONNECTION_LOST, SERVER_CLOSED
from tests.fakes import HalfCloseableTransport, connect_to
from tests.test_offload import ManualPool


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
        pool = ManualPool()
        factory = IncrementFactory(clock=Clock(), pool=pool)
        protocol, transport = connect_to(factory)
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
