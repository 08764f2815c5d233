# -*- test-case-name: tests.unit.test_metrics,tests.integration.test_metrics -*-
"""Prometheus metrics for one incproto service: L{IncprotoCollector} reads
incproto's own counters when scraped, into a registry of the service's own
(L{registry_of}).  L{incproto.serving.web} serves them.

Not C{prometheus_client.twisted.MetricsResource}: that imports the global
reactor, renders in the reactor's shared thread pool, and reads the global
registry.  Here each service has its own registry, whose collector reads
incproto's own counters when scraped, on the reactor thread; nothing is
counted twice and nothing is added to the per-message path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Iterator, Optional, Tuple

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from incproto._kernel.logpipe import dropped_lines

if TYPE_CHECKING:
    from incproto.limit import ConnectionLimit
    from incproto.pools import HandlerPool
    from incproto.protocol import IncrementFactory
    from incproto.proxy import ProxyEndpoint


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
        yield dropped_log_lines(dropped_lines())
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


def dropped_log_lines(count: int) -> CounterMetricFamily:
    """
    The counter of log lines dropped because the log's reader did not keep
    up (see L{incproto._kernel.logpipe}).
    """
    return CounterMetricFamily(
        "incproto_log_lines_dropped",
        "Log lines dropped because the log's reader did not keep up.",
        count,
    )


def _by_reason(
    name: str, documentation: str, counts: Iterable[Tuple[str, int]]
) -> CounterMetricFamily:
    """A counter family with one sample per C{reason} label."""
    family = CounterMetricFamily(name, documentation, labels=["reason"])
    for reason, count in counts:
        family.add_metric([reason], count)
    return family


def registry_of(collector: Any) -> CollectorRegistry:
    """A registry of its own for C{collector}."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(collector)
    return registry
