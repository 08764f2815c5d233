# -*- test-case-name: tests.test_metrics -*-
"""Prometheus metrics for one incproto service, at /metrics.

Not C{prometheus_client.twisted.MetricsResource}: that imports the global
reactor, renders in the reactor's shared thread pool, and reads the global
registry.  Here each service has its own registry, whose collector reads
incproto's own counters when scraped, on the reactor thread; nothing is
counted twice and nothing is added to the per-message path.
"""

from __future__ import annotations

from typing import Any, Iterator, Optional

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from incproto.limit import ConnectionLimit
from incproto.offload import Workers
from incproto.protocol import IncrementFactory


class IncprotoCollector:
    """
    Reads the counters of an L{IncrementFactory} and, if given, of its
    L{ConnectionLimit} and L{Workers}, at each scrape.
    """

    def __init__(
        self,
        factory: IncrementFactory,
        limit: Optional[ConnectionLimit] = None,
        workers: Optional[Workers] = None,
    ) -> None:
        self.factory = factory
        self.limit = limit
        self.workers = workers

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
        closed = CounterMetricFamily(
            "incproto_connections_closed", "Connections closed, by reason.",
            labels=["reason"],
        )  # fmt: skip
        for reason, count in sorted(factory.closedBy.items()):
            closed.add_metric([reason], count)
        yield closed
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
        if self.workers is not None:
            yield GaugeMetricFamily(
                "incproto_pool_backlog", "Handler jobs in the pool or waiting for it.",
                self.workers.inFlight + self.workers.waiting,
            )  # fmt: skip

    def _limit(self, limit: ConnectionLimit) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "incproto_connections_held", "Connections waiting in the queue.", limit.held
        )
        refused = CounterMetricFamily(
            "incproto_connections_refused", "Connections the limit closed, by reason.",
            labels=["reason"],
        )  # fmt: skip
        refused.add_metric(["rejected"], limit.rejected)
        refused.add_metric(["queue timeout"], limit.timedOut)
        refused.add_metric(["left the queue"], limit.abandoned)
        yield refused


class MetricsResource(Resource):
    """
    Renders a registry in Prometheus's text format, on the reactor thread.
    """

    isLeaf = True

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()
        self.registry = registry

    def render_GET(self, request: Request) -> bytes:
        """The metrics."""
        request.setHeader(b"Content-Type", CONTENT_TYPE_LATEST.encode("ascii"))
        return generate_latest(self.registry)


def metrics_site(collector: Any) -> Site:
    """
    A web site serving C{collector}'s metrics at /metrics, from a registry
    of its own.
    """
    registry = CollectorRegistry(auto_describe=True)
    registry.register(collector)
    root = Resource()
    root.putChild(b"metrics", MetricsResource(registry))
    site = Site(root)
    site.noisy = False
    return site
