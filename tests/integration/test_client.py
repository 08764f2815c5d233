"""incproto-client's modes over real TCP and TLS on 127.0.0.1 (pytest-twisted),
against incproto and against broken servers."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Generator

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure

from incproto import IncrementFactory
from incproto.client.connection import ClientError, Target, tls_options
from incproto.client.modes import (
    Burst,
    Churn,
    Ping,
    Series,
    Stream,
)
from incproto.client.report import Result
from tests.support.helpers import listen, within


@pytest.fixture
def port() -> Generator[int, None, None]:
    listening = listen(IncrementFactory(), backlog=1024)
    yield listening.getHost().port
    listening.stopListening()


def target(port: int, timeout: float = 10.0) -> Target:
    return Target(reactor, "127.0.0.1", port, timeout)


@pytest_twisted.inlineCallbacks
def test_ping_stream_burst_churn(port: int) -> Generator[Any, Any, None]:
    ping = yield within(Ping(target(port), 5, 100, 0.3).run())
    assert ping["messages"] > 5 and ping["rate"] > 0
    assert 0 < ping["latency_p50"] <= ping["latency_p99"]
    stream = yield within(Stream(target(port), 8).run())
    assert stream["bytes"] == 8 * 1024 * 1024 and stream["mb_per_s"] > 0
    burst = yield within(Burst(target(port), 200).run())
    assert burst["connections"] == 200 and burst["seconds"] > 0
    churn = yield within(Churn(target(port), 4, 0.3).run())
    assert churn["connections"] > 4 and churn["rate"] > 0


def failure_of(run: Deferred[Result]) -> Deferred[str]:
    """The one-line reason a run failed with; a test failure if it did not."""

    def succeeded(result: Result) -> str:
        raise AssertionError(f"the run did not fail: {result}")

    def failed(failure: Failure) -> str:
        failure.trap(ClientError)
        return str(failure.value)

    return within(run).addCallbacks(succeeded, failed)


# Broken servers: every fault is one line naming the connection ------------------


class Wrong(Protocol):
    """Greets, then answers every chunk with b"x"."""

    def connectionMade(self) -> None:
        self.transport.write(b"*")  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(b"x")  # type: ignore[union-attr]


class Mute(Protocol):
    """Never greets."""


class Hangup(Wrong):
    """Greets, then closes when the client speaks."""

    def dataReceived(self, data: bytes) -> None:
        self.transport.loseConnection()  # type: ignore[union-attr]


OWED = "bytes owed"


@pytest.mark.parametrize(
    "server, mode, expected",
    [
        (Wrong, "ping", r"connection \d+: reply byte 0 is b'x', expected b'b'"),
        (Mute, "ping", r"connection \d+: no greeting within 0.5 s"),
        (Hangup, "burst", r"connection \d+: closed by the server with 5 reply " + OWED),
        (Hangup, "series", r"connection 1: closed by the server with 7 reply " + OWED),
    ],
)  # fmt: skip
@pytest_twisted.inlineCallbacks
def test_faults_fail_the_run(
    server: type, mode: str, expected: str
) -> Generator[Any, Any, None]:
    listening = listen(Factory.forProtocol(server))
    to = target(listening.getHost().port, timeout=0.5)
    run = {
        "ping": lambda: Ping(to, 3, 4, 5.0, timeout=0.5),
        "burst": lambda: Burst(to, 10, timeout=0.5),
        "series": lambda: Series(to, 1, timeout=0.5),
    }[mode]()
    try:
        error = yield failure_of(run.run())
    finally:
        listening.stopListening()
    assert re.fullmatch(expected, error), error


@pytest_twisted.inlineCallbacks
def test_a_refused_connection_fails_the_run() -> Generator[Any, Any, None]:
    listening = listen(IncrementFactory())
    port = listening.getHost().port
    yield listening.stopListening()
    error = yield failure_of(Series(target(port), 2).run())
    assert f"connection 1: 127.0.0.1:{port}:" in error
    assert "refused" in error


def test_unresolvable_names_are_one_line() -> None:
    with pytest.raises(ClientError, match=r"cannot resolve no-such-host\.invalid"):
        Target(reactor, "no-such-host.invalid", 1, 1.0)


@pytest_twisted.inlineCallbacks
def test_tls(tmp_path: Path) -> Generator[Any, Any, None]:
    """
    Over TLS (which Twisted cannot half-close) the series waits for its
    replies before closing; the server's certificate is checked.
    """
    pytest.importorskip("twisted.internet.ssl")
    from twisted.internet.endpoints import serverFromString

    from tests.support.certificates import make_certificate

    key, certificate = make_certificate(tmp_path)
    listening = yield serverFromString(
        reactor,
        f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={certificate}",
    ).listen(IncrementFactory())
    port = listening.getHost().port
    try:
        trusted = tls_options("localhost", str(certificate))
        series = Series(Target(reactor, "localhost", port, 10.0, trusted), 2)
        yield within(series.run())
        ping = yield within(
            Ping(Target(reactor, "127.0.0.1", port, 10.0, trusted), 2, 8, 0.2).run()
        )
        assert ping["messages"] > 0
        untrusted = Target(reactor, "localhost", port, 10.0, tls_options("localhost"))
        error = yield failure_of(Ping(untrusted, 1, 8, 0.2).run())
        assert (
            error == "connection 1: lost (TLS: certificate verify failed) "
            "before the greeting"
        )
    finally:
        yield listening.stopListening()
