"""Tests for incproto._kernel.closing: the FIN-first close and its progress deadline,
on a fake socket transport whose unacknowledged bytes a test sets."""

from __future__ import annotations

import socket
from typing import List

from twisted.internet import tcp
from twisted.internet.abstract import FileDescriptor
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from incproto._kernel.closing import (
    CloseDeadline,
    close_ended,
    close_flushed_now,
    close_politely,
)
from incproto._kernel.timers import cancel
from tests.support.fakes import SocketLikeTransport


class ClosePolitelyTests(SynchronousTestCase):
    def test_fin_first_and_input_is_read_on(self) -> None:
        """
        A half-closeable transport gets its sending side shut down (a FIN
        after the flush), not a close, and reading resumes so that input
        is drained rather than left unread (which would make a reset).
        """
        transport = SocketLikeTransport()
        transport.write(b"owed")
        transport.pauseProducing()
        close_politely(transport, Clock(), 5.0)
        self.assertTrue(transport.write_closed)
        self.assertFalse(transport.disconnecting)
        self.assertEqual(transport.producerState, "producing")
        self.assertEqual(transport.value(), b"owed")

    def test_no_half_close_closes_outright(self) -> None:
        transport = StringTransport()
        close_politely(transport, Clock(), 5.0)
        self.assertTrue(transport.disconnecting)


class CloseEndedTests(SynchronousTestCase):
    """
    A connection whose client ended its input closes after the flush; it
    needs an abort deadline only while something is left to flush.
    """

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.descriptor = FileDescriptor(reactor=self.reactor)
        self.descriptor.connected = True

    def test_reactor_transport_with_nothing_unsent_gets_no_timer(self) -> None:
        self.assertIsNone(close_ended(self.descriptor, self.reactor, 5.0))
        self.assertTrue(self.descriptor.disconnecting)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_reactor_transport_with_bytes_unsent_gets_a_deadline(self) -> None:
        self.descriptor.dataBuffer = b"owed"
        deadline = close_ended(self.descriptor, self.reactor, 5.0)
        self.assertIsInstance(deadline, CloseDeadline)
        self.assertEqual(len(self.reactor.getDelayedCalls()), 1)

    def test_other_transports_get_a_deadline(self) -> None:
        transport = StringTransport()
        deadline = close_ended(transport, self.reactor, 5.0)
        self.assertTrue(transport.disconnecting)
        self.assertIsInstance(deadline, CloseDeadline)


class DeadlineTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.transport = SocketLikeTransport()
        self.transport.dataBuffer = b"x" * 100  # unacknowledged by the peer

    def test_a_stalled_peer_is_aborted_at_the_timeout(self) -> None:
        deadline = close_politely(self.transport, self.clock, 5.0)
        self.clock.advance(4.9)
        self.assertFalse(self.transport.disconnected)
        self.assertIs(deadline.expired, False)
        self.assertTrue(deadline.active())
        self.clock.advance(0.1)
        self.assertTrue(self.transport.disconnected)
        self.assertTrue(deadline.expired)
        self.assertFalse(deadline.active())

    def test_a_reading_peer_gets_another_timeout_each_time(self) -> None:
        deadline = CloseDeadline(self.transport, self.clock, 5.0)
        for left in (80, 40, 1):
            self.transport.dataBuffer = b"x" * left  # the peer read some
            self.clock.advance(5.0)
            self.assertFalse(self.transport.disconnected)
        self.clock.advance(4.9)  # progress at the last check bought a whole timeout
        self.assertFalse(self.transport.disconnected)
        self.clock.advance(0.1)
        self.assertTrue(self.transport.disconnected)
        self.assertTrue(deadline.expired)

    def test_no_progress_is_not_progress(self) -> None:
        CloseDeadline(self.transport, self.clock, 5.0)
        self.clock.advance(5.0)
        self.assertTrue(self.transport.disconnected)

    def test_once_everything_is_acknowledged_the_deadline_is_final(self) -> None:
        CloseDeadline(self.transport, self.clock, 5.0)
        self.transport.dataBuffer = b""
        self.clock.advance(5.0)
        self.assertTrue(self.transport.disconnected)

    def test_a_transport_without_a_socket_is_aborted_at_the_timeout(self) -> None:
        transport = StringTransport()
        transport.write(b"unread")
        CloseDeadline(transport, self.clock, 5.0)
        self.clock.advance(5.0)
        self.assertTrue(transport.disconnected)

    def test_cancelled_deadline_never_aborts(self) -> None:
        deadline = CloseDeadline(self.transport, self.clock, 5.0)
        cancel(deadline)
        self.assertFalse(deadline.active())
        self.clock.advance(60.0)
        self.assertFalse(self.transport.disconnected)
        self.assertIs(deadline.expired, False)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class CancelTests(SynchronousTestCase):
    def test_nothing_to_cancel(self) -> None:
        cancel(None)

    def test_a_timer_that_already_ran_is_left_alone(self) -> None:
        clock = Clock()
        call = clock.callLater(1.0, lambda: None)
        clock.advance(1.0)
        cancel(call)  # would raise AlreadyCalled

    def test_a_pending_timer_is_cancelled(self) -> None:
        clock = Clock()
        call = clock.callLater(1.0, lambda: None)
        cancel(call)
        self.assertFalse(call.active())


class CloseFlushedNowTests(SynchronousTestCase):
    """
    At the end of input, a reactor's TCP connection with nothing unsent is
    closed within the event, not on the reactor's next turn.
    """

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        ours, self.peer = socket.socketpair()
        self.addCleanup(self.peer.close)
        self.protocol = Recorder()
        self.transport = tcp.Server(
            ours, self.protocol, ("127.0.0.1", 5), None, 1, self.reactor
        )
        self.protocol.makeConnection(self.transport)
        self.transport.startReading()

    def test_nothing_unsent_closes_at_once(self) -> None:
        """
        The protocol's connectionLost ran, cleanly, before it returned; the
        reactor watches the descriptor neither way; the peer reads the end.
        """
        self.assertIsNone(
            close_ended(self.transport, self.reactor, 5.0, endOfInput=self.protocol)
        )
        self.assertEqual(len(self.protocol.lost), 1)
        self.assertTrue(self.protocol.lost[0].check(ConnectionDone))
        self.assertNotIn(self.transport, self.reactor.getReaders())
        self.assertNotIn(self.transport, self.reactor.getWriters())
        self.assertEqual(self.peer.recv(10), b"")
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_only_when_asked(self) -> None:
        """Without C{now}, Twisted's next-turn close, as before."""
        close_ended(self.transport, self.reactor, 5.0)
        self.assertEqual(self.protocol.lost, [])
        self.assertIn(self.transport, self.reactor.getWriters())

    def test_bytes_unsent_wait_for_the_flush(self) -> None:
        self.transport.dataBuffer = b"owed"
        self.assertFalse(close_flushed_now(self.transport, self.protocol))
        self.assertEqual(self.protocol.lost, [])

    def test_a_producer_waits(self) -> None:
        self.transport.registerProducer(self.protocol, True)
        self.assertFalse(close_flushed_now(self.transport, self.protocol))
        self.assertEqual(self.protocol.lost, [])

    def test_already_closing_is_left_alone(self) -> None:
        self.transport.loseConnection()
        self.assertFalse(close_flushed_now(self.transport, self.protocol))
        self.assertEqual(self.protocol.lost, [])

    def test_a_wrapper_between_is_left_alone(self) -> None:
        """The transport delivers to another protocol, which delivers to it."""
        self.assertFalse(close_flushed_now(self.transport, Recorder()))
        self.assertEqual(self.protocol.lost, [])

    def test_tls_is_left_alone(self) -> None:
        self.transport.TLS = True
        self.assertFalse(close_flushed_now(self.transport, self.protocol))
        self.assertEqual(self.protocol.lost, [])

    def test_other_transports_are_left_alone(self) -> None:
        transport = StringTransport()
        self.assertFalse(close_flushed_now(transport, self.protocol))
        self.assertFalse(transport.disconnecting)


class Recorder(Protocol):
    """Records its connectionLost reasons; a push producer that does nothing."""

    def __init__(self) -> None:
        self.lost: List[Failure] = []

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost.append(reason)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass
