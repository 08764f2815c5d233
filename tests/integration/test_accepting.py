"""Tests for incproto._kernel.accepting on a real listening port: accepts per
reactor turn (pytest-twisted)."""

from __future__ import annotations

import socket
from typing import Any, Generator, List

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol

from incproto._kernel.accepting import AcceptControl
from tests.support.helpers import listen


class Counting(Factory):
    """Builds protocols that do nothing, counting them."""

    def __init__(self) -> None:
        self.built = 0

    def buildProtocol(self, addr: object) -> Protocol:
        self.built += 1
        return Protocol()


def pending_connections(port: Any, count: int) -> List[socket.socket]:
    """C{count} clients connected in the kernel, none accepted yet."""
    port.stopReading()
    clients = []
    for _ in range(count):
        client = socket.socket()
        client.connect(port.socket.getsockname())  # the kernel completes it
        clients.append(client)
    return clients


@pytest_twisted.inlineCallbacks
def test_one_accept_per_turn() -> Generator[Deferred[Any], Any, None]:
    """
    Five connections wait in the listen queue: each reactor turn's read
    of the port accepts one, where Twisted's own batch takes all five.
    """
    factory = Counting()
    port = listen(factory)
    controlled = AcceptControl(port, reactor, perTurn=1)
    clients = pending_connections(port, 5)
    try:
        assert controlled.controls
        port.doRead()
        assert factory.built == 1
        port.doRead()
        assert factory.built == 2
        uncontrolled = listen(Counting())
        more = pending_connections(uncontrolled, 5)
        uncontrolled.doRead()
        assert uncontrolled.factory.built == 5
        clients += more
        yield uncontrolled.stopListening()
    finally:
        for client in clients:
            client.close()
        yield port.stopListening()
