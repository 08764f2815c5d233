"""Tests for the close at a client's end of input over real TCP
(pytest-twisted): within the reactor's event where nothing is left to send
and nothing wraps the protocol, on the reactor's next turn otherwise."""

from __future__ import annotations

from typing import Any, Generator, List, Tuple

import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure

from incproto import ConnectionLimit, IncrementProtocol
from tests.support.helpers import FirstBuiltFactory, connect, listen_on, within


class CloseWatch(IncrementProtocol):
    """
    Records, when its C{readConnectionLost} returns, whether its
    C{connectionLost} already ran; C{lost} fires with that once it has.
    """

    def __init__(self) -> None:
        super().__init__()
        self.gone = False
        self.closedWithin: List[bool] = []
        self.lost: Deferred[List[bool]] = Deferred()

    def readConnectionLost(self) -> None:
        super().readConnectionLost()
        self.closedWithin.append(self.gone)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)
        self.gone = True
        self.lost.callback(self.closedWithin)


class WatchFactory(FirstBuiltFactory):
    protocol = CloseWatch


def half_close(
    served: List[Any], message: bytes, wrap: Any = None
) -> Generator[Deferred[Any], Any, Tuple[List[bool], bytes, WatchFactory]]:
    """
    Send C{message}, shut down the client's sending side, and wait for the
    server to close; return whether the server's close ran within its
    C{readConnectionLost}, what the client received, and the factory.
    """
    factory = WatchFactory()
    served.append(listen_on(wrap(factory) if wrap else factory))
    client = yield connect(served[-1])
    protocol = yield within(factory.built)
    yield client.wait_for(1)  # the greeting
    client.transport.write(message)
    client.transport.loseWriteConnection()
    closed_within = yield within(protocol.lost)
    received = yield within(client.closed)
    return closed_within, received, factory


@pytest_twisted.inlineCallbacks
def test_nothing_left_to_send_closes_within_the_event(
    served: List[Any],
) -> Generator[Deferred[Any], Any, None]:
    closed_within, received, factory = yield from half_close(served, b"")
    assert closed_within == [True]
    assert received == b"*"
    assert factory.closedBy == {"client closed": 1}


@pytest_twisted.inlineCallbacks
def test_replies_owed_are_delivered_first(
    served: List[Any],
) -> Generator[Deferred[Any], Any, None]:
    """The replies went to the kernel when read; the FIN follows them."""
    closed_within, received, factory = yield from half_close(served, b"^abc$^de")
    assert received == b"*bcdef"
    assert closed_within == [True]
    assert (factory.closedBy, factory.bytesIn, factory.bytesOut) == (
        {"client closed": 1},
        8,
        6,
    )


@pytest_twisted.inlineCallbacks
def test_a_wrapper_between_closes_on_the_next_turn(
    served: List[Any],
) -> Generator[Deferred[Any], Any, None]:
    """
    A ConnectionLimit delivers the end of input: Twisted's own close, after
    its code returns.
    """
    closed_within, received, factory = yield from half_close(
        served, b"^a$", lambda f: ConnectionLimit(f, 5)
    )
    assert closed_within == [False]
    assert received == b"*b"
    assert factory.closedBy == {"client closed": 1}
