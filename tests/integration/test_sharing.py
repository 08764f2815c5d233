"""Sharing one listening socket: what the parent binds for each kind of
--port, and the layers a worker rebuilds over it (TLS, PROXY), over real
sockets in one process."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path
from typing import Any, Generator, Optional

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import UNIXClientEndpoint
from twisted.internet.protocol import Factory

from incproto import IncrementFactory
from incproto.workers.sharing import BoundSocket, adopted_endpoint, bind
from tests.support.formats import v2
from tests.support.helpers import (
    HEADERS,
    Client,
    RecordingFactory,
    client_tls,
    connect_port,
    connect_proxied_tls,
    increment_over,
    within,
)


@pytest.mark.parametrize(
    "description, family, host",
    [
        ("tcp:0:interface=127.0.0.1:backlog=7", "inet", "127.0.0.1"),
        (r"tcp6:0:interface=\:\:1", "inet6", "::1"),
        ("haproxy:tcp:0:interface=127.0.0.1", "inet", "127.0.0.1"),
        ("proxy:tcp:0:interface=127.0.0.1", "inet", "127.0.0.1"),
    ],
)
def test_bind_listens_without_serving(description: str, family: str, host: str) -> None:
    if family == "inet6" and not socket.has_ipv6:
        pytest.skip("no IPv6")
    bound = bind(description)
    try:
        assert bound.family == family
        assert bound.getHost().host == host and bound.getHost().port > 0
        assert bound.socket.getblocking() is False  # shared with the workers
        with socket.create_connection((host, bound.getHost().port), timeout=5):
            pass  # the kernel accepts into the queue; nothing here serves it
    finally:
        bound.stopListening()
    assert bound.socket.fileno() == -1


def test_bind_unix_with_mode(tmp_path: Path) -> None:
    path = tmp_path / "shared.sock"
    bound = bind(f"unix:{path}:mode=600")
    try:
        assert bound.family == "unix"
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    finally:
        bound.stopListening()


def test_bind_failure_raises() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(OSError):
            bind(f"tcp:{taken.getsockname()[1]}:interface=127.0.0.1")


def _serve(description: str) -> tuple[BoundSocket, Any]:
    """Bind like the parent, then adopt and serve like a worker."""
    return _serve_bound(bind(description), description)


@pytest_twisted.inlineCallbacks
def test_worker_serves_the_adopted_socket() -> Generator[Deferred[Any], Any, None]:
    bound, port = _serve("tcp:0:interface=127.0.0.1")
    try:
        client = yield connect_port(bound.getHost().port)
        client.transport.write(b"^abc$")
        assert (yield client.wait_for(4)) == b"*bcd"
        client.transport.loseConnection()
        yield client.closed
    finally:
        bound.stopListening()
        yield port.stopListening()


@pytest_twisted.inlineCallbacks
def test_worker_rebuilds_proxy_over_the_adopted_socket() -> Generator[
    Deferred[Any], Any, None
]:
    bound, port = _serve("proxy:tcp:0:interface=127.0.0.1")
    try:
        client = yield connect_port(bound.getHost().port)
        client.transport.write(v2("192.0.2.50", "192.0.2.2") + b"^xyz$")
        client.transport.loseWriteConnection()
        assert (yield client.closed) == b"*yz{"
    finally:
        bound.stopListening()
        yield port.stopListening()


@pytest_twisted.inlineCallbacks
def test_worker_rebuilds_tls_over_the_adopted_socket(
    tmp_path: Path,
) -> Generator[Deferred[Any], Any, None]:
    ssl = pytest.importorskip("twisted.internet.ssl")
    from tests.support.certificates import make_certificate

    key, certificate = make_certificate(tmp_path)
    bound, port = _serve(
        f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={certificate}"
    )
    authority = ssl.Certificate.loadPEM(certificate.read_bytes())
    tls = ssl.optionsForClientTLS("localhost", trustRoot=authority)
    try:
        client = yield connect_port(bound.getHost().port, tls=tls)
        client.transport.write(b"^abc$")
        assert (yield client.wait_for(4)) == b"*bcd"
        assert client.transport.getPeerCertificate() is not None
        client.transport.loseConnection()
        yield client.closed
    finally:
        bound.stopListening()
        yield port.stopListening()


@pytest.mark.parametrize("header", HEADERS)
@pytest_twisted.inlineCallbacks
def test_worker_reads_the_proxy_header_before_tls(
    tmp_path: Path, header: bytes
) -> Generator[Deferred[Any], Any, None]:
    """
    C{proxy:ssl:} with workers: the supervisor binds plain TCP, and the
    worker reads the PROXY header in clear, then does TLS, as HAProxy's
    C{ssl send-proxy} sends them; the protocol sees the proxied client.
    """
    pytest.importorskip("twisted.internet.ssl")
    from tests.support.certificates import make_certificate

    key, certificate = make_certificate(tmp_path)
    description = (
        f"proxy:ssl:0:interface=127.0.0.1:privateKey={key}:certKey={certificate}"
    )
    factory = RecordingFactory()
    bound, port = _serve_bound(bind(description), description, factory)
    try:
        client = yield connect_proxied_tls(
            bound.getHost().port, header, client_tls(certificate)
        )
        assert (yield increment_over(client)) == b"*bcd"
        assert client.transport.getPeerCertificate() is not None
        protocol = yield within(factory.connected)
        assert protocol.transport.getPeer() == IPv4Address("TCP", "192.0.2.1", 56324)
        client.transport.loseConnection()
        yield within(client.closed)
    finally:
        bound.stopListening()
        yield port.stopListening()


@pytest_twisted.inlineCallbacks
def test_a_worker_stopping_leaves_the_shared_unix_socket(
    tmp_path: Path,
) -> Generator[Deferred[Any], Any, None]:
    """
    The socket and its file are the supervisor's: a worker that stops (on a
    reload, say) must neither shut the socket down nor remove the file, or
    the next workers have nothing to serve; adopting it keeps its mode.
    """
    path = tmp_path / "s.sock"
    description = f"unix:{path}:mode=600"
    bound, port = _serve(description)
    try:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        yield port.stopListening()
        assert path.exists()
        _, again = _serve_bound(bound, description)
        client = yield within(
            UNIXClientEndpoint(reactor, str(path)).connect(Factory.forProtocol(Client))
        )
        assert (yield client.wait_for(1)) == b"*"
        client.transport.loseConnection()
        yield client.closed
        yield again.stopListening()
        assert path.exists()
    finally:
        bound.stopListening()
    assert not path.exists()  # the supervisor removes what it created


def _serve_bound(
    bound: BoundSocket, description: str, factory: Optional[IncrementFactory] = None
) -> tuple[BoundSocket, Any]:
    """Adopt and serve C{bound} like another worker."""
    endpoint = adopted_endpoint(
        reactor, description, os.dup(bound.fileno()), bound.socket.family
    )
    listening: list[Any] = []
    endpoint.listen(factory or IncrementFactory()).addCallback(listening.append)
    return bound, listening[0]
