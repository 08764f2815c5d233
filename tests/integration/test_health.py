"""/healthz over real HTTP while a connection is open (pytest-twisted)."""

from __future__ import annotations

from typing import Any, Generator

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.web.client import Agent, readBody

from incproto.tap import Options, makeService
from tests.support.helpers import Client, connect, within


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
