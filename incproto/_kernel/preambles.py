# -*- test-case-name: tests.unit.test_preambles -*-
"""Connections that have not reached the protocol yet: a bound on how many,
oldest closed first, and one deadline for the whole preamble.

A connection's preamble is what comes before its service: a TLS handshake,
a PROXY header, an HTTP request to the metrics port.  A client that never
finishes it must not hold what served clients need, so connections in a
preamble hold no slot of the connection limit; they are bounded here on
their own.  When the bound is reached, a new connection closes the oldest
one still in its preamble (as a full accept queue would drop it), so a new
client always gets its chance: a client that completes its preamble in a
round trip or two is never the oldest for long.  Every preamble has one
deadline from the connection's start, not reset by each byte (HAProxy's
C{timeout client-hs}, nginx's C{ssl_handshake_timeout}).

A preamble may have several layers (a PROXY header, then TLS): the outer
layer hands its entry to the inner one (L{Preambles.handingOver}), so the
connection keeps one place in line and one deadline.
"""

from __future__ import annotations

from collections import OrderedDict
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Optional

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from incproto._kernel.addresses import describe
from incproto._kernel.ratelimit import RateLimitedLog
from incproto._kernel.reactors import global_reactor
from incproto._kernel.timers import cancel

DEFAULT_TIMEOUT = 10.0
# With no connection limit: how many may be in their preamble at once.
DEFAULT_MAX_PREAMBLES = 1024
# With a connection limit: at least this many, however small the limit.
MIN_PREAMBLES = 64
LOG_INTERVAL = 10.0


class Preamble:
    """
    One connection's place among the L{Preambles}.

    @ivar peer: the connection's peer, for the log.
    @ivar what: what it is waiting for (C{"TLS handshake"}, ...), for the log.
    @ivar close: closes the connection; called once, on eviction, timeout or
        stop.
    @ivar deadline: when the preamble times out, in the clock's seconds.
    """

    __slots__ = ("close", "deadline", "over", "peer", "preambles", "what")

    def __init__(
        self,
        preambles: Preambles,
        peer: Any,
        what: str,
        close: Callable[[], None],
        deadline: float,
    ) -> None:
        self.preambles = preambles
        self.peer = peer
        self.what = what
        self.close = close
        self.deadline = deadline
        self.over = False

    def done(self) -> None:
        """The preamble is complete, or the connection is gone: leave."""
        if not self.over:
            self.over = True
            self.preambles._entries.pop(self, None)


class Preambles:
    """
    The connections of one listening port that are in their preamble.

    @ivar maxPreambles: how many may be at once, or C{None} for no bound.
    @ivar timeout: seconds a connection may take over its whole preamble.
    @ivar evicted: connections closed to make room for a newer one, in total.
    @ivar timedOut: connections closed at their deadline, in total.
    @ivar peak: the most connections in their preamble at once.
    """

    log = Logger()

    def __init__(
        self,
        maxPreambles: Optional[int] = DEFAULT_MAX_PREAMBLES,
        timeout: float = DEFAULT_TIMEOUT,
        clock: Optional[IReactorTime] = None,
        logInterval: float = LOG_INTERVAL,
    ) -> None:
        """
        @param maxPreambles: how many connections may be in their preamble
            at once; beyond it the oldest is closed.  C{None}: no bound.
        @param timeout: seconds from a connection's start to the end of its
            preamble, after which it is closed.
        @param clock: the time source; the global reactor by default.
        @param logInterval: closes are logged at most once per this many
            seconds (then a count).
        @raise ValueError: for a bound or timeout out of range.
        """
        if maxPreambles is not None and maxPreambles < 1:
            raise ValueError(f"maxPreambles must be at least 1, not {maxPreambles}")
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, not {timeout}")
        self.maxPreambles = maxPreambles
        self.timeout = timeout
        self.clock = clock if clock is not None else global_reactor()
        self.evicted = 0
        self.timedOut = 0
        self.peak = 0
        self._entries: OrderedDict[Preamble, None] = OrderedDict()
        self._timer: Optional[IDelayedCall] = None
        self._handover: Optional[Preamble] = None
        self._closes = RateLimitedLog(
            self.log,
            self.clock,
            logInterval,
            "{count} more connections closed before their service "
            "in the last {interval}s",
        )

    def __len__(self) -> int:
        """Connections in their preamble now."""
        return len(self._entries)

    def enter(self, peer: Any, what: str, close: Callable[[], None]) -> Preamble:
        """
        A connection starts its preamble (or, inside L{handingOver}, goes on
        with the one handed over, which keeps its place and deadline).  If
        the bound is reached, the oldest connection in its preamble is
        closed first.

        @param peer: its peer address, for the log.
        @param what: what it waits for, for the log.
        @param close: closes it, without serving it.
        @return: its entry; call L{Preamble.done} when the preamble is over.
        """
        preamble = self._handover
        if preamble is not None:
            self._handover = None
            preamble.peer, preamble.what, preamble.close = peer, what, close
            return preamble
        if self.maxPreambles is not None and len(self._entries) >= self.maxPreambles:
            oldest, _ = self._entries.popitem(last=False)
            self.evicted += 1
            self._close(
                oldest,
                f"the oldest of the {self.maxPreambles} connections allowed "
                "in a preamble",
            )
        now = self.clock.seconds()
        preamble = Preamble(self, peer, what, close, now + self.timeout)
        self._entries[preamble] = None
        self.peak = max(self.peak, len(self._entries))
        if self._timer is None or not self._timer.active():
            self._timer = self.clock.callLater(self.timeout, self._expire)
        return preamble

    @contextmanager
    def handingOver(self, preamble: Preamble) -> Iterator[None]:
        """
        While in this block, the next L{enter} goes on with C{preamble}
        instead of starting a new one; if none does, C{preamble} is over at
        the block's end.
        """
        self._handover = preamble
        try:
            yield
        finally:
            if self._handover is preamble:
                self._handover = None
                preamble.done()

    def stop(self) -> None:
        """The port stopped: close every connection in its preamble."""
        cancel(self._timer)
        self._closes.stop()
        while self._entries:
            preamble, _ = self._entries.popitem(last=False)
            preamble.over = True
            preamble.close()

    def _expire(self) -> None:
        """Close the connections past their deadline; wait for the next."""
        now = self.clock.seconds()
        while self._entries:
            oldest = next(iter(self._entries))
            if oldest.deadline > now:
                self._timer = self.clock.callLater(oldest.deadline - now, self._expire)
                return
            del self._entries[oldest]
            self.timedOut += 1
            self._close(oldest, f"no {oldest.what} within {self.timeout:g}s")

    def _close(self, preamble: Preamble, why: str) -> None:
        preamble.over = True
        self._closes.warn(
            "closing {peer} before its service: {why}",
            peer=describe(preamble.peer),
            why=why,
        )
        preamble.close()
