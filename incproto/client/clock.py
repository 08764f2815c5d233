# -*- test-case-name: tests.unit.test_client -*-
"""The client's clock: the reactor's scheduling, with time read from
C{time.perf_counter}.

Every time the client measures (latencies, waits, a timeline) is a
difference of two readings of one C{IReactorTime}, and every wait it
schedules is relative, so any clock will do: tests pass a
C{task.Clock} and advance it.  For real runs L{PerfCounterClock} keeps the
precision and monotonicity of C{perf_counter}, where the reactor's own
C{seconds()} is the wall clock, which may step.
"""

from __future__ import annotations

from time import perf_counter
from typing import Any, Callable, List, Optional

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from zope.interface import implementer

from incproto._kernel.reactors import global_reactor


@implementer(IReactorTime)
class PerfCounterClock:
    """
    C{reactor}'s C{callLater}, with C{seconds()} from C{perf_counter}.

    A delayed call's C{getTime()} is on the reactor's clock, not this one:
    the client only ever schedules relative delays.
    """

    def __init__(self, reactor: Optional[IReactorTime] = None) -> None:
        """
        @param reactor: what schedules the calls; the global reactor, imported
            when first needed, by default.
        """
        self._reactor = reactor

    @property
    def reactor(self) -> IReactorTime:
        """The reactor that schedules the calls."""
        if self._reactor is None:
            self._reactor = global_reactor()
        return self._reactor

    def seconds(self) -> float:
        """Now, in seconds from an arbitrary origin (C{perf_counter})."""
        return perf_counter()

    def callLater(
        self, delay: float, callable: Callable[..., Any], *args: object, **kw: object
    ) -> IDelayedCall:
        """Call C{callable} in C{delay} seconds, on the reactor."""
        return self.reactor.callLater(delay, callable, *args, **kw)

    def getDelayedCalls(self) -> List[IDelayedCall]:
        """The reactor's pending calls."""
        return list(self.reactor.getDelayedCalls())
