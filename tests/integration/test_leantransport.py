"""Tests for incproto._kernel.leantransport on real listening ports
(pytest-twisted): a leaned TCP port's connections keep no repr yet print
the one Twisted's would, and the serving service leans its ports."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Generator

import pytest_twisted
from twisted.internet import reactor, tcp
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ServerEndpoint

from incproto import IncrementFactory
from incproto._kernel.leantransport import LeanServer, lean
from incproto.serving.service import ListeningService
from tests.support.helpers import RecordingFactory, connect, listen, within


@pytest_twisted.inlineCallbacks
def test_a_leaned_port_makes_the_repr_when_read() -> Generator[
    Deferred[Any], Any, None
]:
    """
    A connection accepted by a leaned port keeps no repr string, prints
    the one Twisted's transport would have, and keeps Twisted's log prefix.
    """
    factory = RecordingFactory()
    port = listen(factory)
    try:
        assert lean(port)
        client = yield connect(port)
        yield within(client.wait_for(1))
        server = yield factory.connected
        transport = server.transport
        number = transport.sessionno
        assert type(transport) is LeanServer
        assert "repstr" not in vars(transport)
        listening = port.getHost().port
        assert repr(transport) == f"<ObservedProtocol #{number} on {listening}>"
        assert transport.logstr == f"ObservedProtocol,{number},127.0.0.1"
        yield port.stopListening()  # a drain: held connections print the same
        assert repr(transport) == f"<ObservedProtocol #{number} on {listening}>"
        client.transport.loseConnection()
        yield within(server.lost)
        assert repr(transport).startswith(f"<- #{number} on ")
    finally:
        yield port.stopListening()


def test_other_ports_are_left_alone(tmp_path: Path) -> None:
    """A UNIX port, and a TCP port whose transport is not Twisted's own,
    keep their transports."""
    unix = reactor.listenUNIX(str(tmp_path / "s"), IncrementFactory())
    custom = listen(IncrementFactory())
    custom.transport = type("Custom", (tcp.Server,), {})  # type: ignore[attr-defined]
    try:
        assert not lean(unix)
        assert not lean(custom)
        assert unix.transport is not LeanServer  # type: ignore[attr-defined]
        assert custom.transport.__name__ == "Custom"  # type: ignore[attr-defined]
    finally:
        unix.stopListening()
        custom.stopListening()


@pytest_twisted.inlineCallbacks
def test_the_service_leans_its_tcp_port() -> Generator[Deferred[Any], Any, None]:
    endpoint = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
    service = ListeningService(endpoint, IncrementFactory(), "tcp:0")
    service.startService()
    try:
        assert service.port is not None
        assert service.port.transport is LeanServer  # type: ignore[attr-defined]
    finally:
        yield service.stopService()
