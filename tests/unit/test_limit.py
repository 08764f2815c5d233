"""Tests for incproto.limit.ConnectionLimit on fake transports and a Clock."""

from __future__ import annotations

import ipaddress
from typing import Any, Dict, List, Optional, Tuple

from twisted.internet.address import (
    HostnameAddress,
    IPv4Address,
    IPv6Address,
    UNIXAddress,
)
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from incproto import ConnectionLimit, IncrementFactory, IncrementProtocol
from incproto._kernel.accepting import AcceptControl
from incproto._kernel.sockets import TCP_CLOSE
from incproto.limit import LimitedConnection, peer_group
from tests.support.fakes import FakePort, HalfCloseableTransport, SocketLikeTransport

DONE = Failure(ConnectionDone())


class CountingFactory(IncrementFactory):
    """An IncrementFactory that counts the protocols it builds."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(clock=clock)
        self.built: List[IncrementProtocol] = []
        self.addresses: List[Any] = []
        self.starts = self.stops = 0

    def buildProtocol(self, addr: object) -> Optional[Protocol]:
        self.addresses.append(addr)
        protocol = super().buildProtocol(addr)
        assert isinstance(protocol, IncrementProtocol)
        self.built.append(protocol)
        return protocol

    def startFactory(self) -> None:
        self.starts += 1

    def stopFactory(self) -> None:
        self.stops += 1


class RefusingFactory(Factory):
    def buildProtocol(self, addr: object) -> None:
        return None


class LimitTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.wrapped = CountingFactory(self.clock)
        self.events: List[Dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def limit(self, maxConnections: int = 2, **kwargs: Any) -> ConnectionLimit:
        return ConnectionLimit(self.wrapped, maxConnections, clock=self.clock, **kwargs)

    def connect(
        self, limit: ConnectionLimit, host: str = "10.0.0.1"
    ) -> Tuple[LimitedConnection, HalfCloseableTransport]:
        address = (IPv6Address if ":" in host else IPv4Address)("TCP", host, 40000)
        protocol = limit.buildProtocol(address)
        transport = HalfCloseableTransport(peerAddress=address)
        protocol.makeConnection(transport)
        return protocol, transport

    def logged(self, text: str) -> List[Dict[str, Any]]:
        return [e for e in self.events if text in e.get("log_format", "")]


class AdmissionTests(LimitTestCase):
    def test_admits_up_to_the_limit(self) -> None:
        limit = self.limit(2, queueSize=5)
        greeted = [self.connect(limit)[1].value() for _ in range(2)]
        _, third = self.connect(limit)
        self.assertEqual(greeted, [b"*", b"*"])
        self.assertEqual(third.value(), b"")
        self.assertEqual((limit.active, limit.held, len(self.wrapped.built)), (2, 1, 2))

    def test_held_is_admitted_when_a_slot_frees(self) -> None:
        limit = self.limit(2, queueSize=5)
        first, _ = self.connect(limit)
        self.connect(limit)
        _, third = self.connect(limit)
        first.connectionLost(DONE)
        self.assertEqual(third.value(), b"*")
        self.assertEqual((limit.active, limit.held), (2, 0))

    def test_fifo_order(self) -> None:
        limit = self.limit(1, queueSize=5)
        previous, _ = self.connect(limit)
        waiting = [self.connect(limit) for _ in range(3)]
        for admitted, (protocol, _) in enumerate(waiting, 1):
            previous.connectionLost(DONE)
            greeted = [transport.value() for _, transport in waiting]
            self.assertEqual(greeted, [b"*"] * admitted + [b""] * (3 - admitted))
            previous = protocol
        self.assertEqual(limit.admitted, 4)

    def test_held_bytes_delivered_in_order_on_admission(self) -> None:
        limit = self.limit(1, queueSize=5)
        first, _ = self.connect(limit)
        held, transport = self.connect(limit)
        held.dataReceived(b"^ab")
        held.dataReceived(b"c$x^d")
        first.connectionLost(DONE)
        self.assertEqual(transport.value(), b"*bcde")

    def test_held_half_close_delivered_on_admission(self) -> None:
        limit = self.limit(1, queueSize=5)
        first, _ = self.connect(limit)
        held, transport = self.connect(limit)
        held.dataReceived(b"^abc$")
        held.readConnectionLost()
        self.assertFalse(transport.disconnecting)
        first.connectionLost(DONE)
        self.assertEqual(transport.value(), b"*bcd")
        self.assertTrue(transport.disconnecting)

    def test_hold_buffer_pauses_reading_until_admission(self) -> None:
        limit = self.limit(1, queueSize=5, holdBuffer=10)
        first, _ = self.connect(limit)
        held, transport = self.connect(limit)
        held.dataReceived(b"^" + b"a" * 8)
        self.assertEqual(transport.producerState, "producing")
        held.dataReceived(b"aa")
        self.assertEqual(transport.producerState, "paused")
        first.connectionLost(DONE)
        self.assertEqual(transport.producerState, "producing")
        self.assertEqual(transport.value(), b"*" + b"b" * 10)

    def test_held_client_leaving_leaves_the_queue_at_once(self) -> None:
        limit = self.limit(1, queueSize=5)
        first, _ = self.connect(limit)
        gone, _ = self.connect(limit)
        _, next_in_line = self.connect(limit)
        gone.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(limit.held, 1)
        first.connectionLost(DONE)
        self.assertEqual(next_in_line.value(), b"*")
        self.assertEqual(len(self.wrapped.built), 2)

    def test_held_client_closing_without_sending_leaves_the_queue(self) -> None:
        limit = self.limit(1, queueSize=5, queueTimeout=9.0)
        first, _ = self.connect(limit)
        gone, transport = self.connect(limit)
        gone.readConnectionLost()
        self.assertTrue(transport.disconnecting)
        self.assertEqual((limit.held, limit.abandoned), (0, 1))
        self.assertEqual(len(self.clock.getDelayedCalls()), 0)
        gone.connectionLost(DONE)
        first.connectionLost(DONE)
        self.assertEqual((limit.active, limit.admitted), (0, 1))

    def test_admission_of_a_held_connection_is_logged(self) -> None:
        limit = self.limit(1, queueSize=5)
        first, _ = self.connect(limit)
        self.connect(limit, "10.0.0.9")
        self.clock.advance(1.5)
        first.connectionLost(DONE)
        [event] = self.logged("admitted")
        self.assertEqual(event["peer"], "10.0.0.9:40000")
        self.assertEqual(event["waited"], 1.5)


class RejectionTests(LimitTestCase):
    def test_no_queue_rejects_at_once_with_a_fin(self) -> None:
        limit = self.limit(1, queueSize=0)
        self.connect(limit)
        rejected, transport = self.connect(limit)
        self.assertEqual(transport.value(), b"")
        self.assertTrue(transport.write_closed)  # FIN after the flush...
        self.assertFalse(transport.disconnecting)  # ...not a close with input unread
        self.assertEqual(len(self.wrapped.built), 1)
        rejected.dataReceived(b"^abc")  # discarded
        rejected.readConnectionLost()
        self.assertTrue(transport.disconnecting)
        self.assertEqual(transport.value(), b"")
        self.assertEqual(limit.rejected, 1)

    def test_full_queue_rejects(self) -> None:
        limit = self.limit(1, queueSize=2)
        for _ in range(3):
            self.connect(limit)
        _, transport = self.connect(limit)
        self.assertTrue(transport.write_closed)
        self.assertEqual((limit.held, limit.rejected), (2, 1))

    def test_a_full_limit_paces_its_rejections(self) -> None:
        """
        While full, each rejection stops the port accepting for a while (a
        flood then costs a bounded share of the reactor); a freed slot or
        queue place starts it again at once.
        """
        limit = self.limit(1, queueSize=1, rejectPause=0.05)
        port = FakePort()
        limit.watchAccepting(AcceptControl(port, self.clock))
        first, _ = self.connect(limit)
        held, _ = self.connect(limit)
        self.assertTrue(port.reading)
        self.connect(limit)  # rejected
        self.assertFalse(port.reading)
        self.clock.advance(0.05)
        self.assertTrue(port.reading)
        self.connect(limit)
        self.assertFalse(port.reading)
        held.connectionLost(DONE)  # a queue place frees
        self.assertTrue(port.reading)
        self.connect(limit)  # takes it
        self.connect(limit)
        self.assertFalse(port.reading)
        first.connectionLost(DONE)  # a slot frees
        self.assertTrue(port.reading)
        self.assertEqual(limit.rejected, 3)

    def test_per_peer_rejections_do_not_pause_accepting(self) -> None:
        limit = self.limit(5, maxPerPeer=1)
        port = FakePort()
        limit.watchAccepting(AcceptControl(port, self.clock))
        self.connect(limit)
        self.connect(limit)
        self.assertEqual(limit.rejected, 1)
        self.assertTrue(port.reading)

    def test_rejected_client_that_never_closes_is_aborted(self) -> None:
        limit = self.limit(1, queueSize=0, closeTimeout=3.0)
        self.connect(limit)
        rejected, transport = self.connect(limit)
        self.clock.advance(3.0)
        self.assertTrue(transport.disconnected)
        rejected.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_queue_timeout(self) -> None:
        limit = self.limit(1, queueSize=5, queueTimeout=2.0)
        self.connect(limit)
        held, transport = self.connect(limit)
        self.clock.advance(1.9)
        self.assertFalse(transport.write_closed)
        self.clock.advance(0.1)
        self.assertTrue(transport.write_closed)
        self.assertEqual((limit.held, limit.timedOut), (0, 1))
        held.readConnectionLost()
        held.connectionLost(DONE)
        self.assertEqual(len(self.wrapped.built), 1)
        self.assertEqual(limit.active, 1)

    def test_admitted_connection_cancels_its_timeout(self) -> None:
        limit = self.limit(1, queueSize=5, queueTimeout=2.0)
        first, _ = self.connect(limit)
        _, transport = self.connect(limit)
        first.connectionLost(DONE)
        self.clock.advance(10)
        self.assertFalse(transport.write_closed)
        self.assertEqual(limit.timedOut, 0)

    def test_rejections_are_logged_at_a_limited_rate(self) -> None:
        limit = self.limit(1, queueSize=0, rejectLogInterval=10.0)
        self.connect(limit)
        for _ in range(100):
            self.connect(limit)
        [first] = self.logged("{what} {peer}: {why}")
        self.assertEqual((first["what"], first["why"]), ("rejected", "limit"))
        self.clock.advance(10.0)
        [summary] = self.logged("rejected or timed out in the last")
        self.assertEqual(summary["count"], 99)
        self.assertEqual(
            formatEvent(summary),
            "99 more connections rejected or timed out in the last 10.0s",
        )
        self.assertEqual(limit.rejected, 100)

    def test_wrapped_factory_refusing_frees_the_slot(self) -> None:
        limit = ConnectionLimit(RefusingFactory(), 1, queueSize=1, clock=self.clock)
        _, transport = self.connect(limit)
        self.assertTrue(transport.write_closed)
        self.assertEqual(limit.active, 0)


class PerPeerTests(LimitTestCase):
    def test_one_peer_cannot_take_every_slot(self) -> None:
        limit = self.limit(10, queueSize=10, maxPerPeer=2)
        self.connect(limit, "10.0.0.1")
        self.connect(limit, "10.0.0.1")
        _, third = self.connect(limit, "10.0.0.1")
        _, other = self.connect(limit, "10.0.0.2")
        self.assertTrue(third.write_closed)
        self.assertEqual(other.value(), b"*")
        self.assertEqual((limit.active, limit.rejected), (3, 1))

    def test_held_connections_count_against_their_peer(self) -> None:
        limit = self.limit(1, queueSize=10, maxPerPeer=2)
        self.connect(limit, "10.0.0.1")
        self.connect(limit, "10.0.0.1")
        _, third = self.connect(limit, "10.0.0.1")
        self.assertTrue(third.write_closed)
        self.assertEqual(limit.held, 1)

    def test_slots_are_returned_to_the_peer(self) -> None:
        limit = self.limit(10, maxPerPeer=1)
        first, _ = self.connect(limit, "10.0.0.1")
        first.connectionLost(DONE)
        _, again = self.connect(limit, "10.0.0.1")
        self.assertEqual(again.value(), b"*")

    def test_ipv4_mapped_ipv6_is_the_ipv4_peer(self) -> None:
        limit = self.limit(10, maxPerPeer=1)
        self.connect(limit, "192.0.2.7")
        _, mapped = self.connect(limit, "::ffff:192.0.2.7")
        self.assertTrue(mapped.write_closed)

    def test_peer_groups(self) -> None:
        self.assertEqual(
            peer_group(IPv6Address("TCP", "::ffff:10.1.2.3", 1)),
            ipaddress.ip_address("10.1.2.3"),
        )
        self.assertEqual(
            peer_group(IPv6Address("TCP", "2001:db8::1", 1)),
            peer_group(IPv6Address("TCP", "2001:DB8:0::1", 2)),
        )
        self.assertEqual(peer_group(UNIXAddress(b"/a")), peer_group(UNIXAddress(None)))


class TransparencyTests(LimitTestCase):
    def test_wrapped_protocol_gets_the_real_transport(self) -> None:
        limit = self.limit(1)
        limited, transport = self.connect(limit, "10.0.0.5")
        limited.dataReceived(b"^")
        [protocol] = self.wrapped.built
        self.assertIs(protocol.transport, transport)
        self.assertIs(transport.producer, protocol)
        self.assertEqual(protocol.transport.getPeer().host, "10.0.0.5")

    def test_log_prefix_is_the_wrapped_protocols(self) -> None:
        limit = self.limit(1, queueSize=1)
        admitted, _ = self.connect(limit)
        held, _ = self.connect(limit)
        self.assertEqual(admitted.logPrefix(), "IncrementProtocol")
        self.assertEqual(held.logPrefix(), "IncrementProtocol")
        self.assertEqual(limit.logPrefix(), "CountingFactory")

    def test_half_close_passes_through(self) -> None:
        limit = self.limit(1)
        protocol, transport = self.connect(limit)
        protocol.dataReceived(b"^abc$")
        protocol.readConnectionLost()
        self.assertEqual(transport.value(), b"*bcd")
        self.assertTrue(transport.disconnecting)

    def test_protocol_without_half_close_is_closed_on_end_of_input(self) -> None:
        limit = ConnectionLimit(Factory.forProtocol(Protocol), 1, clock=self.clock)
        protocol, transport = self.connect(limit)
        protocol.readConnectionLost()
        self.assertTrue(transport.disconnecting)

    def test_connection_lost_reaches_the_wrapped_protocol(self) -> None:
        limit = self.limit(1)
        protocol, _ = self.connect(limit)
        [wrapped] = self.wrapped.built
        lost: List[Failure] = []
        self.patch(
            type(wrapped), "connectionLost", lambda _, reason: lost.append(reason)
        )
        reason = Failure(ConnectionLost())
        protocol.connectionLost(reason)
        self.assertEqual(lost, [reason])


class LifecycleTests(LimitTestCase):
    def test_counters(self) -> None:
        limit = self.limit(2, queueSize=3)
        connections = [self.connect(limit)[0] for _ in range(6)]
        self.assertEqual(
            (limit.active, limit.held, limit.peak, limit.peakHeld, limit.admitted),
            (2, 3, 2, 3, 2),
        )
        self.assertEqual(limit.rejected, 1)
        for protocol in connections:
            protocol.connectionLost(DONE)
        self.assertEqual((limit.active, limit.held, limit.admitted), (0, 0, 5))

    def test_stopping_closes_held_connections(self) -> None:
        limit = self.limit(1, queueSize=5, queueTimeout=30.0)
        limit.doStart()
        _, active = self.connect(limit)
        _, held = self.connect(limit)
        limit.doStop()
        self.assertTrue(held.write_closed)
        self.assertFalse(active.write_closed)
        self.assertEqual(limit.held, 0)
        self.assertEqual((self.wrapped.starts, self.wrapped.stops), (1, 1))
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)  # the close timer

    def test_arguments_are_checked(self) -> None:
        for kwargs in (
            {"maxConnections": 0},
            {"maxConnections": 1, "queueSize": -1},
            {"maxConnections": 1, "queueTimeout": 0},
            {"maxConnections": 1, "maxPerPeer": 0},
        ):
            self.assertRaises(ValueError, ConnectionLimit, self.wrapped, **kwargs)


class NamedAddress:
    """A peer address named by text, as a UNIX socket's path can be."""

    def __init__(self, name: str) -> None:
        self.name = name


class ResettableTransport(SocketLikeTransport):
    """
    A socket-like transport whose kernel, asked for TCP_INFO, says whether
    the client reset the connection (L{incproto._kernel.sockets.reset_by_peer}).
    """

    reset = False

    def getHandle(self) -> Any:
        transport = self

        class Handle:
            def getsockopt(self, level: int, option: int, size: int) -> bytes:
                return bytes([TCP_CLOSE if transport.reset else 1])

        return Handle()


class MutationTests(LimitTestCase):
    """
    Behaviour that mutation testing (docs/testing.md) found unchecked.
    """

    def connect_with(
        self, limit: ConnectionLimit, transport: StringTransport
    ) -> LimitedConnection:
        protocol = limit.buildProtocol(transport.getPeer())
        protocol.makeConnection(transport)
        return protocol

    def test_the_wrapped_factory_is_given_the_peer_address(self) -> None:
        limit = self.limit(1, queueSize=1)
        first, _ = self.connect(limit, "10.0.0.1")
        self.connect(limit, "10.0.0.2")
        first.connectionLost(DONE)
        self.assertEqual(
            [p.transport.getPeer().host for p in self.wrapped.built],
            ["10.0.0.1", "10.0.0.2"],
        )
        self.assertEqual(
            [a.host for a in self.wrapped.addresses], ["10.0.0.1", "10.0.0.2"]
        )

    def test_a_new_limit_has_seen_nothing(self) -> None:
        limit = self.limit(1)
        self.assertEqual(
            (limit.peak, limit.peakHeld, limit.admitted, limit.rejected), (0, 0, 0, 0)
        )

    def test_the_global_reactor_is_the_default_clock(self) -> None:
        from twisted.internet import reactor

        self.assertIs(ConnectionLimit(self.wrapped, 1).clock, reactor)

    def test_argument_errors_name_the_argument_and_value(self) -> None:
        for kwargs, text in (
            ({"maxConnections": 0}, "maxConnections must be at least 1, not 0"),
            ({"queueSize": -1}, "queueSize must not be negative, not -1"),
            ({"queueTimeout": 0}, "queueTimeout must be positive, not 0"),
            ({"maxPerPeer": 0}, "maxPerPeer must be at least 1, not 0"),
        ):
            arguments: Dict[str, Any] = {"maxConnections": 1, **kwargs}
            error = self.assertRaises(
                ValueError, ConnectionLimit, self.wrapped, **arguments
            )
            self.assertEqual(str(error), text)

    def test_a_short_queue_timeout_is_allowed(self) -> None:
        self.assertEqual(self.limit(1, queueTimeout=0.5).queueTimeout, 0.5)

    def test_rejected_connections_are_aborted_ten_seconds_after_the_fin(self) -> None:
        limit = self.limit(1, queueSize=0)
        self.connect(limit)
        _, transport = self.connect(limit)
        self.clock.advance(9.9)
        self.assertFalse(transport.disconnected)
        self.clock.advance(0.1)
        self.assertTrue(transport.disconnected)

    def test_rejections_are_summarized_every_ten_seconds(self) -> None:
        limit = self.limit(1, queueSize=0)
        for _ in range(3):
            self.connect(limit)
        self.clock.advance(9.9)
        self.assertEqual(self.logged("in the last"), [])
        self.clock.advance(0.1)
        [summary] = self.logged("in the last")
        self.assertEqual(
            formatEvent(summary),
            "1 more connection rejected or timed out in the last 10.0s",
        )

    def test_rejection_log_names_peer_and_reason(self) -> None:
        limit = self.limit(1, queueSize=1, maxPerPeer=2, rejectLogInterval=0.0)
        self.connect(limit, "10.0.0.1")
        self.connect(limit, "10.0.0.1")
        self.connect(limit, "10.0.0.1")  # per peer
        self.connect(limit, "2001:db8::7")  # the queue is full
        self.assertEqual(
            [formatEvent(e) for e in self.logged("{what} {peer}: {why}")],
            [
                "rejected 10.0.0.1:40000: per-peer limit",
                "rejected [2001:db8::7]:40000: queue full",
            ],
        )

    def test_rejection_log_names_a_unix_peer_by_its_path(self) -> None:
        limit = self.limit(1, queueSize=0, rejectLogInterval=0.0)
        self.connect(limit)
        for name in (b"/run/\xff.sock", None):
            self.connect_with(limit, StringTransport(peerAddress=UNIXAddress(name)))
        self.assertEqual(
            [e["peer"] for e in self.logged("{what} {peer}: {why}")],
            ["/run/\ufffd.sock", "UNIXAddress(None)"],
        )

    def test_rejection_log_names_other_peers_as_they_print(self) -> None:
        limit = self.limit(1, queueSize=0, rejectLogInterval=0.0)
        self.connect(limit)
        for address in (NamedAddress("pipe 3"), HostnameAddress(b"example.net", 7)):
            self.connect_with(limit, StringTransport(peerAddress=address))
        self.assertEqual(
            [e["peer"] for e in self.logged("{what} {peer}: {why}")],
            ["pipe 3", "HostnameAddress(hostname=b'example.net', port=7)"],
        )

    def test_queue_timeouts_are_counted_and_logged(self) -> None:
        limit = self.limit(1, queueSize=5, queueTimeout=2.0, rejectLogInterval=0.0)
        self.connect(limit)
        self.connect(limit, "10.0.0.8")
        self.connect(limit, "10.0.0.9")
        self.clock.advance(2.0)
        self.assertEqual(limit.timedOut, 2)
        self.assertEqual(
            [formatEvent(e) for e in self.logged("{what} {peer}: {why}")],
            [
                "timed out 10.0.0.8:40000: queue timeout",
                "timed out 10.0.0.9:40000: queue timeout",
            ],
        )

    def test_admission_log_says_how_long_it_waited(self) -> None:
        limit = self.limit(1, queueSize=5)
        first, _ = self.connect(limit)
        self.clock.advance(2.0)
        self.connect(limit, "10.0.0.9")
        self.clock.advance(1.25)
        first.connectionLost(DONE)
        [event] = self.logged("admitted")
        self.assertEqual(
            formatEvent(event), "admitted 10.0.0.9:40000 after 1.250s in the queue"
        )

    def test_a_held_connection_counts_once_against_its_peer(self) -> None:
        limit = self.limit(1, queueSize=5, maxPerPeer=3)
        for _ in range(3):
            self.connect(limit)
        self.assertEqual((limit.active, limit.held, limit.rejected), (1, 2, 0))

    def test_a_peer_leaving_frees_exactly_its_place(self) -> None:
        limit = self.limit(10, maxPerPeer=2)
        first, _ = self.connect(limit)
        self.connect(limit)
        first.connectionLost(DONE)
        self.connect(limit)
        _, fourth = self.connect(limit)
        self.assertTrue(fourth.write_closed)
        self.assertEqual((limit.active, limit.rejected), (2, 1))

    def test_a_timed_out_connection_frees_exactly_its_place(self) -> None:
        limit = self.limit(1, queueSize=5, queueTimeout=2.0, maxPerPeer=2)
        self.connect(limit)
        self.connect(limit)
        self.clock.advance(2.0)
        _, again = self.connect(limit)
        _, beyond = self.connect(limit)
        self.assertFalse(again.write_closed)
        self.assertTrue(beyond.write_closed)
        self.assertEqual((limit.held, limit.timedOut, limit.rejected), (1, 1, 1))

    def test_abandoned_connections_are_counted(self) -> None:
        limit = self.limit(1, queueSize=5)
        self.connect(limit)
        for _ in range(2):
            held, _ = self.connect(limit)
            held.connectionLost(Failure(ConnectionLost()))
        self.assertEqual((limit.abandoned, limit.held), (2, 0))

    def test_a_held_client_leaving_cancels_its_queue_timeout(self) -> None:
        limit = self.limit(1, queueSize=5, queueTimeout=9.0)
        self.connect(limit)
        held, _ = self.connect(limit)
        held.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_a_rejected_client_closing_cancels_the_abort(self) -> None:
        limit = self.limit(1, queueSize=0)
        self.connect(limit)
        rejected, transport = self.connect(limit)
        self.assertEqual(rejected.state, LimitedConnection.CLOSING)
        rejected.readConnectionLost()
        rejected.connectionLost(DONE)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertFalse(transport.disconnected)

    def test_a_client_giving_up_in_the_queue_is_closing(self) -> None:
        limit = self.limit(1, queueSize=5)
        self.connect(limit)
        held, _ = self.connect(limit)
        held.readConnectionLost()
        self.assertEqual(held.state, LimitedConnection.CLOSING)

    def test_exactly_a_full_hold_buffer_pauses_reading(self) -> None:
        limit = self.limit(1, queueSize=5, holdBuffer=10)
        first, _ = self.connect(limit)
        held, transport = self.connect(limit)
        held.dataReceived(b"^" + b"a" * 9)
        self.assertEqual(transport.producerState, "paused")
        self.assertTrue(held.readingPaused)
        first.connectionLost(DONE)
        self.assertFalse(held.readingPaused)

    def test_a_new_pause_after_a_paused_one_adds_no_probe(self) -> None:
        limit = self.limit(1, queueSize=5, holdBuffer=1)
        self.connect(limit)
        for _ in range(2):
            held, _ = self.connect(limit)
            held.dataReceived(b"^a")
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)

    def test_held_clients_that_reset_are_found_by_probing(self) -> None:
        """
        A held connection whose reading is paused cannot see its client
        reset; every probe interval the kernel is asked, and one that was
        reset is aborted.  Probing goes on while any held connection is
        paused, and stops when none is.
        """
        limit = self.limit(1, queueSize=5, holdBuffer=1, probeInterval=2.0)
        self.connect(limit)
        transports = [ResettableTransport(), ResettableTransport()]
        held = [self.connect_with(limit, t) for t in transports]
        for protocol in held:
            protocol.dataReceived(b"^a")
        transports[0].reset = True
        self.clock.advance(1.9)
        self.assertFalse(transports[0].disconnected)
        self.clock.advance(0.1)
        self.assertEqual([t.disconnected for t in transports], [True, False])
        held[0].connectionLost(Failure(ConnectionLost()))
        transports[1].reset = True
        self.clock.advance(2.0)
        self.assertTrue(transports[1].disconnected)
        held[1].connectionLost(Failure(ConnectionLost()))
        self.clock.advance(2.0)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual((limit.held, limit.abandoned), (0, 2))

    def test_the_default_probe_interval_is_a_second(self) -> None:
        limit = self.limit(1, queueSize=5, holdBuffer=1)
        self.connect(limit)
        transport = ResettableTransport()
        self.connect_with(limit, transport).dataReceived(b"^a")
        transport.reset = True
        self.clock.advance(0.9)
        self.assertFalse(transport.disconnected)
        self.clock.advance(0.1)
        self.assertTrue(transport.disconnected)

    def test_stopping_ends_probing(self) -> None:
        limit = self.limit(1, queueSize=5, holdBuffer=1)
        self.connect(limit)
        held, _ = self.connect(limit)
        held.dataReceived(b"^a")
        limit.doStop()
        [close_deadline] = self.clock.getDelayedCalls()
        self.assertEqual(close_deadline.getTime(), 10.0)

    def test_room_freed_during_a_pause_ends_that_pause_for_good(self) -> None:
        """
        A slot freed during the pause after a rejection resumes accepting
        and cancels that pause's timer, so a later pause lasts its full
        length.
        """
        limit = self.limit(1, queueSize=0, rejectPause=1.0)
        port = FakePort()
        limit.watchAccepting(AcceptControl(port, self.clock))
        first, _ = self.connect(limit)
        self.connect(limit)  # rejected: a pause until 1.0
        self.clock.advance(0.25)
        first.connectionLost(DONE)
        self.assertTrue(port.reading)
        self.connect(limit)
        self.clock.advance(0.25)
        self.connect(limit)  # rejected: a pause until 1.5
        self.clock.advance(0.75)
        self.assertFalse(port.reading)
        self.clock.advance(0.25)
        self.assertTrue(port.reading)

    def test_end_of_output_is_forwarded_once_admitted(self) -> None:
        limit = self.limit(1)
        protocol, _ = self.connect(limit)
        [wrapped] = self.wrapped.built
        ended: List[bool] = []
        self.patch(type(wrapped), "writeConnectionLost", lambda _: ended.append(True))
        protocol.writeConnectionLost()
        self.assertEqual(ended, [True])
