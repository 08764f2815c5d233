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
from twisted.logger import LogEvent, formatEvent, globalLogPublisher
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


def test_a_request_trickling_in_is_closed_at_its_deadline() -> None:
    """The deadline bounds the whole request, not the silence between bytes
    (issue 22: before, a byte every 5 s held the connection for good)."""
    clock = Clock()
    site = metrics_site(IncprotoCollector(IncrementFactory(clock=clock)), clock)
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
    transport = StringTransport()
    channel.makeConnection(transport)
    for byte in b"GET /metrics":
        if transport.disconnecting:
            break
        channel.dataReceived(bytes([byte]))
        clock.advance(1.0)
    assert transport.disconnecting and clock.seconds() == REQUEST_TIMEOUT
    assert site.preambles.timedOut == 1


def scraper(site: Site) -> Tuple[IProtocol, StringTransport]:
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
    transport = StringTransport()
    channel.makeConnection(transport)
    return channel, transport


def test_a_probe_is_answered_whatever_scrapers_wait() -> None:
    """Beyond MAX_SCRAPERS waiting for their request, the one waiting
    longest is closed: a new client, a probe, always gets its turn
    (issue 22: before, drip-feeding scrapers filled the slots and queue and
    /healthz was refused)."""
    clock = Clock()
    argv = ["--port", "tcp:0", "--metrics", "tcp:0"]
    service = makeService(Options.parse(argv), reactor=clock)
    site = service.getServiceNamed("metrics").factory
    slow = [scraper(site) for _ in range(2 * MAX_SCRAPERS)]
    for channel, _ in slow:
        channel.dataReceived(b"G")
    closed = [transport.disconnecting for _, transport in slow]
    assert closed == [True] * MAX_SCRAPERS + [False] * MAX_SCRAPERS
    probe, transport = scraper(site)
    probe.dataReceived(b"GET /healthz HTTP/1.0\r\n\r\n")
    assert transport.value().startswith(b"HTTP/1.0 ")
    assert site.preambles.evicted == MAX_SCRAPERS + 1


def test_a_keep_alive_connection_waits_again_after_its_answer() -> None:
    clock = Clock()
    site = metrics_site(IncprotoCollector(IncrementFactory(clock=clock)), clock)
    channel, transport = scraper(site)
    channel.dataReceived(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert b"200 OK" in transport.value() and not transport.disconnecting
    assert len(site.preambles) == 1  # waiting for the next request
    clock.advance(REQUEST_TIMEOUT)
    assert transport.disconnecting


def test_proxy_header_refusals_are_counted() -> None:
    """Connections closed before their service show in the metrics of a
    proxy: port: the oldest beyond the preambles' bound (at least
    MIN_PREAMBLES, here above one limit slot and no queue), timed out,
    malformed and untrusted."""
    from prometheus_client import generate_latest
    from twisted.internet.testing import MemoryReactorClock

    from incproto._kernel.preambles import MIN_PREAMBLES
    from incproto.serving.metrics import registry_of
    from tests.support.fakes import HalfCloseableTransport

    reactor = MemoryReactorClock()
    argv = ["--port", "proxy:tcp:0", "--max-connections", "1", "--queue", "0"]
    service = makeService(Options.parse(argv), reactor=reactor)
    service.startService()
    [(_, factory, _, _)] = reactor.tcpServers

    def connect(host: str) -> Any:
        protocol = factory.buildProtocol(IPv4Address("TCP", host, 1))
        protocol.makeConnection(
            HalfCloseableTransport(peerAddress=IPv4Address("TCP", host, 1))
        )
        return protocol

    for _ in range(MIN_PREAMBLES + 1):
        connect("127.0.0.1")
    connect("203.0.113.7")  # not a trusted source
    connect("127.0.0.1").dataReceived(b"GET / HTTP/1.1\r\n")  # evicts one more
    samples = metric_samples(generate_latest(registry_of(service.collector)).decode())
    assert samples["incproto_proxy_pending"] == MIN_PREAMBLES - 1
    assert samples["incproto_preambles"] == MIN_PREAMBLES - 1
    assert samples['incproto_proxy_refused_total{reason="malformed"}'] == 1
    assert samples['incproto_proxy_refused_total{reason="untrusted"}'] == 1
    assert samples['incproto_preambles_closed_total{reason="evicted"}'] == 2
    reactor.advance(10.0)  # --handshake-timeout's default
    samples = metric_samples(generate_latest(registry_of(service.collector)).decode())
    assert samples['incproto_preambles_closed_total{reason="timeout"}'] == (
        MIN_PREAMBLES - 1
    )
    assert samples["incproto_preambles"] == 0


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


# Histograms and process metrics ----------------------------------------------


class ClockHandler:
    """A handler that takes C{seconds} of C{clock}'s time per call."""

    def __init__(self, clock: Clock, seconds: float) -> None:
        self.clock, self.seconds = clock, seconds

    def transform(self, payload: bytes) -> bytes:
        self.clock.advance(self.seconds)
        return payload


def scrape(collector: Any) -> dict[str, float]:
    from prometheus_client import generate_latest

    from incproto.serving.metrics import registry_of

    return metric_samples(generate_latest(registry_of(collector)).decode())


def test_connection_duration_and_inline_handler_time() -> None:
    """Each closed connection's duration and each read's handler time."""
    clock = Clock()
    factory = IncrementFactory(clock=clock, handler=ClockHandler(clock, 0.003))
    protocol = factory.buildProtocol(None)
    protocol.makeConnection(StringTransport())
    protocol.dataReceived(b"^ab")
    protocol.dataReceived(b"$xyz")  # no payload: the handler is not called
    clock.advance(2.5)
    protocol.connectionLost(Failure(ConnectionLost()))
    samples = scrape(IncprotoCollector(factory))
    name = "incproto_connection_duration_seconds"
    assert samples[f'{name}_bucket{{le="1.0"}}'] == 0
    assert samples[f'{name}_bucket{{le="10.0"}}'] == 1
    assert samples[f"{name}_count"] == 1
    assert samples[f"{name}_sum"] == pytest.approx(2.503)
    name = "incproto_handler_seconds"
    assert samples[f'{name}_bucket{{le="0.001"}}'] == 0
    assert samples[f'{name}_bucket{{le="0.005"}}'] == 1
    assert samples[f"{name}_count"] == 1
    assert "incproto_pool_job_seconds_count" not in samples


def test_queue_wait() -> None:
    """Every admitted connection's wait: 0 if admitted on arrival."""
    from incproto.limit import ConnectionLimit

    clock = Clock()
    limit = ConnectionLimit(IncrementFactory(clock=clock), 1, clock=clock)
    first, second = (limit.buildProtocol(None) for _ in range(2))
    first.makeConnection(StringTransport())
    second.makeConnection(StringTransport())
    clock.advance(0.2)
    first.connectionLost(Failure(ConnectionLost()))
    samples = scrape(IncprotoCollector(limit.wrappedFactory, limit))
    name = "incproto_queue_wait_seconds"
    assert samples[f'{name}_bucket{{le="0.001"}}'] == 1
    assert samples[f'{name}_bucket{{le="0.1"}}'] == 1
    assert samples[f'{name}_bucket{{le="0.5"}}'] == 2
    assert samples[f"{name}_count"] == 2
    assert samples[f"{name}_sum"] == pytest.approx(0.2)


def test_pool_job_time() -> None:
    """A pool's jobs, from submission to reply; not the inline histogram."""
    from tests.support.pools import ManualPool

    pool = ManualPool()
    factory = IncrementFactory(clock=pool.reactor, pool=pool)
    pool.run(b"a")
    pool.reactor.advance(0.02)
    pool.finish()
    samples = scrape(IncprotoCollector(factory, None, pool))
    name = "incproto_pool_job_seconds"
    assert samples[f'{name}_bucket{{le="0.01"}}'] == 0
    assert samples[f'{name}_bucket{{le="0.05"}}'] == 1
    assert samples[f"{name}_sum"] == pytest.approx(0.02)
    assert "incproto_handler_seconds_count" not in samples


def test_process_metrics() -> None:
    """CPU, memory and open files of the serving process."""
    samples = scrape(IncprotoCollector(IncrementFactory(clock=Clock())))
    assert samples["process_open_fds"] >= 3
    assert samples["process_resident_memory_bytes"] > 0
    assert "process_cpu_seconds_total" in samples


def test_workers_histograms_merge() -> None:
    """Under --workers, each worker's histograms and process metrics carry
    its worker label; summed over workers, buckets, _sum and _count are the
    service's; the supervisor's process metrics are unlabelled."""
    from prometheus_client import ProcessCollector, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from incproto.serving.metrics import registry_of

    texts, clock = {}, Clock()
    for worker, durations in [(1, [0.05, 20.0]), (2, [0.5])]:
        factory = IncrementFactory(clock=clock)
        for duration in durations:
            factory.connectionSeconds.observe(duration)
        collector = IncprotoCollector(factory)
        texts[worker] = generate_latest(registry_of(collector)).decode()
    merged = WorkersCollector(texts, 2, 0, own=ProcessCollector(registry=None))
    text = generate_latest(merged).decode()  # type: ignore[arg-type]
    names = [family.name for family in text_string_to_metric_families(text)]
    assert len(names) == len(set(names))  # one family per name
    samples = metric_samples(text)
    name = "incproto_connection_duration_seconds"

    def summed(sample: str) -> float:
        return sum(
            value
            for key, value in samples.items()
            if key.startswith(sample) and 'worker="' in key
        )

    assert summed(f'{name}_bucket{{le="0.1"') == 1
    assert summed(f'{name}_bucket{{le="1.0"') == 2
    assert summed(f'{name}_bucket{{le="+Inf"') == 3
    assert summed(f"{name}_count") == 3
    assert summed(f"{name}_sum") == pytest.approx(20.55)
    assert samples[f'{name}_count{{worker="2"}}'] == 1
    assert samples['process_open_fds{worker="1"}'] >= 3
    assert samples["process_open_fds"] >= 3  # the supervisor's own


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


def test_only_refused_or_failed_requests_are_logged() -> None:
    """Scrapes and probes that succeed leave no line in the server's log
    (one every few seconds per scraper and probe, even with
    --no-connection-log); a 404 does, in Twisted's combined log format."""
    clock = Clock()
    site = metrics_site(
        IncprotoCollector(IncrementFactory(clock=clock)), clock, lambda: None
    )
    lines: List[str] = []

    def observe(event: LogEvent) -> None:
        lines.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)
    site.doStart()
    try:
        for path in (b"/metrics", b"/healthz", b"/livez", b"/nothing"):
            channel, transport = scraper(site)
            channel.dataReceived(b"GET " + path + b" HTTP/1.0\r\n\r\n")
            assert transport.value().startswith(b"HTTP/1.0 ")
    finally:
        site.doStop()
        globalLogPublisher.removeObserver(observe)
    requests = [line for line in lines if '"GET ' in line]
    assert len(requests) == 1 and '"GET /nothing HTTP/1.0" 404 ' in requests[0]
