# -*- test-case-name: tests.unit.test_pools,tests.integration.test_pools -*-
"""What every handler pool shares: L{HandlerPool}, the bounded, drained
service that runs a handler off the reactor thread, its L{Job}s, and the
errors a job can fail with besides the handler's own."""

from __future__ import annotations

from collections import deque
from typing import Any, Callable, Deque, List, Optional

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from incproto._kernel.histogram import JOB_SECONDS, Histogram
from incproto._kernel.reactors import global_reactor
from incproto._kernel.timers import cancel, time_left
from incproto._kernel.words import counted
from incproto.handlers import IPayloadHandler

DEFAULT_DRAIN_TIMEOUT = 30.0


class HandlerTimeoutError(Exception):
    """
    A job ran longer than the pool's C{handlerTimeout}: its connection is
    closed, and the process that ran it killed (threads cannot be).
    """


class PoolProcessLostError(Exception):
    """
    The process running a job died (killed, crashed, or exited) before it
    answered: only the jobs it held fail.
    """


class Job:
    """
    One payload on its way through a pool.

    @ivar payload: the bytes to transform.
    @ivar asked: when it was given to the pool (the reactor's time).
    @ivar deferred: fires with the reply, or fails.
    @ivar started: when a thread started it (C{time.monotonic()}), or C{None}.
    @ivar timer: the thread pool's check for C{handlerTimeout}.
    @ivar abandoned: the job timed out; its thread, if it ever returns, is
        given back and its result dropped.
    @ivar stuck: (threads) its thread is counted stuck until it returns.
    @ivar executor: (processes) the pebble pool it was scheduled in.
    @ivar future: (processes) its future in that pool.
    @ivar retried: whether it was submitted again after its pool broke.
    """

    __slots__ = (
        "abandoned",
        "asked",
        "deferred",
        "executor",
        "future",
        "payload",
        "retried",
        "started",
        "stuck",
        "timer",
    )

    def __init__(self, payload: bytes, asked: float = 0.0) -> None:
        self.payload = payload
        self.asked = asked
        self.deferred: Deferred[bytes] = Deferred()
        self.started: Optional[float] = None
        self.timer: Optional[IDelayedCall] = None
        self.abandoned = False
        self.stuck = False
        self.executor: Any = None
        self.future: Any = None
        self.retried = False


class HandlerPool(Service):
    """
    A bounded pool that runs C{handler.transform(payload)} off the reactor
    thread; results come back on the reactor thread.

    @ivar handler: the L{IPayloadHandler}.
    @ivar size: threads or processes.
    @ivar backlog: jobs submitted to the pool at once; more wait.
    @ivar handlerTimeout: seconds a job may run before it fails with
        L{HandlerTimeoutError}, or C{None} for no limit.
    @ivar inFlight: jobs submitted and not finished.
    @ivar waiting: jobs waiting for room in the backlog.
    @ivar completed: jobs finished, in total.
    @ivar timeouts: jobs that failed with L{HandlerTimeoutError}, in total.
    @ivar lost: jobs that failed with L{PoolProcessLostError}, in total.
    @ivar jobSeconds: how long each job that answered took, from L{run} to
        its reply on the reactor thread (waiting for a thread or process
        included), a L{incproto._kernel.histogram.Histogram}.
    """

    log = Logger()

    def __init__(
        self,
        handler: IPayloadHandler,
        size: int,
        reactor: Any = None,
        backlog: Optional[int] = None,
        drainTimeout: float = DEFAULT_DRAIN_TIMEOUT,
        handlerTimeout: Optional[float] = None,
    ) -> None:
        if size < 1:
            raise ValueError(f"a pool needs at least 1 thread or process, not {size}")
        if reactor is None:
            reactor = global_reactor()
        self.handler = handler
        self.size = size
        self.reactor = reactor
        self.backlog = backlog or 2 * size
        self.drainTimeout = drainTimeout
        self.handlerTimeout = handlerTimeout
        self.inFlight = 0
        self.completed = 0
        self.timeouts = 0
        self.lost = 0
        self.jobSeconds = Histogram(JOB_SECONDS)
        self._waiting: Deque[Job] = deque()
        self._idle: List[Deferred[None]] = []

    @property
    def waiting(self) -> int:
        """Jobs waiting for room in the backlog."""
        return len(self._waiting)

    def unable(self) -> Optional[str]:
        """
        Why the pool can run no handler call at all, or C{None} while it
        can (its process readiness, at /healthz).
        """
        return None

    def run(self, payload: bytes) -> Deferred[bytes]:
        """
        Transform C{payload} in the pool.

        @return: a Deferred that fires with the reply bytes, or fails with
            the handler's exception, L{HandlerTimeoutError} or L{PoolProcessLostError}.
        """
        job = Job(payload, self.reactor.seconds())
        if self.inFlight < self.backlog:
            self._submit(job)
        else:
            self._waiting.append(job)
        return job.deferred

    def _submit(self, job: Job) -> None:
        self.inFlight += 1
        self._call(job, lambda ok, result: self.reactor.callFromThread(
            self._finished, job, ok, result))  # fmt: skip

    def _finished(self, job: Job, ok: bool, result: Any) -> None:
        cancel(job.timer)
        if job.abandoned:
            self._returned(job)  # its slot was given back when it timed out
            return
        self._release()
        if ok:
            self.jobSeconds.observe(self.reactor.seconds() - job.asked)
            job.deferred.callback(result)
            return
        failure = result if isinstance(result, Failure) else Failure(result)
        if failure.check(HandlerTimeoutError):
            self.timeouts += 1
        elif failure.check(PoolProcessLostError):
            self.lost += 1
        job.deferred.errback(failure)

    def _release(self) -> None:
        """A job left the pool: count it, and let the next one in."""
        self.inFlight -= 1
        self.completed += 1
        if self._waiting:
            self._submit(self._waiting.popleft())
        elif not self.inFlight:
            idle, self._idle = self._idle, []
            for waiter in idle:
                waiter.callback(None)

    def _returned(self, job: Job) -> None:
        """A job abandoned after its timeout finally returned."""

    def _call(self, job: Job, done: Callable[[bool, Any], None]) -> None:
        """Run the handler on C{job.payload} in the pool; call
        C{done(ok, result)} from any thread."""
        raise NotImplementedError

    def _stopPool(self, idle: bool) -> Optional[Deferred[None]]:
        """Stop the threads or processes; C{idle} if no job is running.
        Must not block the reactor."""
        raise NotImplementedError

    def whenIdle(self) -> Deferred[None]:
        """
        A Deferred that fires once no job is in flight or waiting.
        """
        if not self.inFlight and not self._waiting:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._idle.append(d)
        return d

    def stopService(self) -> Deferred[None]:
        """
        Wait for the work in flight (at most C{drainTimeout} seconds, or what
        is left of the stop deadline of the service this one belongs to:
        see L{time_left}), then stop the pool.
        """
        super().stopService()
        timeout = time_left(self, self.drainTimeout, self.reactor)
        d = self.whenIdle()
        if not d.called and timeout > 0:
            d.addTimeout(timeout, self.reactor)
        elif not d.called:
            d.cancel()  # no time left: stop now

        def stop(result: Any) -> Optional[Deferred[None]]:
            idle = not isinstance(result, Failure)
            if not idle:
                self.log.warn(
                    "stopping {pool} with {jobs} unfinished after {timeout}s",
                    pool=self,
                    count=self.inFlight + len(self._waiting),
                    jobs=counted(self.inFlight + len(self._waiting), "job"),
                    timeout=round(timeout, 3),
                )
            return self._stopPool(idle)

        return d.addBoth(stop)
