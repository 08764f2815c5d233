"""Tests for incproto._kernel.accepting: accepts per reactor turn on a real port,
and accept errors (EMFILE) turned into a quiet pause."""

from __future__ import annotations

import socket
from typing import Any, Dict, Generator, List

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.logger import Logger, globalLogPublisher

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


class FakePort:
    """The parts of a Twisted listening port that AcceptControl uses."""

    _logger = Logger(namespace="twisted.internet.tcp.Port")
    numberAccepts = 100
    connected = True
    disconnecting = False

    def __init__(self) -> None:
        self.reading = True

    def doRead(self) -> None:
        pass

    def stopReading(self) -> None:
        self.reading = False

    def startReading(self) -> None:
        self.reading = True


def capture() -> List[Dict[str, Any]]:
    events: List[Dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    return events


def emfile(port: FakePort) -> None:
    # What tcp.Port logs for each failed accept (twisted.internet.tcp._accept).
    port._logger.info(
        "Could not accept new connection ({acceptError})", acceptError="EMFILE"
    )


def test_accept_errors_pause_accepting_and_are_logged_once_per_interval() -> None:
    clock = Clock()
    port = FakePort()
    control = AcceptControl(port, clock, backoff=1.0, logInterval=10.0)
    events = capture()
    try:
        for _ in range(1000):
            emfile(port)
        port._logger.info("other port news")
        assert not port.reading
        assert control.acceptErrors == 1000
        warned = [e for e in events if "cannot accept" in e.get("log_format", "")]
        assert len(warned) == 1
        assert not [e for e in events if "acceptError" in e]
        assert [e["log_format"] for e in events if "news" in e["log_format"]]
        clock.advance(1.0)
        assert port.reading  # tries again after the back-off
        clock.advance(9.0)
        [summary] = [e for e in events if "more accept errors" in e["log_format"]]
        assert summary["count"] == 999
    finally:
        globalLogPublisher.removeObserver(events.append)
        control.stop()


def test_pause_holds_until_every_reason_resumes() -> None:
    port = FakePort()
    control = AcceptControl(port, Clock())
    control.pause("limit")
    control.pause("proxy")
    control.resume("limit")
    assert not port.reading
    control.resume("proxy")
    assert port.reading
    assert control.pauses == 1


def test_a_port_it_cannot_control_is_left_alone() -> None:
    class Other:
        pass

    control = AcceptControl(Other(), Clock())
    control.pause("limit")
    assert not control.controls
    assert not control.paused
