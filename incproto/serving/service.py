# -*- test-case-name: tests.unit.test_service,tests.unit.test_operations -*-
"""incproto's services: a listener that fails loudly (it never runs on with
no listener), a graceful drain, an ordered stop, and the open files limit.

Twisted's C{StreamServerEndpointService} only logs a listen failure and lets
the process run on without a listener; C{strports.service} raises the bare
error, which twistd prints as a traceback.  L{ListeningService} raises
L{ListenError}, which twistd and twist turn into a one-line message and
exit status 1.
"""

from __future__ import annotations

from typing import Any, List, Optional

from twisted.application.service import MultiService, Service
from twisted.internet.defer import CancelledError, Deferred, TimeoutError, succeed
from twisted.internet.interfaces import (
    IListeningPort,
    IProtocolFactory,
    IReactorTime,
    IStreamServerEndpoint,
)
from twisted.logger import Logger
from twisted.python.failure import Failure

from incproto._kernel.accepting import DEFAULT_ACCEPTS_PER_TURN, AcceptControl
from incproto._kernel.addresses import describe
from incproto._kernel.filelimit import raise_file_limit
from incproto._kernel.leantransport import lean
from incproto._kernel.reactors import global_reactor
from incproto._kernel.timers import time_left
from incproto._kernel.words import counted


class ListenError(SystemExit, Exception):
    """
    The service could not listen on its endpoint.

    It is a C{SystemExit}, so that C{twistd} and C{twist} print its one-line
    message without a traceback and exit with status 1, and an C{Exception},
    so that twistd still removes its pid file and reports the message to the
    parent when daemonizing.
    """


class ListeningService(Service):
    """
    Listen on an endpoint with a factory while the service runs.

    @ivar endpoint: where to listen.
    @ivar factory: the protocol factory for accepted connections.
    @ivar description: how the endpoint is named in messages.
    @ivar what: what listens, for the log ("incproto", "metrics").
    @ivar port: the listening port, once listening.
    @ivar accepting: the port's L{AcceptControl}, once listening.
    """

    log = Logger()

    def __init__(
        self,
        endpoint: IStreamServerEndpoint,
        factory: IProtocolFactory,
        description: str,
        what: str = "incproto",
        clock: Optional[IReactorTime] = None,
        acceptsPerTurn: Optional[int] = DEFAULT_ACCEPTS_PER_TURN,
    ) -> None:
        """
        @param clock: the time source for accept back-off; the global
            reactor by default.
        @param acceptsPerTurn: connections accepted at most per reactor
            turn (see L{AcceptControl}), or C{None} for Twisted's batches.
        """
        self.endpoint = endpoint
        self.factory = factory
        self.description = description
        self.what = what
        self.clock = clock
        self.acceptsPerTurn = acceptsPerTurn
        self.port: Optional[IListeningPort] = None
        self.accepting: Optional[AcceptControl] = None
        self._listening: Optional[Deferred[IListeningPort]] = None

    def privilegedStartService(self) -> None:
        """
        Start listening (before twistd drops privileges).

        @raise ListenError: if the endpoint failed to listen at once, as
            every endpoint Twisted ships does on failure.
        """
        super().privilegedStartService()
        failures: List[Failure] = []
        returned = False

        def failed(failure: Failure) -> None:
            if failure.check(CancelledError):
                return  # stopService gave up on a listen still in progress
            if returned:
                self.log.failure(
                    "incproto: cannot listen on {description}",
                    failure,
                    description=self.description,
                )
            else:
                failures.append(failure)

        self._listening = self.endpoint.listen(self.factory)
        self._listening.addCallbacks(self._listened, failed)
        returned = True
        if failures:
            reason = failures[0].getErrorMessage()
            raise ListenError(
                f"incproto: cannot listen on {self.description}: {reason}"
            )

    def startService(self) -> None:
        """
        Start the service, listening first if C{privilegedStartService} was
        not called (C{twist} calls only this).
        """
        if self._listening is None:
            self.privilegedStartService()
        super().startService()

    def stopService(self) -> Optional[Deferred[None]]:
        """
        Stop listening; connections already accepted are left alone.
        """
        super().stopService()
        listening, self._listening = self._listening, None
        port, self.port = self.port, None
        if self.accepting is not None:
            self.accepting.stop()
        if port is not None:
            return port.stopListening()
        if listening is not None:
            listening.cancel()
        return None

    def _listened(self, port: IListeningPort) -> IListeningPort:
        self.port = port
        clock = self.clock if self.clock is not None else global_reactor()
        self.accepting = AcceptControl(port, clock, self.acceptsPerTurn)
        lean(port)
        watch = getattr(self.factory, "watchAccepting", None)
        if watch is not None:  # a ConnectionLimit paces rejections with it
            watch(self.accepting)
        address = port.getHost()
        self.log.info(
            "{what} listening on {address}",
            what=self.what,
            address=describe(address),
            port=getattr(address, "port", None),
            description=self.description,
        )
        return port


# Seconds the drain waits, after aborting what is left, for the aborts to be
# reported (Twisted reports each on the reactor's next turn).
ABORT_GRACE = 1.0


class DrainingService(Service):
    """
    On stop, drain an L{IncrementFactory}'s connections gracefully (see
    L{IncrementFactory.drain}), aborting those still open after C{timeout}
    seconds.
    """

    log = Logger()

    def __init__(self, factory: Any, timeout: float, clock: IReactorTime) -> None:
        self.factory = factory
        self.timeout = timeout
        self.clock = clock

    def stopService(self) -> Deferred[None]:
        """
        Drain, for at most C{timeout} seconds.
        """
        super().stopService()
        timeout = time_left(self, self.timeout, self.clock)
        count = len(self.factory.connections)
        if count:
            self.log.info(
                "draining {connections}",
                count=count,
                connections=counted(count, "connection"),
            )
        drained: Deferred[None] = self.factory.drain()
        if drained.called:
            return drained

        def give_up(failure: Failure) -> Deferred[None]:
            failure.trap(TimeoutError)
            left = list(self.factory.connections)
            self.log.warn(
                "aborting {connections} still open after {timeout}s",
                count=len(left),
                connections=counted(len(left), "connection"),
                timeout=round(timeout, 3),
            )
            for protocol in left:
                protocol.abort()  # closed for "shutdown"
            # Twisted reports an abort on the reactor's next turn: wait for
            # it (briefly), so that each close is counted and logged before
            # a process that stops next exits without another turn.
            reported: Deferred[None] = self.factory.whenEmpty()
            return reported.addTimeout(ABORT_GRACE, self.clock).addErrback(_unreported)

        return drained.addTimeout(timeout, self.clock).addErrback(give_up)


def _unreported(failure: Failure) -> None:
    """Some abort went unreported within C{ABORT_GRACE}: stop all the same."""
    failure.trap(TimeoutError)


class SequentialMultiService(MultiService):
    """
    A MultiService whose children stop one after another, in the reverse of
    the order they were added (Twisted's stops them all at once): for
    incproto, the listener first, then the connections' drain, then pools.

    Given a C{stopTimeout}, the whole stop has one deadline: children that
    wait (L{DrainingService}, L{incproto.pools.HandlerPool}) wait only for
    what is left of it (L{incproto._kernel.timers.time_left}), not each for
    a timeout of its own.

    @ivar stopDeadline: when the stop must be over (clock time), once
        stopping with a C{stopTimeout}; C{None} otherwise.
    """

    stopDeadline: Optional[float] = None

    def __init__(
        self, stopTimeout: Optional[float] = None, clock: Optional[IReactorTime] = None
    ) -> None:
        super().__init__()
        self.stopTimeout = stopTimeout
        self.clock = clock

    def addServiceStoppedLast(self, child: Service) -> None:
        """
        Add C{child} to be started first and stopped last, whatever is
        added later (the metrics listener outlives the drain, so that
        /healthz answers 503 and /metrics shows the connections meanwhile).
        """
        child.setServiceParent(self)
        self.services.remove(child)
        self.services.insert(0, child)

    def stopService(self) -> Deferred[None]:
        """
        Stop each child after the one added after it has stopped.
        """
        if self.stopTimeout is not None and IReactorTime.providedBy(self.clock):
            self.stopDeadline = self.clock.seconds() + self.stopTimeout
        Service.stopService(self)
        d: Deferred[Any] = succeed(None)
        for child in reversed(list(self)):
            d.addCallback(_stop, child)
        return d


def _stop(_: object, service: Any) -> Any:
    return service.stopService()


class FileLimitService(Service):
    """
    At start, raise the soft limit on open files to the hard limit, and warn
    if it still cannot hold C{needed} descriptors: when descriptors run out,
    Twisted accepts and drops connections behind the queue's back.
    """

    log = Logger()

    def __init__(self, needed: int) -> None:
        self.needed = needed

    def privilegedStartService(self) -> None:
        """
        Raise the limit (before twistd drops privileges).
        """
        super().privilegedStartService()
        raise_file_limit(self.needed, self.log)
