# -*- test-case-name: tests.unit.test_metrics,tests.unit.test_health -*-
"""The C{--metrics} listener: Prometheus metrics at /metrics, readiness at
/healthz and liveness at /livez (L{incproto.serving.health}) over HTTP,
every scrape answered, each request whole within a deadline, a bounded
number waiting (L{incproto.serving.requests})."""

from __future__ import annotations

from typing import Any, Optional

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from incproto.serving.health import HealthResource, LivenessResource, ReadinessCheck
from incproto.serving.metrics import registry_of
from incproto.serving.requests import DeadlineSite
from incproto.serving.service import ListeningService

# What a scrape that failed gets: the reason is in the server's log (once,
# as SCRAPE_FAILED), not on a port that may be open to the world.
FAILED_BODY = b"incproto: the metrics could not be collected (see the server log)\n"
SCRAPE_FAILED = "metrics scrape failed"


def failed_scrape(request: Request) -> bytes:
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
            return failed_scrape(request)
        request.setHeader(b"Content-Type", CONTENT_TYPE_LATEST.encode("ascii"))
        return body


# A scrape takes milliseconds: a request not whole this long after the
# connection (or the previous answer) is closed, however it trickles in.
REQUEST_TIMEOUT = 10.0
# At most this many connections wait for their request at once; beyond, the
# one waiting longest is closed, so a probe always gets its turn.
MAX_SCRAPERS = 16


def site_of(
    resource: Resource, reactor: Any, ready: Optional[ReadinessCheck] = None
) -> Site:
    """
    The metrics listener's site: C{resource} at /metrics, /livez, and
    /healthz answered by C{ready} if given.
    """
    root = Resource()
    root.putChild(b"metrics", resource)
    root.putChild(b"livez", LivenessResource())
    if ready is not None:
        root.putChild(b"healthz", HealthResource(ready))
    site = DeadlineSite(root, reactor, MAX_SCRAPERS, REQUEST_TIMEOUT)
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
    return site_of(MetricsResource(registry_of(collector)), reactor, ready)


def metrics_listener(reactor: Any, description: str, site: Site) -> Any:
    """
    The C{--metrics} listener: C{site} (a L{DeadlineSite}, which bounds the
    scrapers waiting for their request) on the endpoint C{description}.

    @return: a L{incproto.serving.service.ListeningService} named C{metrics}.
    """
    listener = ListeningService(
        serverFromString(reactor, description),
        site,
        f"{description} (--metrics)",
        what="metrics",
        clock=reactor,
    )
    listener.setName("metrics")
    return listener
