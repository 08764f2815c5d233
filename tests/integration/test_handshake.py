"""Connections before their service, over real TCP and TLS on 127.0.0.1
(issue 22): silent TLS clients and header-less PROXY clients hold no slot,
are closed at --handshake-timeout, and legitimate clients are served
meanwhile; PROXY headers from untrusted sources are refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Generator, List

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory

from incproto.tap import Options, makeService
from tests.support.certificates import make_certificate
from tests.support.formats import V1
from tests.support.helpers import (
    Client,
    client_tls,
    connect_port,
    connect_proxied_tls,
    increment_over,
    within,
)


class Stalled(Client):
    """A client that sends C{first} (by default nothing: no ClientHello,
    no header), then nothing more."""

    def __init__(self, first: bytes = b"") -> None:
        super().__init__()
        self.first = first

    def connectionMade(self) -> None:
        if self.first:
            self.transport.write(self.first)


@inlineCallbacks
def stalled(port: int, count: int, first: bytes = b"") -> Any:
    """C{count} connected L{Stalled} clients."""
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
    clients = []
    for _ in range(count):
        client = Stalled(first)
        yield within(endpoint.connect(Factory.forProtocol(lambda c=client: c)))
        clients.append(client)
    return clients


def close_all(clients: List[Client]) -> None:
    for client in clients:
        if client.reason is None:
            client.transport.abortConnection()


def start(argv: List[str]) -> Any:
    service = makeService(Options.parse(argv), reactor=reactor)
    service.startService()
    return service


def port_of(service: Any) -> int:
    return int(service.getServiceNamed("incproto").port.getHost().port)


def tls_client(port: int, certificate: Path) -> Deferred[Any]:
    client = Client()
    endpoint = wrapClientTLS(
        client_tls(certificate), TCP4ClientEndpoint(reactor, "127.0.0.1", port)
    )
    d = within(endpoint.connect(Factory.forProtocol(lambda: client)))
    return d.addCallback(lambda _: client)


@pytest_twisted.inlineCallbacks
def test_silent_tls_clients_hold_no_slot_and_time_out(
    tmp_path: Path,
) -> Generator[Deferred[Any], Any, None]:
    """
    Before: with --max-connections 2 --queue 0, two TCP connections that
    never send a ClientHello took both slots and every TLS client was
    rejected; they stayed open for good.
    """
    pytest.importorskip("twisted.internet.ssl")
    key, certificate = make_certificate(tmp_path)
    service = start(
        ["--port", f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={certificate}",
         "--max-connections", "2", "--queue", "0", "--handshake-timeout", "1"]
    )  # fmt: skip
    port = port_of(service)
    silent = yield stalled(port, 5)
    try:
        for _ in range(3):
            client = yield tls_client(port, certificate)
            assert (yield increment_over(client)) == b"*bcd"
            client.transport.loseConnection()
            yield within(client.closed)
        for each in silent:  # closed at the deadline: a FIN, no TLS
            assert (yield within(each.closed)) == b""
            assert each.reason is not None and each.reason.check(ConnectionDone)
        assert service.collector.preambles.timedOut == 5
    finally:
        close_all(silent)
        yield service.stopService()


@pytest_twisted.inlineCallbacks
def test_header_less_proxy_clients_do_not_lock_out_others() -> Generator[
    Deferred[Any], Any, None
]:
    """
    Before: with --max-connections 2 --queue 0, as many connections without
    a header as the limit held every place for a header, and each new
    client was closed at once until the header timeout (30 s).
    """
    service = start(
        ["--port", "proxy:tcp:0:interface=127.0.0.1",
         "--max-connections", "2", "--queue", "0"]
    )  # fmt: skip
    port = port_of(service)
    silent = yield stalled(port, 64)  # as many as may wait (MIN_PREAMBLES)
    try:
        for _ in range(3):
            client = yield connect_port(port)
            client.transport.write(V1 + b"^abc$")
            assert (yield client.wait_for(4)) == b"*bcd"
            client.transport.loseConnection()
            yield within(client.closed)
        # The first made room (the oldest silent one closed); each one done
        # freed its place for the next.
        assert service.collector.preambles.maxPreambles == 64
        assert service.collector.preambles.evicted == 1
        assert (yield within(silent[0].closed)) == b""
    finally:
        close_all(silent)
        yield service.stopService()


@pytest_twisted.inlineCallbacks
def test_proxy_then_tls_is_one_preamble(
    tmp_path: Path,
) -> Generator[Deferred[Any], Any, None]:
    """Under proxy:ssl: the header and the handshake share one deadline and
    one place: a header without a handshake is closed at the deadline, and
    a client that does both is served."""
    pytest.importorskip("twisted.internet.ssl")
    key, certificate = make_certificate(tmp_path)
    service = start(
        ["--port", "proxy:ssl:0:interface=127.0.0.1:"
         f"privateKey={key}:certKey={certificate}",
         "--max-connections", "1", "--queue", "0", "--handshake-timeout", "1"]
    )  # fmt: skip
    port = port_of(service)
    silent = yield stalled(port, 1, V1)  # a header, then no ClientHello
    try:
        client = yield connect_proxied_tls(port, V1, client_tls(certificate))
        assert (yield increment_over(client)) == b"*bcd"
        assert (yield within(silent[0].closed)) == b""
        preambles = service.collector.preambles
        assert (preambles.timedOut, len(preambles)) == (1, 0)
        client.transport.loseConnection()
        yield within(client.closed)
    finally:
        close_all(silent)
        yield service.stopService()


@pytest_twisted.inlineCallbacks
def test_a_header_from_an_untrusted_source_is_refused() -> Generator[
    Deferred[Any], Any, None
]:
    """
    Before: 127.0.0.1 could claim any address, past --max-per-peer, and the
    forged address was logged.
    """
    service = start(
        ["--port", "proxy:tcp:0:interface=127.0.0.1:trusted=10.0.0.0/8",
         "--max-connections", "10", "--max-per-peer", "2"]
    )  # fmt: skip
    port = port_of(service)
    try:
        client = yield connect_port(port)
        client.transport.write(V1 + b"^abc$")
        assert (yield within(client.closed)) == b""
        assert service.collector.proxy.factory.untrusted == 1
        assert service.factory.accepted == 0
    finally:
        yield service.stopService()
