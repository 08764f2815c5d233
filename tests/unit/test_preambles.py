"""Tests for incproto._kernel.preambles and incproto.handshake on a Clock:
connections before their service are bounded (oldest closed first), timed
as a whole, and hold no slot of the connection limit (issue 22)."""

from __future__ import annotations

from typing import Any, List, Tuple

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import INegotiated
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from zope.interface import directlyProvides

from incproto import ConnectionLimit, IncrementFactory
from incproto._kernel.preambles import Preambles
from incproto.handshake import HandshakeGate, HandshakingConnection
from tests.support.fakes import HalfCloseableTransport

PEER = IPv4Address("TCP", "127.0.0.1", 1)


def entries(preambles: Preambles, count: int) -> Tuple[List[Any], List[str]]:
    """Enter C{count} connections; return them and the list of closed."""
    closed: List[str] = []
    made = [
        preambles.enter(PEER, "TLS handshake", lambda i=i: closed.append(i))
        for i in range(count)
    ]
    return made, closed


def test_the_oldest_is_closed_for_a_new_one() -> None:
    preambles = Preambles(3, 10.0, Clock())
    made, closed = entries(preambles, 5)
    assert closed == [0, 1]
    assert (len(preambles), preambles.evicted, preambles.peak) == (3, 2, 3)
    made[2].done()
    entries(preambles, 1)
    assert closed == [0, 1]  # room was free


def test_the_deadline_counts_from_the_start_for_each() -> None:
    clock = Clock()
    preambles = Preambles(None, 10.0, clock)
    _, closed = entries(preambles, 1)
    clock.advance(4.0)
    second = preambles.enter(PEER, "PROXY header", lambda: closed.append("second"))
    clock.advance(6.0)
    assert closed == [0]
    clock.advance(3.9)
    assert closed == [0]
    clock.advance(0.1)
    assert closed == [0, "second"]
    assert preambles.timedOut == 2 and second.over


def test_done_in_time_is_never_closed() -> None:
    clock = Clock()
    preambles = Preambles(2, 10.0, clock)
    made, closed = entries(preambles, 2)
    for preamble in made:
        preamble.done()
    clock.advance(20.0)
    entries(preambles, 2)
    assert (closed, preambles.evicted, preambles.timedOut) == ([], 0, 0)


def test_a_handed_over_preamble_keeps_its_place_and_deadline() -> None:
    clock = Clock()
    preambles = Preambles(2, 10.0, clock)
    [outer], closed = entries(preambles, 1)
    clock.advance(5.0)
    client = IPv4Address("TCP", "192.0.2.1", 56324)  # as the header named it
    with preambles.handingOver(outer):
        inner = preambles.enter(client, "TLS handshake", lambda: closed.append("inner"))
    assert inner is outer and len(preambles) == 1
    assert (inner.peer, inner.what) == (client, "TLS handshake")
    clock.advance(5.0)
    assert closed == ["inner"]


def test_a_preamble_not_taken_over_is_done() -> None:
    preambles = Preambles(2, 10.0, Clock())
    [outer], _ = entries(preambles, 1)
    with preambles.handingOver(outer):
        pass
    assert len(preambles) == 0 and outer.over


def test_stop_closes_all_without_counting() -> None:
    clock = Clock()
    preambles = Preambles(5, 10.0, clock)
    _, closed = entries(preambles, 3)
    preambles.stop()
    assert closed == [0, 1, 2]
    assert (preambles.evicted, preambles.timedOut, clock.getDelayedCalls()) == (
        0,
        0,
        [],
    )


@pytest.mark.parametrize("bound, timeout", [(0, 1.0), (1, 0.0)])
def test_bad_settings(bound: int, timeout: float) -> None:
    with pytest.raises(ValueError):
        Preambles(bound, timeout, Clock())


# The handshake gate, over a fake TLS transport --------------------------


class FakeTLS(HalfCloseableTransport):
    """A transport that says it is TLS, over a TCP-like one."""

    def __init__(self) -> None:
        super().__init__(peerAddress=PEER)
        directlyProvides(self, INegotiated)
        self.transport = HalfCloseableTransport(peerAddress=PEER)


def gate_connect(gate: HandshakeGate) -> Tuple[HandshakingConnection, FakeTLS]:
    protocol = gate.buildProtocol(PEER)
    transport = FakeTLS()
    protocol.makeConnection(transport)
    return protocol, transport


def test_a_tls_connection_takes_a_slot_only_once_its_handshake_is_done() -> None:
    """Before, TLS connected the wrapped protocol at once: a client that
    never sent a ClientHello held a slot of the limit."""
    clock = Clock()
    limit = ConnectionLimit(IncrementFactory(clock=clock), 1, queueSize=0, clock=clock)
    gate = HandshakeGate(limit, Preambles(10, 10.0, clock))
    silent = [gate_connect(gate) for _ in range(5)]
    assert (limit.active, limit.rejected, len(gate.preambles)) == (0, 0, 5)
    protocol, transport = gate_connect(gate)
    protocol.handshakeCompleted()
    assert transport.value() == b"*"
    assert (limit.active, len(gate.preambles)) == (1, 5)
    clock.advance(10.0)  # the silent ones time out, with a FIN under TLS
    assert all(tls.transport.disconnecting for _, tls in silent)
    assert not transport.transport.disconnecting
    assert gate.preambles.timedOut == 5


def test_a_handshake_after_the_close_starts_nothing() -> None:
    clock = Clock()
    built: List[Any] = []
    inner = IncrementFactory(clock=clock)
    inner.buildProtocol = lambda addr: built.append(addr)  # type: ignore[method-assign]
    gate = HandshakeGate(inner, Preambles(1, 10.0, clock))
    first, tls = gate_connect(gate)
    gate_connect(gate)  # evicts the first
    first.handshakeCompleted()
    assert built == [] and tls.transport.disconnecting
    first.connectionLost(Failure(ConnectionDone()))


def test_a_lost_connection_leaves_its_preamble() -> None:
    gate = HandshakeGate(IncrementFactory(clock=Clock()), Preambles(5, 1.0, Clock()))
    protocol, _ = gate_connect(gate)
    protocol.connectionLost(Failure(ConnectionDone()))
    assert len(gate.preambles) == 0


def test_without_tls_the_wrapped_protocol_starts_at_once() -> None:
    clock = Clock()
    gate = HandshakeGate(IncrementFactory(clock=clock), Preambles(5, 1.0, clock))
    protocol = gate.buildProtocol(PEER)
    transport = HalfCloseableTransport()
    protocol.makeConnection(transport)
    assert transport.value() == b"*" and len(gate.preambles) == 0


def test_stop_closes_the_connections_in_their_handshake() -> None:
    clock = Clock()
    gate = HandshakeGate(IncrementFactory(clock=clock), Preambles(5, 10.0, clock))
    _, tls = gate_connect(gate)
    gate.doStart()
    gate.doStop()
    assert tls.transport.disconnecting
