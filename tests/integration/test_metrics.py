"""Prometheus metrics scraped over real HTTP while traffic runs
(pytest-twisted)."""

from __future__ import annotations

from typing import Any, Dict, Generator

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.web.client import Agent, readBody

from incproto.tap import Options, makeService
from tests.support.formats import metric_samples
from tests.support.helpers import Client, connect, within


@pytest_twisted.inlineCallbacks
def test_metrics_move_with_traffic() -> Generator[Deferred[Any], Any, None]:
    argv = ["--port", "tcp:0:interface=127.0.0.1", "--max-connections", "1"]
    argv += ["--queue", "0", "--metrics", "tcp:0:interface=127.0.0.1"]
    service = makeService(Options.parse(argv), reactor=reactor)
    service.startService()
    port = service.getServiceNamed("incproto").port
    url = f"http://127.0.0.1:{service.getServiceNamed('metrics').port.getHost().port}/metrics"
    agent = Agent(reactor)

    def scrape() -> Deferred[Dict[str, float]]:
        d = agent.request(b"GET", url.encode())
        d.addCallback(lambda response: readBody(response))
        return within(d.addCallback(lambda body: metric_samples(body.decode())))

    try:
        before = yield scrape()
        client: Client = yield connect(port)
        yield client.wait_for(1)
        rejected: Client = yield connect(port)
        yield within(rejected.closed)
        client.transport.write(b"^abc$")
        yield client.wait_for(4)
        during = yield scrape()
        client.transport.loseConnection()
        yield within(client.closed)
        after = yield scrape()
    finally:
        yield service.stopService()
    assert before["incproto_connections_active"] == 0
    assert during["incproto_connections_active"] == 1
    assert (
        during["incproto_received_bytes_total"]
        - before["incproto_received_bytes_total"]
        == 5
    )
    assert (
        during["incproto_sent_bytes_total"] - before["incproto_sent_bytes_total"] == 4
    )
    assert during['incproto_connections_refused_total{reason="rejected"}'] == 1
    assert after["incproto_connections_active"] == 0
    assert after['incproto_connections_closed_total{reason="client closed"}'] == 1
    assert after["incproto_connections_accepted_total"] == 1
    assert after["incproto_connections_held"] == 0
    assert after["incproto_handler_errors_total"] == 0
