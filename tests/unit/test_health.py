"""Tests for incproto.serving.health: /healthz is 200 while listening and not
draining, 503 otherwise, on fake transports, for one process and for a
supervisor of workers."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Tuple

from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport

from incproto.serving.health import supervisor_readiness
from incproto.tap import Options, makeService


def fake_get(service: Any, path: bytes) -> Tuple[int, bytes]:
    """GET C{path} from the service's metrics listener over a fake
    transport; the status code and the body."""
    factory = service.getServiceNamed("metrics").factory
    protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
    transport = StringTransport()
    protocol.makeConnection(transport)
    protocol.dataReceived(b"GET " + path + b" HTTP/1.0\r\n\r\n")
    head, _, body = transport.value().partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, body


def test_ready_only_while_listening_and_not_draining() -> None:
    """Before start: 503; listening: 200 ok; once stopping: 503, while
    /metrics still answers (the metrics listener stops last)."""
    clock = MemoryReactorClock()
    argv = ["--port", "tcp:0", "--metrics", "tcp:0"]
    service = makeService(Options.parse(argv), reactor=clock)
    assert fake_get(service, b"/healthz") == (503, b"draining or stopped\n")
    service.startService()
    assert fake_get(service, b"/healthz") == (200, b"ok\n")
    # The listener alone stopping (its port closed) is enough to be unready.
    service.getServiceNamed("incproto").stopService()
    assert fake_get(service, b"/healthz") == (503, b"not listening\n")
    service.stopService()
    assert fake_get(service, b"/healthz") == (503, b"draining or stopped\n")
    assert fake_get(service, b"/metrics")[0] == 200


def test_metrics_listener_stops_last() -> None:
    """The metrics listener is the first child, so it stops after the
    drain and the pool."""
    service = makeService(
        Options.parse(["--port", "tcp:0", "--metrics", "tcp:0", "--threads", "1"]),
        reactor=MemoryReactorClock(),
    )
    assert next(iter(service)) is service.getServiceNamed("metrics")
    serving = [child for child in service if child.name != "signals"]
    assert serving[-1] is service.getServiceNamed("incproto")


def test_supervisor_readiness() -> None:
    """A supervisor is ready while running, bound and with a live worker."""
    pool = SimpleNamespace(
        running=True, listener=SimpleNamespace(port=object()), workers={1: object()}
    )
    check = supervisor_readiness(pool)
    assert check() is None
    pool.workers = {}
    assert check() == "no live workers"
    pool.listener.port = None
    assert check() == "not listening"
    pool.running = False
    assert check() == "stopping"


def test_supervisor_serves_healthz() -> None:
    """With --workers, the supervisor's --metrics listener has /healthz."""
    service = makeService(
        Options.parse(["--port", "tcp:0", "--metrics", "tcp:0", "--workers", "2"]),
        reactor=MemoryReactorClock(),
    )
    assert fake_get(service, b"/healthz") == (503, b"stopping\n")
    # Stopped last, as in one process: see test_workers's
    # test_healthz_outlives_the_workers_drain.
    assert next(iter(service)) is service.getServiceNamed("metrics")
