"""Tests for incproto.serving.metrics on a fake transport and a Clock: what the
metrics count, the scrapers' limits, and every scrape answered (a 500 if it
fails)."""

from __future__ import annotations

from typing import Any, Iterator, List, Tuple

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IProtocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.web.server import Site

from incproto import IncrementFactory
from incproto.serving.metrics import IncprotoCollector
from incproto.serving.web import (
    FAILED_BODY,
    MAX_SCRAPERS,
    REQUEST_TIMEOUT,
    SCRAPE_FAILED,
    metrics_site,
)
from incproto.tap import Options, makeService
from incproto.workers.metrics import WorkersCollector, workers_metrics_site
from tests.support.formats import metric_samples


def test_a_silent_or_half_sent_request_is_closed() -> None:
    """A scrape connection that goes quiet, even mid-request, is closed."""
    clock = Clock()
    site = metrics_site(IncprotoCollector(IncrementFactory(clock=clock)), clock)
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
    transport = StringTransport()
    channel.makeConnection(transport)
    channel.dataReceived(b"GET /metr")
    clock.advance(REQUEST_TIMEOUT - 1)
    assert not transport.disconnecting
    clock.advance(1)
    assert transport.disconnecting


def test_scrapers_are_capped() -> None:
    """At most MAX_SCRAPERS connections are served, as many wait, the rest
    are closed."""
    clock = Clock()
    argv = ["--port", "tcp:0", "--metrics", "tcp:0"]
    service = makeService(Options.parse(argv), reactor=clock)
    factory = service.getServiceNamed("metrics").factory
    transports = []
    for _ in range(2 * MAX_SCRAPERS + 1):
        protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
        transports.append(StringTransport())
        protocol.makeConnection(transports[-1])
    assert (factory.active, factory.held, factory.rejected) == (
        MAX_SCRAPERS,
        MAX_SCRAPERS,
        1,
    )
    assert transports[-1].disconnecting


def test_proxy_header_refusals_are_counted() -> None:
    """Connections closed for their PROXY header show in the metrics of a
    proxy: port: two beyond the bound of one limit slot and no queue."""
    from prometheus_client import generate_latest
    from twisted.internet.testing import MemoryReactorClock

    from incproto.serving.metrics import registry_of
    from tests.support.fakes import HalfCloseableTransport

    reactor = MemoryReactorClock()
    argv = ["--port", "proxy:tcp:0", "--max-connections", "1", "--queue", "0"]
    service = makeService(Options.parse(argv), reactor=reactor)
    service.startService()
    [(_, factory, _, _)] = reactor.tcpServers
    for _ in range(3):
        protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
        protocol.makeConnection(HalfCloseableTransport())
    samples = metric_samples(generate_latest(registry_of(service.collector)).decode())
    assert samples["incproto_proxy_pending"] == 1
    assert samples["incproto_proxy_refused_total"] == 2


def test_pool_faults_are_counted_by_reason() -> None:
    from prometheus_client import generate_latest

    from incproto import IncrementFactory
    from incproto.serving.metrics import IncprotoCollector, registry_of
    from tests.support.pools import ManualPool

    pool = ManualPool()
    pool.timeouts, pool.lost = 2, 3
    collector = IncprotoCollector(IncrementFactory(pool=pool), None, pool)
    samples = metric_samples(generate_latest(registry_of(collector)).decode())
    assert samples['incproto_pool_faults_total{reason="handler timeout"}'] == 2
    assert samples['incproto_pool_faults_total{reason="pool process lost"}'] == 3


# Every scrape is answered ---------------------------------------------------


class Broken:
    """A collector that fails at each scrape."""

    def describe(self) -> List[Any]:
        return []  # registering it does not collect

    def collect(self) -> Iterator[Any]:
        raise RuntimeError("broken collector")
        yield


@pytest.fixture
def failures() -> Iterator[List[LogEvent]]:
    """The failures logged while the test runs."""
    events: List[LogEvent] = []

    def observe(event: LogEvent) -> None:
        if "log_failure" in event:
            events.append(event)

    globalLogPublisher.addObserver(observe)
    yield events
    globalLogPublisher.removeObserver(observe)


def ask(site: Site) -> Tuple[IProtocol, StringTransport]:
    """Send GET /metrics over HTTP/1.0 to C{site}: the server's side of the
    connection, and its transport (which it closes once it has answered)."""
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
    assert channel is not None
    transport = StringTransport()
    channel.makeConnection(transport)
    channel.dataReceived(b"GET /metrics HTTP/1.0\r\n\r\n")
    return channel, transport


def get(site: Site) -> Tuple[bytes, StringTransport]:
    """What C{site} sends back so far to GET /metrics, and the transport."""
    _, transport = ask(site)
    return transport.value(), transport


def assert_failed(response: bytes, transport: StringTransport) -> None:
    """A complete answer: 500, short text, the connection closed."""
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 500 ")
    assert b"content-type: text/plain; charset=utf-8" in head.lower()
    assert body == FAILED_BODY
    assert transport.disconnecting


def test_a_collector_that_raises_gets_a_500(failures: List[LogEvent]) -> None:
    clock = Clock()
    assert_failed(*get(metrics_site(Broken(), clock)))
    assert [f["log_failure"].value.args for f in failures] == [("broken collector",)]
    assert failures[0]["log_format"] == SCRAPE_FAILED


def test_workers_collector_that_raises_gets_a_500(
    failures: List[LogEvent],
) -> None:
    """A worker's answer that cannot be parsed fails the rendering, after
    the scrape fired: the request is still answered."""
    collector = WorkersCollector({1: "not { prometheus"}, 1, 0)
    scraped: Deferred[WorkersCollector] = Deferred()
    response, transport = get(workers_metrics_site(lambda: scraped, Clock()))
    assert response == b"" and not transport.disconnecting
    scraped.callback(collector)
    assert_failed(transport.value(), transport)
    assert len(failures) == 1 and failures[0]["log_format"] == SCRAPE_FAILED


def test_a_scrape_that_fails_gets_a_500(failures: List[LogEvent]) -> None:
    site = workers_metrics_site(lambda: fail(ValueError("no workers")), Clock())
    assert_failed(*get(site))
    assert [f["log_failure"].value.args for f in failures] == [("no workers",)]


def test_a_scrape_that_raises_gets_a_500(failures: List[LogEvent]) -> None:
    def scrape() -> Deferred[WorkersCollector]:
        raise ValueError("no workers")

    assert_failed(*get(workers_metrics_site(scrape, Clock())))
    assert len(failures) == 1


@pytest.mark.parametrize("outcome", ["scraped", "failed"])
def test_a_scraper_gone_is_not_written_to(
    outcome: str, failures: List[LogEvent]
) -> None:
    scraped: Deferred[WorkersCollector] = Deferred()
    channel, transport = ask(workers_metrics_site(lambda: scraped, Clock()))
    channel.connectionLost(Failure(ConnectionLost()))
    transport.clear()
    if outcome == "scraped":
        scraped.callback(WorkersCollector({}, 1, 0))
        assert failures == []
    else:
        scraped.errback(ValueError("no workers"))
        assert len(failures) == 1  # logged even so
    assert transport.value() == b""


def test_dropped_log_lines_are_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    """The log lines this process dropped (incproto._kernel.logpipe) are a
    counter of every scrape."""
    from incproto.serving import metrics

    monkeypatch.setattr(metrics, "dropped_lines", lambda: 4)
    collector = IncprotoCollector(IncrementFactory(clock=Clock()))
    names = {m.name: m for m in collector.collect()}
    assert names["incproto_log_lines_dropped"].samples[0].value == 4


def test_workers_dropped_log_lines_merge_with_the_supervisors() -> None:
    """Under --workers, each worker's count has its worker label, and the
    supervisor's own count (its stdout) has none, in one family."""
    worker = (
        "# HELP incproto_log_lines_dropped_total Dropped.\n"
        "# TYPE incproto_log_lines_dropped_total counter\n"
        "incproto_log_lines_dropped_total 5.0\n"
    )
    collector = WorkersCollector({1: worker, 2: worker}, 2, 0, droppedLines=3)
    [family] = [
        m for m in collector.collect() if m.name == "incproto_log_lines_dropped"
    ]
    samples = {tuple(s.labels.items()): s.value for s in family.samples}
    assert samples == {(): 3, (("worker", "1"),): 5, (("worker", "2"),): 5}
