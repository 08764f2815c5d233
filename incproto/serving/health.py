# -*- test-case-name: tests.unit.test_health,tests.integration.test_health -*-
"""The health endpoints, /healthz (ready) and /livez (alive), served next
to /metrics.

/healthz answers 200 only while the service takes connections, is not
draining and can run its handler, and 503 with the reason otherwise, so
that a load balancer or a Kubernetes readiness probe takes a stopping or
useless backend out before its connections are gone.  What "ready" means
is a plain callable, so the same resource serves one process (its
listener, drain and handler pool) and a supervisor of workers (its live
workers).

/livez answers 200 whenever it answers at all: from the reactor, so a
process whose reactor does not turn fails it by timeout (a Kubernetes
liveness probe then restarts it), while a draining process, unready but
alive, passes it.
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


class LivenessResource(Resource):
    """C{GET /livez}: C{200 ok}, answered by the reactor.  Never cached."""

    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        """Alive: the reactor answered."""
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        request.setHeader(b"Cache-Control", b"no-store")
        return b"ok\n"


def service_readiness(listener: Any, drainer: Any, pool: Any = None) -> ReadinessCheck:
    """
    Readiness of one incproto process: its listener is listening, its
    drain has not begun (the listener stops first, then the drain runs),
    and its handler pool, if any, can run a call.

    @param listener: the L{incproto.serving.service.ListeningService} of the port.
    @param drainer: the L{incproto.serving.service.DrainingService} of its
        connections.
    @param pool: the L{incproto.pools.HandlerPool}, or C{None} (inline).
    """

    def check() -> Optional[str]:
        if not drainer.running:
            return "draining or stopped"
        if not listener.running or listener.port is None:
            return "not listening"
        if pool is not None:
            return pool.unable()  # type: ignore[no-any-return]
        return None

    return check


def supervisor_readiness(pool: Any) -> ReadinessCheck:
    """
    Readiness of a supervisor of workers: it is bound, not stopping, and
    has at least one live worker (running, and not late with its heartbeat).

    @param pool: the L{incproto.workers.supervisor.WorkerPool}.
    """

    def check() -> Optional[str]:
        if not pool.running:
            return "stopping"
        if pool.listener.port is None:
            return "not listening"
        if not pool.live():
            return "no live workers"
        return None

    return check
