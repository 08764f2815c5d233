# -*- test-case-name: tests.unit.test_ordered -*-
"""One connection's work, kept in order and bounded: L{OrderedWork}, which
the protocol drives, whether its handler runs in a pool (L{incproto.pools})
or inline."""

from __future__ import annotations

from typing import List, Optional, Protocol

from twisted.python.failure import Failure

from incproto.handlers import IPayloadHandler, checked_reply
from incproto.pools import HandlerPool


class WorkingConnection(Protocol):
    """
    What L{OrderedWork} needs of the connection it works for (an
    L{incproto.protocol.IncrementProtocol}).  Whether reading is paused, and
    why, is the connection's to know; the work only says when it falls
    behind and catches up.
    """

    @property
    def writesPaused(self) -> bool:
        """Whether the client is not reading its replies now."""

    def deliver(self, reply: bytes) -> None:
        """Write a reply (which may pause writes at once)."""

    def workFailed(self, failure: Failure) -> None:
        """A job failed: the connection closes.  Called once at most."""

    def workBehind(self, behind: bool) -> None:
        """Too much payload waits (C{True}: stop reading) or it fits again."""

    def workDone(self) -> None:
        """Every reply was delivered and no payload waits."""


# The most payload bytes of a job while the handler's ratio is not known.
FIRST_JOB = 4096


class ReplyRatio:
    """
    How many reply bytes the handler returned per payload byte, in the last
    job of any connection of one factory, and the job size that follows
    from it: at most C{limit // 2} payload bytes, and fewer for a handler
    that amplifies, so that a job's reply is about C{limit // 2} bytes too.

    @ivar limit: the connections' C{workBuffer}.
    @ivar value: reply bytes over payload bytes, or C{None} until a job with
        payload finished.
    @ivar most: the most payload bytes of a job now (at most C{FIRST_JOB}
        until C{value} is known).
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.value: Optional[float] = None
        self.most = min(max(1, limit // 2), FIRST_JOB)

    def update(self, payload: int, reply: int) -> None:
        """A job of C{payload} bytes gave C{reply} bytes."""
        if not payload:
            return
        self.value = value = reply / payload
        half = max(1, self.limit // 2)
        self.most = half if value <= 1.0 else max(1, min(half, int(half / value)))


class OrderedWork:
    """
    One connection's payload, run in order: at most one job is in flight,
    and payload that arrives meanwhile is batched into the next job.  With a
    C{pool}, jobs run there; without one (C{pool=None}), C{handler} runs
    inline, at once, on the reactor thread.

    A job is at most C{limit // 2} payload bytes (so that the next batch can
    be read while one runs), and fewer for a handler that amplifies: a job's
    expected reply (its payload times the handler's last ratio of reply to
    payload, L{ReplyRatio}) is at most C{limit // 2} bytes too.

    Memory is bounded as inline is, plus C{limit}: when the payload waiting
    plus the job in flight (or its reply, held) reach C{limit} bytes,
    C{connection.workBehind(True)} asks the connection to stop reading;
    C{workBehind(False)} once they fit again.  While the connection's writes
    are paused (its client is not reading), no job is run or submitted and a
    finished job's reply is held, not written, until L{writesResumed}: a
    client that does not read holds at most its unread replies up to the
    transport's pause point, one job's reply, and C{limit} of payload,
    whatever the handler returns.

    @ivar pending: bytes waiting for the next job.
    @ivar carried: bytes of the job in flight, or of its reply held.
    @ivar ratio: the L{ReplyRatio} that sizes jobs, shared.
    """

    def __init__(
        self,
        pool: Optional[HandlerPool],
        connection: WorkingConnection,
        limit: int,
        handler: Optional[IPayloadHandler] = None,
        ratio: Optional[ReplyRatio] = None,
    ) -> None:
        """
        @param pool: where jobs run, or C{None} to run C{handler} inline.
        @param handler: the handler, when there is no pool.
        @param ratio: shared with the factory's other connections, so that
            a new connection sizes its first job by what the handler did.
        """
        if pool is None and handler is None:
            raise ValueError("inline work needs a handler")
        self.pool = pool
        self.handler = handler
        self.connection = connection
        self.limit = limit
        self.ratio = ratio if ratio is not None else ReplyRatio(limit)
        self.pending = 0
        self.carried = 0
        self._batch: List[bytes] = []
        self._held: Optional[bytes] = None
        self._busy = False
        self._behind = False
        self._cancelled = False

    @property
    def busy(self) -> bool:
        """Whether a job is in flight, its reply held, or payload waits."""
        return self._busy or self._held is not None or bool(self._batch)

    def add(self, payload: bytes) -> None:
        """
        Queue C{payload} for the pool, or answer it now if inline.
        """
        if self._cancelled:
            return
        if self.pool is None:
            if not self._batch and len(payload) <= self.ratio.most:
                if not self.connection.writesPaused:
                    self._inline(payload)  # the usual case: nothing waits
                    return
            self._batch.append(payload)
            self.pending += len(payload)
            self._pump()
            return
        self._batch.append(payload)
        self.pending += len(payload)
        if not (self._busy or self._held is not None or self.connection.writesPaused):
            self._next()
        self._checkPause()

    def writesResumed(self) -> None:
        """
        The connection's client reads its replies again: let go of the
        reply held, or submit the payload waiting.
        """
        if self._cancelled:
            return
        if self.pool is None:
            self._pump()
        elif self._held is not None:
            reply, self._held = self._held, None
            self._deliver(reply)
        elif self._batch and not self._busy:
            self._next()
            self._checkPause()

    def cancel(self) -> None:
        """
        The connection is gone: drop the results of work in flight.
        """
        self._cancelled = True
        self._batch = []
        self._held = None

    def _checkPause(self) -> None:
        behind = self.pending + self.carried >= self.limit
        if behind != self._behind:
            self._behind = behind
            self.connection.workBehind(behind)

    def _take(self) -> bytes:
        """The next job's payload, out of the batch."""
        batch = b"".join(self._batch)
        most = self.ratio.most
        if len(batch) > most:
            batch, rest = batch[:most], batch[most:]
            self._batch = [rest]
        else:
            self._batch = []
        self.pending -= len(batch)
        return batch

    def _measure(self, payload: int, reply: bytes) -> None:
        self.ratio.update(payload, len(reply))

    def _inline(self, payload: bytes) -> bool:
        """Run the handler inline on C{payload} and deliver its reply;
        C{False} if it failed (the connection is told)."""
        assert self.handler is not None
        try:
            reply = self.handler.transform(payload)
            if reply.__class__ is not bytes:
                reply = checked_reply(self.handler, reply)
        except Exception:
            self._error(Failure())
            return False
        self._measure(len(payload), reply)
        if reply:
            self.connection.deliver(reply)  # may pause writes, at once
        return True

    def _pump(self) -> None:
        """Inline: answer what waits, one job at a time, until the client
        stops reading its replies."""
        connection = self.connection
        while self._batch and not connection.writesPaused and not self._cancelled:
            if not self._inline(self._take()):
                return
        if self._cancelled:
            return
        if not self._batch:
            connection.workDone()
        self._checkPause()

    def _next(self) -> None:
        assert self.pool is not None
        batch = self._take()
        self.carried = len(batch)
        self._busy = True
        self.pool.run(batch).addCallbacks(self._done, self._error)

    def _done(self, reply: bytes) -> None:
        self._busy = False
        if self._cancelled:
            return
        self._measure(self.carried, reply)
        if self.connection.writesPaused:
            self._held = reply
            return
        self._deliver(reply)

    def _deliver(self, reply: bytes) -> None:
        self.carried = 0
        if reply:
            self.connection.deliver(reply)  # may pause writes, at once
        if self._cancelled:
            return
        if self._batch:
            if not self.connection.writesPaused:
                self._next()
        else:
            self.connection.workDone()
        self._checkPause()

    def _error(self, failure: Failure) -> None:
        self._busy = False
        self.carried = 0
        if not self._cancelled:
            self._cancelled = True
            self.connection.workFailed(failure)
