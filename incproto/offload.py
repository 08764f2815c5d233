# -*- test-case-name: tests.test_offload -*-
"""Running payload handlers off the reactor thread: a bounded pool of
threads or processes, and each connection's ordered stream of work.

L{ThreadWorkers} and L{ProcessWorkers} are services: they start their
threads or processes in C{startService} (twistd calls C{makeService} before
it daemonizes), accept at most C{backlog} jobs at a time (the rest wait in
FIFO order, on the reactor thread, one per connection at most), and on stop
wait for work in flight, for at most C{drainTimeout} seconds, before they
stop.  L{OrderedWork} keeps one job per connection in flight, so replies
keep their order although pools finish jobs in any order.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
from collections import deque
from contextlib import contextmanager
from typing import Any, Callable, Deque, Iterator, List, Optional, cast

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from incproto.handlers import IPayloadHandler
from incproto.wrapping import global_reactor

DEFAULT_DRAIN_TIMEOUT = 30.0
WORKER_NICENESS = 10
# See ProcessWorkers.startService.
GIL_SWITCH_INTERVAL = 0.001


def _transform(handler: IPayloadHandler, payload: bytes) -> bytes:
    """Run in a worker process: the handler arrives pickled."""
    return handler.transform(payload)


def _yield_to_the_reactor() -> None:
    """
    Run in each worker process as it starts: lower its scheduling priority.
    Every job crosses a few threads of the reactor's process (hand-off,
    results, the reactor itself); when workers keep every core busy, those
    latency-bound threads would otherwise wait a time slice for each job.
    """
    os.nice(WORKER_NICENESS)


class Workers(Service):
    """
    A bounded pool that runs C{handler.transform(payload)} off the reactor
    thread; results come back on the reactor thread.

    @ivar handler: the L{IPayloadHandler}.
    @ivar size: threads or processes.
    @ivar backlog: jobs submitted to the pool at once; more wait.
    @ivar inFlight: jobs submitted and not finished.
    @ivar waiting: jobs waiting for room in the backlog.
    @ivar completed: jobs finished, in total.
    """

    log = Logger()

    def __init__(
        self,
        handler: IPayloadHandler,
        size: int,
        reactor: Any = None,
        backlog: Optional[int] = None,
        drainTimeout: float = DEFAULT_DRAIN_TIMEOUT,
    ) -> None:
        if size < 1:
            raise ValueError(f"a pool needs at least 1 worker, not {size}")
        if reactor is None:
            reactor = global_reactor()
        self.handler = handler
        self.size = size
        self.reactor = reactor
        self.backlog = backlog or 2 * size
        self.drainTimeout = drainTimeout
        self.inFlight = 0
        self.completed = 0
        self._waiting: Deque[tuple[bytes, Deferred[bytes]]] = deque()
        self._idle: List[Deferred[None]] = []

    @property
    def waiting(self) -> int:
        """Jobs waiting for room in the backlog."""
        return len(self._waiting)

    def run(self, payload: bytes) -> Deferred[bytes]:
        """
        Transform C{payload} in the pool.

        @return: a Deferred that fires with the reply bytes, or fails with
            the handler's exception.
        """
        d: Deferred[bytes] = Deferred()
        if self.inFlight < self.backlog:
            self._submit(payload, d)
        else:
            self._waiting.append((payload, d))
        return d

    def _submit(self, payload: bytes, d: Deferred[bytes]) -> None:
        self.inFlight += 1
        self._call(payload, lambda ok, result: self.reactor.callFromThread(
            self._finished, d, ok, result))  # fmt: skip

    def _finished(self, d: Deferred[bytes], ok: bool, result: Any) -> None:
        self.inFlight -= 1
        self.completed += 1
        if self._waiting:
            self._submit(*self._waiting.popleft())
        elif not self.inFlight:
            idle, self._idle = self._idle, []
            for waiter in idle:
                waiter.callback(None)
        if ok:
            d.callback(result)
        else:
            d.errback(result if isinstance(result, Failure) else Failure(result))

    def _call(self, payload: bytes, done: Callable[[bool, Any], None]) -> None:
        """Run the handler on C{payload} in the pool; call C{done(ok, result)}
        from any thread."""
        raise NotImplementedError

    def _stopPool(self, idle: bool) -> None:
        """Stop the threads or processes; C{idle} if no job is running."""
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
        Wait for the work in flight (at most C{drainTimeout} seconds), then
        stop the pool.
        """
        super().stopService()
        d = self.whenIdle()
        if not d.called:
            d.addTimeout(self.drainTimeout, cast(IReactorTime, self.reactor))

        def stop(result: Any) -> None:
            idle = not isinstance(result, Failure)
            if not idle:
                self.log.warn(
                    "stopping {pool} with {count} jobs unfinished after {timeout}s",
                    pool=self,
                    count=self.inFlight + len(self._waiting),
                    timeout=self.drainTimeout,
                )
            self._stopPool(idle)

        return d.addBoth(stop)


class ThreadWorkers(Workers):
    """
    A dedicated C{ThreadPool} of C{size} threads (not the reactor's shared
    pool), started by C{startService} and stopped by C{stopService}.
    """

    def __init__(self, handler: IPayloadHandler, size: int, **kwargs: Any) -> None:
        super().__init__(handler, size, **kwargs)
        self.pool = ThreadPool(minthreads=size, maxthreads=size, name="incproto")

    def startService(self) -> None:
        """Start the threads."""
        super().startService()
        self.pool.start()

    def _call(self, payload: bytes, done: Callable[[bool, Any], None]) -> None:
        self.pool.callInThreadWithCallback(done, self.handler.transform, payload)

    def _stopPool(self, idle: bool) -> None:
        if idle:
            self.pool.stop()  # joins idle threads: immediate
        else:
            # A stuck handler would block the reactor in join(); let a
            # helper thread wait for it instead.
            threading.Thread(target=self.pool.stop, daemon=True).start()

    def __repr__(self) -> str:
        return f"ThreadWorkers({self.handler!r}, {self.size})"


class ProcessWorkers(Workers):
    """
    A C{multiprocessing} pool of C{size} processes, for handlers that hold
    the GIL.  Workers are started with C{forkserver} (C{spawn} where there
    is none): a forked worker would inherit the listening and client sockets,
    so a close would send no FIN and a drained server would still accept in
    the child.  The handler is pickled with each job.
    """

    def __init__(self, handler: IPayloadHandler, size: int, **kwargs: Any) -> None:
        super().__init__(handler, size, **kwargs)
        self.pool: Any = None

    def startService(self) -> None:
        """
        Start the processes.

        Also shorten this process's GIL switch interval (to at most 1 ms, from
        Python's 5 ms): each job crosses three threads here (the reactor and
        the pool's task and result handlers), and with the default interval
        each hand-off can wait up to 5 ms for the GIL, which on a 64 KiB
        job cost more than the parallelism gained (measured: 12.8 ms per job
        with two workers against 4.3 ms with this setting, 6.8 ms inline).
        """
        super().startService()
        sys.setswitchinterval(min(sys.getswitchinterval(), GIL_SWITCH_INTERVAL))
        method = "forkserver" if sys.platform.startswith("linux") else "spawn"
        context = multiprocessing.get_context(method)
        with _real_stderr():
            self.pool = context.Pool(self.size, initializer=_yield_to_the_reactor)

    def _call(self, payload: bytes, done: Callable[[bool, Any], None]) -> None:
        self.pool.apply_async(
            _transform,
            (self.handler, payload),
            callback=lambda result: done(True, result),
            error_callback=lambda error: done(False, error),
        )

    def _stopPool(self, idle: bool) -> None:
        pool, self.pool = self.pool, None
        if pool is None:
            return
        if idle:
            pool.close()
        else:
            pool.terminate()
        # join() waits for the processes to exit; they are idle or killed.
        pool.join()

    def __repr__(self) -> str:
        return f"ProcessWorkers({self.handler!r}, {self.size})"


@contextmanager
def _real_stderr() -> Iterator[None]:
    """
    While starting helper processes, let C{sys.stderr} be the real one.
    multiprocessing hands its helper processes C{sys.stderr}'s descriptor;
    twistd replaces C{sys.stderr} with a log file whose C{fileno()} is -1,
    which PyPy's C{spawnv_passfds} rejects ("bad value(s) in fds_to_keep").
    """
    stderr = sys.stderr
    try:
        usable = stderr.fileno() >= 0
    except Exception:
        usable = False
    if not usable and sys.__stderr__ is not None:
        sys.stderr = sys.__stderr__
    try:
        yield
    finally:
        sys.stderr = stderr


class OrderedWork:
    """
    One connection's payload, run in a pool in order: at most one job is in
    flight, and payload that arrives meanwhile is batched into the next job.
    When more than C{limit} bytes wait, C{pause(True)} asks the connection
    to stop reading; C{pause(False)} once they fit again.

    @ivar pending: bytes waiting for the next job.
    """

    def __init__(
        self,
        workers: Workers,
        deliver: Callable[[bytes], None],
        failed: Callable[[Failure], None],
        pause: Callable[[bool], None],
        idle: Callable[[], None],
        limit: int,
    ) -> None:
        self.workers = workers
        self.deliver = deliver
        self.failed = failed
        self.pause = pause
        self.idle = idle
        self.limit = limit
        self.pending = 0
        self._batch: List[bytes] = []
        self._busy = False
        self._paused = False
        self._cancelled = False

    @property
    def busy(self) -> bool:
        """Whether a job is in flight or payload waits for one."""
        return self._busy or bool(self._batch)

    def add(self, payload: bytes) -> None:
        """
        Queue C{payload} for the pool.
        """
        self._batch.append(payload)
        self.pending += len(payload)
        if not self._busy:
            self._next()
        if self.pending >= self.limit and not self._paused:
            self._paused = True
            self.pause(True)

    def cancel(self) -> None:
        """
        The connection is gone: drop the results of work in flight.
        """
        self._cancelled = True
        self._batch = []

    def _next(self) -> None:
        batch, self._batch = b"".join(self._batch), []
        self.pending = 0
        self._busy = True
        self.workers.run(batch).addCallbacks(self._done, self._error)
        if self._paused:
            self._paused = False
            self.pause(False)

    def _done(self, reply: bytes) -> None:
        self._busy = False
        if self._cancelled:
            return
        if reply:
            self.deliver(reply)
        if self._batch:
            self._next()
        else:
            self.idle()

    def _error(self, failure: Failure) -> None:
        self._busy = False
        if not self._cancelled:
            self._cancelled = True
            self.failed(failure)
