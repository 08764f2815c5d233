# -*- test-case-name: tests.unit.test_metrics,tests.integration.test_metrics -*-
"""Prometheus metrics for one incproto service: L{IncprotoCollector} reads
incproto's own counters and histograms when scraped, into a registry of the
service's own (L{registry_of}), with the process's own metrics.
L{incproto.serving.web} serves them.

Not C{prometheus_client.twisted.MetricsResource}: that imports the global
reactor, renders in the reactor's shared thread pool, and reads the global
registry.  Here each service has its own registry, whose collector reads
incproto's own counters when scraped, on the reactor thread; nothing is
counted twice.  The per-message path pays only the inline handler's
histogram: two clock reads and one observation per read with payload.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Iterator, Optional, Tuple

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

from incproto._kernel.histogram import Histogram
from incproto._kernel.logpipe import dropped_lines

if TYPE_CHECKING:
    from incproto._kernel.preambles import Preambles
    from incproto.limit import ConnectionLimit
    from incproto.pools import HandlerPool
    from incproto.protocol import IncrementFactory
    from incproto.proxy import ProxyEndpoint
    from incproto.serving.service import ListeningService
    from incproto.serving.watchdog import Heartbeat


class IncprotoCollector:
    """
    Reads the counters of an L{IncrementFactory} and, if given, of its
    L{ConnectionLimit}, L{HandlerPool}, L{ProxyEndpoint}, the
    L{Preambles} of its port, its L{ListeningService} (its accept
    wake-ups) and its L{Heartbeat}, at each scrape.
    """

    def __init__(
        self,
        factory: IncrementFactory,
        limit: Optional[ConnectionLimit] = None,
        pool: Optional[HandlerPool] = None,
        proxy: Optional[ProxyEndpoint] = None,
        preambles: Optional[Preambles] = None,
        listener: Optional[ListeningService] = None,
        heartbeat: Optional[Heartbeat] = None,
    ) -> None:
        self.factory = factory
        self.limit = limit
        self.pool = pool
        self.proxy = proxy
        self.preambles = preambles
        self.listener = listener
        self.heartbeat = heartbeat

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
        yield _histogram(
            "incproto_connection_duration_seconds",
            "How long closed connections were open.",
            factory.connectionSeconds,
        )
        if self.pool is None:
            yield _histogram(
                "incproto_handler_seconds",
                "How long the inline handler took per read's payload.",
                factory.handlerSeconds,
            )
        yield dropped_log_lines(dropped_lines())
        if self.limit is not None:
            yield from self._limit(self.limit)
        accepting = self.listener.accepting if self.listener is not None else None
        if accepting is not None:
            yield CounterMetricFamily(
                "incproto_accept_wakeups",
                "Times the listening socket was found readable.",
                accepting.wakeups,
            )
            yield CounterMetricFamily(
                "incproto_accept_wakeups_empty",
                "Wake-ups that accepted no connection (another worker took it, "
                "or this one left it to a less busy worker).",
                accepting.emptyWakeups,
            )
        if self.proxy is not None:
            headers = self.proxy.factory
            yield GaugeMetricFamily(
                "incproto_proxy_pending", "Connections waiting for their PROXY header.",
                headers.pending if headers else 0,
            )  # fmt: skip
            yield _by_reason(
                "incproto_proxy_refused",
                "Connections closed for their PROXY header, by reason: "
                "malformed, or from a source not trusted to send one.",
                [("malformed", headers.refused if headers else 0),
                 ("untrusted", headers.untrusted if headers else 0)],
            )  # fmt: skip
        if self.preambles is not None:
            yield GaugeMetricFamily(
                "incproto_preambles",
                "Connections in their TLS handshake or PROXY header, holding "
                "no slot of the limit.",
                len(self.preambles),
            )
            yield _by_reason(
                "incproto_preambles_closed",
                "Connections closed before their service, by reason: past the "
                "--handshake-timeout, or the oldest when too many were in a "
                "preamble.",
                [("timeout", self.preambles.timedOut),
                 ("evicted", self.preambles.evicted)],
            )  # fmt: skip
        if self.heartbeat is not None:
            yield GaugeMetricFamily(
                "incproto_reactor_stall_seconds",
                "The longest time the reactor did not turn beyond its heartbeat's "
                "interval, since the process started.",
                self.heartbeat.longest,
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
            yield _histogram(
                "incproto_pool_job_seconds",
                "How long handler jobs took in the pool, from submission to "
                "reply (waiting for a thread or process included).",
                self.pool.jobSeconds,
            )

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
        yield _histogram(
            "incproto_queue_wait_seconds",
            "How long admitted connections waited in the queue (0: not queued).",
            limit.queueSeconds,
        )


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


def _histogram(
    name: str, documentation: str, histogram: Histogram
) -> HistogramMetricFamily:
    """A histogram family of one of incproto's histograms."""
    family = HistogramMetricFamily(name, documentation)
    buckets = [(floatToGoString(le), count) for le, count in histogram.cumulative()]
    family.add_metric([], buckets, histogram.total)
    return family


def registry_of(collector: Any) -> CollectorRegistry:
    """
    A registry of its own for C{collector}, with this process's CPU time,
    memory and open files (C{process_*}, from C{/proc}: nothing where there
    is none).
    """
    registry = CollectorRegistry(auto_describe=True)
    registry.register(collector)
    registry.register(ProcessCollector(registry=None))
    return registry
