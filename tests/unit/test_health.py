"""Tests for incproto.serving.health: /healthz is 200 while listening and not
draining, 503 otherwise, on fake transports, for one process and for a
supervisor of workers."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Tuple

from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport

from incproto.serving.health import service_readiness, supervisor_readiness
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
    serving = [child for child in service if child.name not in ("signals", "systemd")]
    assert serving[-1] is service.getServiceNamed("incproto")


def test_supervisor_readiness() -> None:
    """A supervisor is ready while running, bound and with a live worker."""
    live = [object()]
    pool = SimpleNamespace(
        running=True, listener=SimpleNamespace(port=object()), live=lambda: live
    )
    check = supervisor_readiness(pool)
    assert check() is None
    live = []  # none running, or every one late with its heartbeat
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


def test_livez_answers_while_the_process_runs_even_unready() -> None:
    """/livez is liveness, not readiness: 200 from the reactor before start
    and while draining, when /healthz is 503."""
    clock = MemoryReactorClock()
    argv = ["--port", "tcp:0", "--metrics", "tcp:0"]
    service = makeService(Options.parse(argv), reactor=clock)
    assert fake_get(service, b"/livez") == (200, b"ok\n")
    service.startService()
    service.stopService()
    assert fake_get(service, b"/healthz")[0] == 503
    assert fake_get(service, b"/livez") == (200, b"ok\n")


def test_a_pool_that_cannot_run_makes_the_process_unready() -> None:
    """service_readiness asks the handler pool last: every thread of
    --threads stuck past --handler-timeout is 503, with the pool's reason."""
    listener = SimpleNamespace(running=True, port=object())
    drainer = SimpleNamespace(running=True)
    reason = None
    pool = SimpleNamespace(unable=lambda: reason)
    check = service_readiness(listener, drainer, pool)
    assert check() is None
    reason = "every handler thread is stuck (4 threads)"
    assert check() == reason
    drainer.running = False
    assert check() == "draining or stopped"
