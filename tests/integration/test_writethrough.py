"""Tests for incproto._kernel.writethrough over real TCP (pytest-twisted):
replies sent at once on plain TCP, through Twisted's buffer when the kernel or
Twisted holds bytes already, and TLS's own write."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any, Generator, List, Tuple

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred

import incproto.protocol
from incproto import ConnectionLimit, IncrementProtocol
from incproto._kernel.sockets import _socket_transport
from incproto._kernel.writethrough import writer
from incproto.proxy import ProxyFactory
from tests.support.formats import V1
from tests.support.helpers import (
    Client,
    FirstBuiltFactory,
    connect,
    connect_port,
    listen_on,
    within,
)

INCREMENT = bytes((i + 1) % 256 for i in range(256))


class BufferWatch(IncrementProtocol):
    """
    Records, after the greeting and after each read is answered, how many
    bytes Twisted holds unsent for the connection: none when the reply went
    straight to the kernel.  C{answered} fires with the list after the first
    read.
    """

    def __init__(self) -> None:
        super().__init__()
        self.held: List[int] = []
        self.answered: Deferred[List[int]] = Deferred()

    def _buffered(self) -> int:
        tcp = _socket_transport(self.transport)
        return int(len(tcp.dataBuffer) - tcp.offset + tcp._tempDataLen)

    def connectionMade(self) -> None:
        super().connectionMade()
        self.held.append(self._buffered())

    def dataReceived(self, data: bytes) -> None:
        super().dataReceived(data)
        self.held.append(self._buffered())
        if not self.answered.called:
            self.answered.callback(self.held)


class WatchFactory(FirstBuiltFactory):
    protocol = BufferWatch


def round_trip(
    served: List[Any], wrap: Any = None, header: bytes = b""
) -> Generator[Deferred[Any], Any, Tuple[List[int], bytes]]:
    """
    Greet, answer C{^abc$} and close; return what Twisted held after each
    write and what the client received.
    """
    factory = WatchFactory()
    served.append(listen_on(wrap(factory) if wrap else factory))
    client = yield connect(served[-1])
    client.transport.write(header + b"^abc$")
    protocol = yield within(factory.built)
    held = yield within(protocol.answered)
    received = yield client.wait_for(4)
    client.transport.loseConnection()
    yield within(client.closed)
    return held, received


@pytest_twisted.inlineCallbacks
def test_replies_go_straight_to_the_kernel(
    served: List[Any],
) -> Generator[Deferred[Any], Any, None]:
    held, received = yield from round_trip(served)
    assert received == b"*bcd"
    assert held == [0, 0]


@pytest_twisted.inlineCallbacks
def test_without_write_through_twisted_holds_each_reply(
    served: List[Any], monkeypatch: pytest.MonkeyPatch
) -> Generator[Deferred[Any], Any, None]:
    """The control for the test above: what it measures is write-through."""
    monkeypatch.setattr(incproto.protocol, "direct", lambda t: None)
    held, received = yield from round_trip(served)
    assert received == b"*bcd"
    assert held == [1, 3]


@pytest_twisted.inlineCallbacks
def test_under_connection_limit(
    served: List[Any],
) -> Generator[Deferred[Any], Any, None]:
    held, received = yield from round_trip(served, lambda f: ConnectionLimit(f, 5))
    assert (held, received) == ([0, 0], b"*bcd")


@pytest_twisted.inlineCallbacks
def test_under_proxy_header(
    served: List[Any],
) -> Generator[Deferred[Any], Any, None]:
    """The PROXY wrapper hands out the TCP transport's own write."""
    held, received = yield from round_trip(
        served, lambda f: ProxyFactory(ConnectionLimit(f, 5)), V1
    )
    assert (held, received) == ([0, 0], b"*bcd")


@pytest_twisted.inlineCallbacks
def test_tls_uses_its_own_write(
    served: List[Any], tmp_path: Path
) -> Generator[Deferred[Any], Any, None]:
    ssl = pytest.importorskip("twisted.internet.ssl")
    from tests.support.certificates import make_certificate

    key, certificate = make_certificate(tmp_path)
    factory = WatchFactory()
    served.append(
        listen_on(
            factory,
            f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={certificate}",
        )
    )
    authority = ssl.Certificate.loadPEM(certificate.read_bytes())
    tls = ssl.optionsForClientTLS("localhost", trustRoot=authority)
    client = yield connect_port(served[-1].getHost().port, tls=tls)
    client.transport.write(b"^abc$")
    protocol = yield within(factory.built)
    assert (yield client.wait_for(4)) == b"*bcd"
    assert protocol._direct is None  # every reply through the TLS transport's write
    client.transport.loseConnection()
    yield within(client.closed)


def shrink(client: Client, server: Any) -> None:
    """Small kernel buffers: a megabyte cannot fit in them."""
    client.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    server.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)


@pytest_twisted.inlineCallbacks
def test_overflow_goes_through_twisted_in_order(
    served: List[Any],
) -> Generator[Deferred[Any], Any, None]:
    """
    A write larger than the kernel takes leaves the rest in Twisted's
    buffer; a later write finds it non-empty and queues behind it.  The
    client, reading only afterwards, gets every byte in order.
    """
    factory = WatchFactory()
    served.append(listen_on(factory))
    client = yield connect(served[-1])
    protocol = yield within(factory.built)
    tcp = protocol.transport
    shrink(client, tcp)
    client.transport.pauseProducing()
    big, small = os.urandom(4 * 1024 * 1024), b"after"
    write = writer(tcp)
    assert write != tcp.write
    write(big)
    held = tcp._tempDataLen
    assert 0 < held < len(big)  # the kernel took some, Twisted the rest
    write(small)
    assert tcp._tempDataLen == held + len(small)
    client.transport.resumeProducing()
    received = yield client.wait_for(1 + len(big) + len(small))
    assert received == b"*" + big + small
    client.transport.loseConnection()
    yield within(client.closed)


@pytest_twisted.inlineCallbacks
def test_large_replies_are_byte_exact(
    served: List[Any],
) -> Generator[Deferred[Any], Any, None]:
    """
    Eight MiB of arbitrary bytes through the protocol, with small kernel
    buffers and the client reading as it sends: replies overflow into
    Twisted's buffer and back; the counts and the log agree.
    """
    factory = WatchFactory()
    served.append(listen_on(factory))
    client = yield connect(served[-1])
    protocol = yield within(factory.built)
    shrink(client, protocol.transport)
    payload = os.urandom(8 * 1024 * 1024).replace(b"$", b"")
    for start in range(0, len(payload), 256 * 1024):
        client.transport.write(
            (b"^" if start == 0 else b"") + payload[start : start + 256 * 1024]
        )
    client.transport.loseWriteConnection()
    received = yield within(client.closed)
    expected = b"*" + payload.translate(INCREMENT)
    assert len(received) == len(expected)
    assert received == expected
    assert protocol.bytesSent == len(expected)
    assert factory.bytesOut == len(expected)
    assert factory.bytesIn == 1 + len(payload)
