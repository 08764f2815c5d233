# -*- test-case-name: tests.unit.test_metrics,tests.e2e.test_workers -*-
"""The metrics of a C{--workers} supervisor: each worker's, asked for at
each scrape and merged with a C{worker} label (L{WorkersCollector}), and
the supervisor's own."""

from __future__ import annotations

from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    Optional,
    cast,
)

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from incproto.serving.health import ReadinessCheck
from incproto.serving.metrics import dropped_log_lines
from incproto.serving.web import SCRAPE_FAILED, failed_scrape, site_of

if TYPE_CHECKING:
    from prometheus_client.registry import Collector


class WorkersCollector:
    """
    The metrics of several worker processes as one scrape: each worker's
    samples with a C{worker} label (sum them in PromQL for the service:
    every worker's histograms have the same buckets, so summing each
    C{le}'s bucket, C{_sum} and C{_count} over C{worker} is the service's
    histogram), and the supervisor's own.

    @ivar texts: each worker's metrics in Prometheus's text format, by its
        number, as of this scrape.
    @ivar slots: every worker's number: one that has no text did not
        answer (C{incproto_worker_up} 0).
    @ivar replaced: workers replaced, by reason.
    @ivar droppedLines: the log lines the supervisor itself dropped: a
        sample without a C{worker} label in the workers' family.
    """

    def __init__(
        self,
        texts: Dict[int, str],
        workers: int,
        restarts: int,
        slots: Iterable[int] = (),
        replaced: Optional[Dict[str, int]] = None,
        own: Optional[Collector] = None,
        droppedLines: int = 0,
    ) -> None:
        """
        @param own: the supervisor's own process metrics (a
            C{ProcessCollector}), merged unlabelled into the workers'
            families of the same names.
        """
        self.texts = texts
        self.workers = workers
        self.restarts = restarts
        self.slots = list(slots)
        self.replaced = replaced or {}
        self.own = own
        self.droppedLines = droppedLines

    def collect(self) -> Iterator[Metric]:
        """The merged metrics."""
        yield GaugeMetricFamily(
            "incproto_workers", "Worker processes running.", self.workers
        )
        yield CounterMetricFamily(
            "incproto_worker_restarts", "Worker processes restarted.", self.restarts
        )
        replaced = CounterMetricFamily(
            "incproto_workers_replaced",
            "Worker processes replaced, by reason: stalled (killed for a late "
            "heartbeat, see --watchdog) or crashed (any other death).",
            labels=["reason"],
        )
        for reason, count in sorted(self.replaced.items()):
            replaced.add_metric([reason], count)
        yield replaced
        up = GaugeMetricFamily(
            "incproto_worker_up",
            "1 if the worker answered this scrape in time, else 0 (its "
            "samples are missing).",
            labels=["worker"],
        )
        for slot in self.slots:
            up.add_metric([str(slot)], 1 if slot in self.texts else 0)
        yield up
        dropped = dropped_log_lines(self.droppedLines)
        families: Dict[str, Metric] = {dropped.name: dropped}
        if self.own is not None:
            families.update((family.name, family) for family in self.own.collect())
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

        def fail(failure: Failure) -> None:
            self.log.failure(SCRAPE_FAILED, failure)
            if not lost:
                request.write(failed_scrape(request))
                request.finish()

        maybeDeferred(self.scrape).addCallback(render).addCallbacks(answer, fail)
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
    return site_of(WorkersMetricsResource(scrape), reactor, ready)
