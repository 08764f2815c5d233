# -*- test-case-name: tests.unit.test_limit,tests.unit.test_accepting -*-
"""A log line that a flood cannot turn into a flood of log lines."""

from __future__ import annotations

from typing import Any, Optional, Tuple

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from incproto._kernel.timers import cancel
from incproto._kernel.words import counted


class RateLimitedLog:
    """
    Log warnings of one kind at most once per C{interval} seconds; at the end
    of an interval in which some were not logged, log how many.

    @ivar unlogged: events not logged in the current interval.
    """

    def __init__(
        self,
        log: Logger,
        clock: IReactorTime,
        interval: float,
        summary: str,
        things: Tuple[str, str] = ("more event", "more events"),
    ) -> None:
        """
        @param log: where to log.
        @param clock: the time source.
        @param interval: seconds between logged events.
        @param summary: the format of the summary line; it may use
            C{{count}}, C{{interval}} and C{{more}}: the count in words,
            with C{things} (singular, plural) after it.
        """
        self.log = log
        self.clock = clock
        self.interval = interval
        self.summary = summary
        self.things = things
        self.unlogged = 0
        self._quietUntil = 0.0
        self._summaryCall: Optional[IDelayedCall] = None

    def warn(self, format: str, **fields: Any) -> None:
        """
        Log this event, unless one was logged less than C{interval} seconds
        ago: then only count it.
        """
        if self.allow():
            self.log.warn(format, **fields)

    def allow(self) -> bool:
        """
        Whether to log this event, however the caller logs it: C{True} if
        none was logged in the last C{interval} seconds; otherwise it is
        counted (and summarised at the interval's end), and C{False}.
        """
        now = self.clock.seconds()
        if now < self._quietUntil:
            self.unlogged += 1
            if self._summaryCall is None:
                self._summaryCall = self.clock.callLater(
                    self._quietUntil - now, self._summarize
                )
            return False
        self._quietUntil = now + self.interval
        return True

    def stop(self) -> None:
        """Cancel the pending summary."""
        cancel(self._summaryCall)
        self._summaryCall = None

    def _summarize(self) -> None:
        self._summaryCall = None
        self.log.warn(
            self.summary,
            count=self.unlogged,
            interval=self.interval,
            more=counted(self.unlogged, *self.things),
        )
        self.unlogged = 0
        self._quietUntil = self.clock.seconds() + self.interval
