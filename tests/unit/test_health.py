"""/healthz: 200 while listening and not draining, 503 otherwise; on fake
transports, over real HTTP during a drain, and from a supervisor of workers."""

from __future__ import annotations

import re
import socket
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Generator, Tuple

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.web.client import Agent, readBody

from incproto.serving.health import supervisor_readiness
from incproto.tap import Options, makeService
from tests.support.helpers import Client, connect, within
from tests.support.processes import TIMEOUT, ServerProcess, script, wait_until


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


@pytest_twisted.inlineCallbacks
def test_healthz_over_real_http() -> Generator[Deferred[Any], Any, None]:
    """Over real TCP: 200 ok while serving, with a connection open."""
    argv = ["--port", "tcp:0:interface=127.0.0.1"]
    argv += ["--metrics", "tcp:0:interface=127.0.0.1"]
    service = makeService(Options.parse(argv), reactor=reactor)
    service.startService()
    port = service.getServiceNamed("incproto").port
    metrics_port = service.getServiceNamed("metrics").port.getHost().port
    url = f"http://127.0.0.1:{metrics_port}/healthz".encode()
    try:
        client: Client = yield connect(port)
        yield client.wait_for(1)
        response = yield within(Agent(reactor).request(b"GET", url))
        body = yield within(readBody(response))
        assert (response.code, body) == (200, b"ok\n")
        assert response.headers.getRawHeaders(b"cache-control") == [b"no-store"]
        client.transport.loseConnection()
        yield within(client.closed)
    finally:
        yield within(service.stopService())


def http_get(port: int, path: str) -> Tuple[int, str]:
    """A blocking GET on 127.0.0.1; the status code and the body."""
    url = f"http://127.0.0.1:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_supervisor_healthz_in_a_real_process(tmp_path: Path) -> None:
    """twistd incproto --workers 2 --metrics PORT: /healthz is 200 once the
    workers are up."""
    metrics = free_port()
    server = ServerProcess(
        [script("twistd"), "-n", "--pidfile=", "incproto",
         "--port", "tcp:0:interface=127.0.0.1", "--workers", "2",
         "--metrics", str(metrics)],
        tmp_path,
        listening=re.compile(rb"metrics listening on \S+:(\d+)"),
    )  # fmt: skip
    try:
        assert server.port == metrics
        server.wait_for(re.compile(r"worker 2 started"))
        wait_until(lambda: http_get(metrics, "/healthz") == (200, "ok\n"), "ready")
    finally:
        server.stop()
    assert "Traceback" not in server.output
