# -*- test-case-name: tests.unit.test_metrics,tests.integration.test_metrics -*-
"""Prometheus metrics for one incproto service, at /metrics (and its
health, at /healthz: see L{incproto.serving.health}).

Not C{prometheus_client.twisted.MetricsResource}: that imports the global
reactor, renders in the reactor's shared thread pool, and reads the global
registry.  Here each service has its own registry, whose collector reads
incproto's own counters when scraped, on the reactor thread; nothing is
counted twice and nothing is added to the per-message path.
"""

from __future__ import annotations

from typing import (
    Any,
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    Optional,
    Tuple,
    cast,
)

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from incproto.limit import ConnectionLimit
from incproto.pools import HandlerPool
from incproto.protocol import IncrementFactory
from incproto.proxy import ProxyEndpoint
from incproto.serving.health import HealthResource, ReadinessCheck
from incproto.serving.service import ListeningService


class IncprotoCollector:
    """
    Reads the counters of an L{IncrementFactory} and, if given, of its
    L{ConnectionLimit}, L{HandlerPool} and L{ProxyEndpoint}, at each scrape.
    """

    def __init__(
        self,
        factory: IncrementFactory,
        limit: Optional[ConnectionLimit] = None,
        pool: Optional[HandlerPool] = None,
        proxy: Optional[ProxyEndpoint] = None,
    ) -> None:
        self.factory = factory
        self.limit = limit
        self.pool = pool
        self.proxy = proxy

    def collect(self) -> Iterator[Metric]:
        """The metrics, as of now."""
        factory = self.factory
        live = list(factory.connections)
        yield GaugeMetricFamily(
            "incproto_connections_active", "Connections open and served.", len(live)
        )
        yield CounterMetricFamily(
            "incproto_connections_accepted", "Connections served.", factory.accepted
        )
        yield _by_reason(
            "incproto_connections_closed",
            "Connections closed, by reason.",
            sorted(factory.closedBy.items()),
        )
        yield CounterMetricFamily(
            "incproto_received_bytes", "Bytes received from clients.",
            factory.bytesIn + sum(p.bytesReceived for p in live),
        )  # fmt: skip
        yield CounterMetricFamily(
            "incproto_sent_bytes", "Bytes sent to clients.",
            factory.bytesOut + sum(p.bytesSent for p in live),
        )  # fmt: skip
        yield CounterMetricFamily(
            "incproto_handler_errors",
            "Payload handler failures.",
            factory.handlerErrors,
        )
        if self.limit is not None:
            yield from self._limit(self.limit)
        if self.proxy is not None:
            headers = self.proxy.factory
            yield GaugeMetricFamily(
                "incproto_proxy_pending", "Connections waiting for their PROXY header.",
                headers.pending if headers else 0,
            )  # fmt: skip
            yield CounterMetricFamily(
                "incproto_proxy_refused",
                "Connections closed for their PROXY header: malformed, late, or "
                "beyond the connections allowed to wait for one.",
                headers.refused if headers else 0,
            )
        if self.pool is not None:
            yield GaugeMetricFamily(
                "incproto_pool_backlog", "Handler jobs in the pool or waiting for it.",
                self.pool.inFlight + self.pool.waiting,
            )  # fmt: skip
            yield _by_reason(
                "incproto_pool_faults",
                "Handler jobs the pool failed, by reason.",
                [("handler timeout", self.pool.timeouts),
                 ("pool process lost", self.pool.lost)],
            )  # fmt: skip

    def _limit(self, limit: ConnectionLimit) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "incproto_connections_held", "Connections waiting in the queue.", limit.held
        )
        yield _by_reason(
            "incproto_connections_refused",
            "Connections the limit closed, by reason.",
            [("rejected", limit.rejected), ("queue timeout", limit.timedOut),
             ("left the queue", limit.abandoned)],
        )  # fmt: skip


def _by_reason(
    name: str, documentation: str, counts: Iterable[Tuple[str, int]]
) -> CounterMetricFamily:
    """A counter family with one sample per C{reason} label."""
    family = CounterMetricFamily(name, documentation, labels=["reason"])
    for reason, count in counts:
        family.add_metric([reason], count)
    return family


# What a scrape that failed gets: the reason is in the server's log (once,
# as SCRAPE_FAILED), not on a port that may be open to the world.
FAILED_BODY = b"incproto: the metrics could not be collected (see the server log)\n"
SCRAPE_FAILED = "metrics scrape failed"


def _failed(request: Request) -> bytes:
    """
    Set up C{request}'s answer to a failed scrape: status 500 and a short
    text body, which is returned for the caller to write.
    """
    request.setResponseCode(500)
    request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
    return FAILED_BODY


class MetricsResource(Resource):
    """
    Renders a registry in Prometheus's text format, on the reactor thread.

    Every scrape is answered: if collecting or rendering fails, with status
    500 and a short text body, the error being logged once.
    """

    isLeaf = True
    log = Logger()

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()
        self.registry = registry

    def render_GET(self, request: Request) -> bytes:
        """The metrics, or a 500 if they cannot be collected."""
        try:
            body = generate_latest(self.registry)
        except Exception:
            self.log.failure(SCRAPE_FAILED)
            return _failed(request)
        request.setHeader(b"Content-Type", CONTENT_TYPE_LATEST.encode("ascii"))
        return body


def registry_of(collector: Any) -> CollectorRegistry:
    """A registry of its own for C{collector}."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(collector)
    return registry


# A scrape takes milliseconds: a connection silent this long (an idle
# keep-alive, or a request that stopped half-sent) is closed.
REQUEST_TIMEOUT = 10.0
# At most this many scrapers at once (more wait, then are closed): a metrics
# port left open to the world costs a bounded number of descriptors.
MAX_SCRAPERS = 16


def _site(
    resource: Resource, reactor: Any, ready: Optional[ReadinessCheck] = None
) -> Site:
    root = Resource()
    root.putChild(b"metrics", resource)
    if ready is not None:
        root.putChild(b"healthz", HealthResource(ready))
    site = Site(root, timeout=REQUEST_TIMEOUT, reactor=reactor)
    site.noisy = False
    return site


def metrics_site(
    collector: Any, reactor: Any = None, ready: Optional[ReadinessCheck] = None
) -> Site:
    """
    A web site serving C{collector}'s metrics at /metrics, from a registry
    of its own.

    @param reactor: the time source for request timeouts; the global
        reactor by default.
    @param ready: if given, /healthz answers with it (see
        L{incproto.serving.health.HealthResource}).
    """
    return _site(MetricsResource(registry_of(collector)), reactor, ready)


class WorkersCollector:
    """
    The metrics of several worker processes as one scrape: each worker's
    samples with a C{worker} label (sum them in PromQL for the service), and
    the supervisor's own.

    @ivar texts: each worker's metrics in Prometheus's text format, by its
        number, as of this scrape.
    """

    def __init__(self, texts: Dict[int, str], workers: int, restarts: int) -> None:
        self.texts = texts
        self.workers = workers
        self.restarts = restarts

    def collect(self) -> Iterator[Metric]:
        """The merged metrics."""
        yield GaugeMetricFamily(
            "incproto_workers", "Worker processes running.", self.workers
        )
        yield CounterMetricFamily(
            "incproto_worker_restarts", "Worker processes restarted.", self.restarts
        )
        families: Dict[str, Metric] = {}
        for worker, text in sorted(self.texts.items()):
            for family in text_string_to_metric_families(text):
                merged = families.setdefault(
                    family.name,
                    Metric(family.name, family.documentation, family.type),
                )
                for sample in family.samples:
                    labels = {**sample.labels, "worker": str(worker)}
                    merged.samples.append(sample._replace(labels=labels))
        yield from families.values()


class WorkersMetricsResource(Resource):
    """
    Renders the workers' metrics, asked for at each scrape with C{scrape},
    which fires with the L{WorkersCollector} to render.

    Every scrape is answered, once C{scrape} has fired: if it fails, or
    rendering its collector fails, with status 500 and a short text body,
    the error being logged once.  A scraper that went away meanwhile gets
    nothing written.
    """

    isLeaf = True
    log = Logger()

    def __init__(self, scrape: Callable[[], Deferred[WorkersCollector]]) -> None:
        super().__init__()
        self.scrape = scrape

    def render_GET(self, request: Request) -> Any:
        """The merged metrics, once every worker has answered (or timed out)."""
        lost: List[Failure] = []
        request.notifyFinish().addErrback(lost.append)

        def render(collector: WorkersCollector) -> bytes:
            # Rendered straight from the collector: a registry would collect
            # (and parse every worker's answer) once more to describe it.
            return generate_latest(cast(CollectorRegistry, collector))

        def answer(body: bytes) -> None:
            if lost:
                return
            request.setHeader(b"Content-Type", CONTENT_TYPE_LATEST.encode("ascii"))
            request.write(body)
            request.finish()

        def failed(failure: Failure) -> None:
            self.log.failure(SCRAPE_FAILED, failure)
            if not lost:
                request.write(_failed(request))
                request.finish()

        maybeDeferred(self.scrape).addCallback(render).addCallbacks(answer, failed)
        return NOT_DONE_YET


def workers_metrics_site(
    scrape: Callable[[], Deferred[WorkersCollector]],
    reactor: Any = None,
    ready: Optional[ReadinessCheck] = None,
) -> Site:
    """
    A web site serving the workers' merged metrics at /metrics (and, if
    C{ready} is given, the supervisor's health at /healthz).
    """
    return _site(WorkersMetricsResource(scrape), reactor, ready)


def metrics_listener(reactor: Any, description: str, site: Site) -> Any:
    """
    The C{--metrics} listener: C{site} on the endpoint C{description},
    serving at most C{MAX_SCRAPERS} scrapers at once and queueing as many.

    @return: a L{incproto.serving.service.ListeningService} named C{metrics}.
    """
    listener = ListeningService(
        serverFromString(reactor, description),
        ConnectionLimit(site, MAX_SCRAPERS, queueSize=MAX_SCRAPERS, clock=reactor),
        f"{description} (--metrics)",
        what="metrics",
        clock=reactor,
    )
    listener.setName("metrics")
    return listener
