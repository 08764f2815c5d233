# -*- test-case-name: tests.unit.test_ordered -*-
"""One connection's work in a handler pool, kept in order: L{OrderedWork},
which the protocol drives when it has a pool (L{incproto.pools})."""

from __future__ import annotations

from typing import List, Optional, Protocol

from twisted.python.failure import Failure

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


class OrderedWork:
    """
    One connection's payload, run in a pool in order: at most one job is in
    flight, and payload that arrives meanwhile is batched into the next job
    (at most C{limit // 2} bytes a job, so that the next batch can be read
    while one runs).

    Memory is bounded as inline is, plus C{limit}: when the payload waiting
    plus the job in flight (or its reply, held) reach C{limit} bytes,
    C{connection.workBehind(True)} asks the connection to stop reading;
    C{workBehind(False)} once they fit again.  While the connection's writes
    are paused (its client is not reading), no job is submitted and a
    finished job's reply is held, not written, until L{writesResumed}.

    @ivar pending: bytes waiting for the next job.
    @ivar carried: bytes of the job in flight, or of its reply held.
    """

    def __init__(
        self,
        pool: HandlerPool,
        connection: WorkingConnection,
        limit: int,
    ) -> None:
        self.pool = pool
        self.connection = connection
        self.limit = limit
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
        Queue C{payload} for the pool.
        """
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
        if self._held is not None:
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

    def _next(self) -> None:
        batch = b"".join(self._batch)
        most = max(1, self.limit // 2)
        if len(batch) > most:
            batch, rest = batch[:most], batch[most:]
            self._batch = [rest]
        else:
            self._batch = []
        self.pending -= len(batch)
        self.carried = len(batch)
        self._busy = True
        self.pool.run(batch).addCallbacks(self._done, self._error)

    def _done(self, reply: bytes) -> None:
        self._busy = False
        if self._cancelled:
            return
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
