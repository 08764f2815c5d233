"""Unlucky clients on a fake socket transport and a Clock: the idle timeout
counts from the last traffic, and spares a client still reading."""

from __future__ import annotations

from typing import Any, Tuple

from twisted.internet.task import Clock

from incproto import IncrementFactory, IncrementProtocol
from tests.support.fakes import SocketLikeTransport, connect_to


def idle_connection(timeout: float) -> Tuple[Clock, IncrementProtocol, Any]:
    clock = Clock()
    factory = IncrementFactory(clock=clock, idleTimeout=timeout)
    protocol, transport = connect_to(factory, SocketLikeTransport())
    return clock, protocol, transport


def test_idle_timeout_counts_from_the_last_traffic() -> None:
    """
    An exchange at 0.5 s, acknowledged at once, then silence: with a 2 s
    idle timeout the connection closes at 2.5 s, not a whole timeout after
    the check that saw the acknowledgement.
    """
    clock, protocol, transport = idle_connection(2.0)
    clock.advance(0.5)
    protocol.dataReceived(b"^ab")
    clock.advance(1.5)
    assert not transport.write_closed
    clock.advance(0.5)
    assert transport.write_closed
    assert protocol.factory.connections == {protocol}  # closing, FIN first


def test_idle_timeout_spares_a_client_still_reading() -> None:
    """A client that drains part of a reply between checks is not idle;
    once it stops draining, it is."""
    clock, protocol, transport = idle_connection(2.0)
    protocol.dataReceived(b"^" + b"a" * 1000)
    transport.dataBuffer = b"x" * 1000  # owed, unread
    clock.advance(1.9)
    transport.dataBuffer = b"x" * 500  # it read half
    clock.advance(0.1)
    assert not transport.write_closed
    clock.advance(2.0)  # read nothing more
    assert transport.write_closed
