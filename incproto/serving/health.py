# -*- test-case-name: tests.unit.test_health,tests.integration.test_health -*-
"""The health endpoint, /healthz, served next to /metrics.

It answers 200 only while the service takes connections and is not
draining, and 503 with the reason otherwise, so that a load balancer or a
Kubernetes readiness probe takes a stopping backend out before its
connections are gone.  What "ready" means is a plain callable, so the same
resource serves one process (its listener and drain) and a supervisor of
workers (its live workers).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from twisted.web.resource import Resource
from twisted.web.server import Request

# None when ready; otherwise why not, in a few words.
ReadinessCheck = Callable[[], Optional[str]]


class HealthResource(Resource):
    """
    C{GET /healthz}: C{200 ok} while C{check()} returns C{None}, else
    C{503} with its reason.  Never cached.
    """

    isLeaf = True

    def __init__(self, check: ReadinessCheck) -> None:
        """
        @param check: returns C{None} while the service is ready, or the
            reason it is not.
        """
        super().__init__()
        self.check = check

    def render_GET(self, request: Request) -> bytes:
        """The state, as a status code and a one-line body."""
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        request.setHeader(b"Cache-Control", b"no-store")
        reason = self.check()
        if reason is None:
            return b"ok\n"
        request.setResponseCode(503)
        return reason.encode("utf-8", "replace") + b"\n"


def service_readiness(listener: Any, drainer: Any) -> ReadinessCheck:
    """
    Readiness of one incproto process: its listener is listening and its
    drain has not begun (the listener stops first, then the drain runs).

    @param listener: the L{incproto.serving.service.ListeningService} of the port.
    @param drainer: the L{incproto.serving.service.DrainingService} of its
        connections.
    """

    def check() -> Optional[str]:
        if not drainer.running:
            return "draining or stopped"
        if not listener.running or listener.port is None:
            return "not listening"
        return None

    return check


def supervisor_readiness(pool: Any) -> ReadinessCheck:
    """
    Readiness of a supervisor of workers: it is bound, not stopping, and
    has at least one live worker.

    @param pool: the L{incproto.workers.supervisor.WorkerPool}.
    """

    def check() -> Optional[str]:
        if not pool.running:
            return "stopping"
        if pool.listener.port is None:
            return "not listening"
        if not pool.workers:
            return "no live workers"
        return None

    return check
