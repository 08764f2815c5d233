# -*- test-case-name: tests.unit.test_metrics,tests.integration.test_metrics -*-
"""A web site whose requests must arrive whole within a deadline, with a
bound on the connections waiting for one: the metrics listener's.

Twisted's C{Site(timeout=)} is an idle timeout, reset by every byte: a
client that sends one byte of its request every few seconds holds its
connection for good, and a few dozen of them fill any bound on scrapers.
Here a request, from the connection's start (or the end of the previous
answer on a keep-alive connection) to its last byte, has C{timeout}
seconds in all (nginx's C{client_header_timeout}, HAProxy's C{timeout
http-request}); and connections waiting for a request are a
L{incproto._kernel.preambles.Preambles}: beyond C{maxWaiting}, the one that
has waited longest is closed, so a new client (a health probe) always gets
its turn whatever slow clients do.
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel, Request
from twisted.web.resource import Resource
from twisted.web.server import Site

from incproto._kernel.closing import CloseDeadline, close_politely
from incproto._kernel.preambles import Preamble, Preambles
from incproto._kernel.timers import cancel

HTTP_REQUEST = "complete HTTP request"
# Seconds a closed client may take to read its FIN before it is aborted.
CLOSE_TIMEOUT = 10.0


class DeadlineChannel(HTTPChannel):
    """
    An HTTP channel that waits for each request as a preamble of its
    L{DeadlineSite}: bounded in number and timed as a whole.
    """

    site: DeadlineSite
    # Twisted types this as Optional[ITransport]; it is a TCP or TLS transport.
    transport: Any
    _preamble: Optional[Preamble] = None
    _closing: Optional[CloseDeadline] = None

    def connectionMade(self) -> None:
        """Start waiting for the first request."""
        super().connectionMade()
        self._awaitRequest()

    def _awaitRequest(self) -> None:
        self._preamble = self.site.preambles.enter(
            self.transport.getPeer(), HTTP_REQUEST, self._close
        )

    def dataReceived(self, data: bytes) -> None:
        """Parse, unless closing (then input is discarded)."""
        if self._closing is None:
            super().dataReceived(data)

    def allContentReceived(self) -> None:
        """The request is whole: no longer waiting; answer it."""
        if self._preamble is not None:
            self._preamble.done()
            self._preamble = None
        super().allContentReceived()

    def requestDone(self, request: Any) -> None:
        """Answered: on a keep-alive connection, wait for the next request."""
        super().requestDone(request)
        if (
            self.persistent
            and self._preamble is None
            and self._closing is None
            and not self._handlingRequest
            and self.transport.connected
        ):
            self._awaitRequest()

    def _close(self) -> None:
        """Past the deadline, or the longest waiting: close with a FIN."""
        self._preamble = None
        self.setTimeout(None)
        self.transport.unregisterProducer()
        self._closing = close_politely(self.transport, self.site.clock, CLOSE_TIMEOUT)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """No longer waiting, nor closing."""
        if self._preamble is not None:
            self._preamble.done()
            self._preamble = None
        cancel(self._closing)
        super().connectionLost(reason)


class DeadlineSite(Site):
    """
    A C{Site} of L{DeadlineChannel}s: each request must arrive whole within
    C{timeout} seconds, and at most C{maxWaiting} connections wait for one
    (beyond, the longest waiting is closed).

    @ivar preambles: the connections waiting for a request.
    """

    protocol = DeadlineChannel  # type: ignore[assignment]

    def __init__(
        self, resource: Resource, reactor: Any, maxWaiting: int, timeout: float
    ) -> None:
        super().__init__(resource, timeout=None, reactor=reactor)
        self.clock = reactor
        self.preambles = Preambles(maxWaiting, timeout, reactor)

    def log(self, request: Request) -> None:
        """
        Log a request that was refused or failed (status 400 or more), as
        Twisted's C{Site} logs every request (its combined log format, in
        the server's log).  The rest are routine: a scraper and a load
        balancer's probes ask every few seconds, their own records show each
        answer, and a line for each would bury the server's log (and fill it
        even with C{--no-connection-log}).
        """
        if request.code >= 400:
            super().log(request)

    def stopFactory(self) -> None:
        """Close the connections still waiting for a request."""
        self.preambles.stop()
        super().stopFactory()
