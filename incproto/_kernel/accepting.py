# -*- test-case-name: tests.unit.test_accepting,tests.integration.test_accepting -*-
"""Bounded accepting: a flood of connections costs the connections already
served a bounded share of the reactor, and running out of descriptors
costs a pause, not a busy loop.

Twisted's listening ports accept as many connections as are pending each
time the reactor finds them readable, and raise that batch by 20 every time
it is used up: under a flood one reactor turn accepts hundreds of
connections while every served client waits.  L{AcceptControl} makes a port
accept at most C{perTurn} connections a turn (32 by default, a
millisecond's work on CPython, where under connection churn it needs 4%
less CPU per connection than Twisted's batches, which end every turn in
an accept that fails, and 10% less than 8 a turn, which takes more
turns; a flood still gets a bounded share of each turn; nginx's
C{multi_accept off} is one), so the rest
wait in the kernel's listen queue (at most the listen backlog; beyond it the
kernel drops their SYNs and their clients retry).  It can also stop a port
from accepting for a while (L{pause}/L{resume}): a full L{ConnectionLimit}
paces its rejections that way.

When the process runs out of descriptors, C{accept()} fails with C{EMFILE}
and the port stays readable: Twisted logs the failure and tries again on the
next turn, thousands of times a second.  L{AcceptControl} stops accepting
for C{backoff} seconds instead, and logs accept errors at most once per
C{logInterval} seconds, with a count of those not logged.

It counts its wake-ups, and those that found no connection to accept (an
C{accept()} that failed with C{EAGAIN}: another process sharing the socket
took it first).  A gate (L{IAcceptGate}, as C{--workers} sets one for its
balance) can decide at each wake-up how many connections to accept, none
included.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Protocol, Set, cast

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger, globalLogPublisher

from incproto._kernel.ratelimit import RateLimitedLog
from incproto._kernel.timers import cancel

DEFAULT_ACCEPTS_PER_TURN = 32
ACCEPT_ERROR_BACKOFF = 1.0
ACCEPT_ERROR_LOG_INTERVAL = 10.0
OUT_OF_DESCRIPTORS = "out of descriptors"


class IAcceptGate(Protocol):
    """
    Decides how many connections a port accepts at each wake-up.
    """

    def allowance(self, perTurn: int) -> int:
        """
        How many connections to accept now, at most C{perTurn}; 0 for none
        (the gate then stops the port's reading for a while itself, or it
        is woken again at once).
        """

    def turned(self, accepted: int) -> None:
        """
        The wake-up accepted C{accepted} connections.
        """


class AcceptControl:
    """
    Bound how many connections a listening port accepts per reactor turn,
    and stop or start its accepting.

    Works with the reactor's own listening ports (TCP, UNIX, TLS over TCP,
    adopted and systemd sockets); for any other port L{controls} is
    C{False} and accepting is left as it is.

    @ivar port: the listening port.
    @ivar perTurn: connections accepted at most per reactor turn, or
        C{None} for Twisted's own batches.
    @ivar controls: whether the port is one this can control.
    @ivar acceptErrors: accept errors (C{EMFILE} and the like), in total.
    @ivar pauses: times accepting was stopped, in total.
    @ivar wakeups: times the port was found readable, in total.
    @ivar emptyWakeups: wake-ups that accepted no connection: none was
        waiting (another process took it) or the gate allowed none.
    @ivar gate: decides how many connections each wake-up accepts, or
        C{None} for C{perTurn}.
    """

    log = Logger()

    def __init__(
        self,
        port: Any,
        clock: IReactorTime,
        perTurn: Optional[int] = DEFAULT_ACCEPTS_PER_TURN,
        backoff: float = ACCEPT_ERROR_BACKOFF,
        logInterval: float = ACCEPT_ERROR_LOG_INTERVAL,
    ) -> None:
        """
        @param port: a listening port, as C{endpoint.listen()} returns.
        @param clock: the time source for back-off and log intervals.
        @param perTurn: connections to accept at most per reactor turn
            (at least 1), or C{None} to leave Twisted's batches as they are.
        @param backoff: seconds to stop accepting after an accept error.
        @param logInterval: accept errors are logged at most once per this
            many seconds.
        @raise ValueError: if C{perTurn} is below 1.
        """
        if perTurn is not None and perTurn < 1:
            raise ValueError(f"perTurn must be at least 1, not {perTurn}")
        self.port = port
        self.clock = clock
        self.perTurn = perTurn
        self.backoff = backoff
        self.acceptErrors = 0
        self.pauses = 0
        self.wakeups = 0
        self.emptyWakeups = 0
        self.gate: Optional[IAcceptGate] = None
        self._pausedFor: Set[str] = set()
        self._backoffTimer: Optional[IDelayedCall] = None
        self._errors = RateLimitedLog(
            self.log,
            clock,
            logInterval,
            "{more} in the last {interval}s",
            ("more accept error", "more accept errors"),
        )
        accept: Any = getattr(port, "doRead", None)
        self.controls = (
            accept is not None
            and hasattr(port, "numberAccepts")
            and hasattr(port, "_logger")
        )
        if not self.controls:
            return
        # Twisted's tcp.Port reads numberAccepts at the start of each doRead
        # and raises it after a full batch; set it before each one.  Its
        # accept errors go to the observer of its _logger.  Its sessionno
        # counts the connections it accepted.
        if perTurn is not None:

            def doRead() -> Any:
                self.wakeups += 1
                allowed = perTurn
                if self.gate is not None:
                    allowed = self.gate.allowance(perTurn)
                    if allowed < 1:
                        self.emptyWakeups += 1
                        return None
                before = port.sessionno
                port.numberAccepts = allowed
                result = accept()
                accepted = port.sessionno - before
                if not accepted:
                    self.emptyWakeups += 1
                if self.gate is not None:
                    self.gate.turned(accepted)
                return result

            port.doRead = doRead
        port._logger = Logger(
            namespace=port._logger.namespace, observer=cast(Any, self._observe)
        )

    @property
    def paused(self) -> bool:
        """Whether accepting is stopped now, for any reason."""
        return bool(self._pausedFor)

    def pause(self, reason: str) -> None:
        """
        Stop accepting until L{resume} is called with the same C{reason}
        (and every other reason given has been resumed too).
        """
        if not self.controls or reason in self._pausedFor:
            return
        if not self._pausedFor and self._listening():
            self.port.stopReading()
            self.pauses += 1
        self._pausedFor.add(reason)

    def resume(self, reason: str) -> None:
        """
        Accept again, unless another reason still holds accepting stopped.
        """
        if reason not in self._pausedFor:
            return
        self._pausedFor.discard(reason)
        if not self._pausedFor and self._listening():
            self.port.startReading()

    def stop(self) -> None:
        """
        Cancel timers; the port is stopping.
        """
        cancel(self._backoffTimer)
        self._errors.stop()

    def _listening(self) -> bool:
        return bool(self.port.connected) and not self.port.disconnecting

    def _observe(self, event: Dict[str, Any]) -> None:
        """
        The port's log events: pass them on, but for accept errors stop
        accepting for a while and log at most one per interval.
        """
        if "acceptError" not in event and "EMFILE" not in event.get("log_format", ""):
            globalLogPublisher(event)
            return
        self.acceptErrors += 1
        if self._backoffTimer is None or not self._backoffTimer.active():
            self.pause(OUT_OF_DESCRIPTORS)
            self._backoffTimer = self.clock.callLater(
                self.backoff, self.resume, OUT_OF_DESCRIPTORS
            )
        self._errors.warn(
            "cannot accept connections ({error}): pausing accepting for "
            "{backoff}s at a time",
            error=event.get("acceptError", "EMFILE"),
            backoff=self.backoff,
        )
