# -*- test-case-name: tests.unit.test_pools,tests.integration.test_pools -*-
"""Running payload handlers off the reactor thread: a bounded pool of
threads or processes, and each connection's ordered stream of work.

L{ThreadHandlerPool} and L{ProcessHandlerPool} are services: they start
their threads or processes in C{startService} (twistd calls C{makeService}
before it daemonizes), accept at most C{backlog} jobs at a time (the rest
wait in FIFO order, on the reactor thread, one per connection at most), and
on stop wait for work in flight, for at most C{drainTimeout} seconds, before
they stop.  A job that runs longer than C{handlerTimeout} fails with
L{HandlerTimeoutError}; a job whose process died fails with
L{PoolProcessLostError}; either way only that job's connection is affected.
("Worker" in incproto always means a serving process of C{--workers}, see
L{incproto.workers.supervisor}; these are handler pools.)  L{OrderedWork} keeps one job
per connection in flight, so replies keep their order although pools finish
jobs in any order.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
import time
from collections import deque
from contextlib import contextmanager, suppress
from typing import Any, Callable, Deque, Iterator, List, Optional, Set, Tuple

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.defer import TimeoutError as StopTimeoutError
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from incproto._kernel.closing import cancel
from incproto._kernel.reactors import global_reactor
from incproto.handlers import IPayloadHandler
from incproto.serving.signals import die_with_parent

DEFAULT_DRAIN_TIMEOUT = 30.0
POOL_NICENESS = 10
# See ProcessHandlerPool.startService.
GIL_SWITCH_INTERVAL = 0.001
# Seconds to wait for a pool's processes to stop, beyond the drain.
STOP_GRACE = 10.0


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


class _PoolBrokeError(Exception):
    """A process pool failed a job that none of its processes held."""


def _transform(handler: IPayloadHandler, payload: bytes) -> bytes:
    """Run in a pool process: the handler arrives pickled."""
    return handler.transform(payload)


def _pool_process_started(parent: int) -> None:
    """
    Run in each pool process as it starts.

    Lower its scheduling priority: every job crosses a few threads of the
    reactor's process (hand-off, results, the reactor itself); when pool processes
    keep every core busy, those latency-bound threads would otherwise wait a
    time slice for each job.

    Then make sure it cannot outlive the server: on Linux the kernel kills
    it when its parent goes (C{PR_SET_PDEATHSIG}), and if the parent went
    before that was set, it exits now.  (A process blocked on its task pipe
    also sees end of file when the server dies; one busy in a handler would
    not.)
    """
    os.nice(POOL_NICENESS)
    die_with_parent(signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(1)


_STUCK = object()


class Job:
    """
    One payload on its way through a pool.

    @ivar payload: the bytes to transform.
    @ivar deferred: fires with the reply, or fails.
    @ivar started: when a thread started it (C{time.monotonic()}), or C{None}.
    @ivar timer: the thread pool's check for C{handlerTimeout}.
    @ivar abandoned: the job timed out; its thread, if it ever returns, is
        given back and its result dropped.
    @ivar handle: the process pool and its future for the job; for a
        thread pool, C{_STUCK} once its thread is counted stuck.
    @ivar retried: whether it was submitted again after its pool broke.
    """

    __slots__ = (
        "abandoned",
        "deferred",
        "handle",
        "payload",
        "retried",
        "started",
        "timer",
    )

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.deferred: Deferred[bytes] = Deferred()
        self.started: Optional[float] = None
        self.timer: Optional[IDelayedCall] = None
        self.abandoned = False
        self.handle: Any = None
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
        self._waiting: Deque[Job] = deque()
        self._idle: List[Deferred[None]] = []

    @property
    def waiting(self) -> int:
        """Jobs waiting for room in the backlog."""
        return len(self._waiting)

    def run(self, payload: bytes) -> Deferred[bytes]:
        """
        Transform C{payload} in the pool.

        @return: a Deferred that fires with the reply bytes, or fails with
            the handler's exception, L{HandlerTimeoutError} or L{PoolProcessLostError}.
        """
        job = Job(payload)
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
        see L{incproto.serving.service.time_left}), then stop the pool.
        """
        from incproto.serving.service import time_left

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
                    "stopping {pool} with {count} jobs unfinished after {timeout}s",
                    pool=self,
                    count=self.inFlight + len(self._waiting),
                    timeout=round(timeout, 3),
                )
            return self._stopPool(idle)

        return d.addBoth(stop)


class ThreadHandlerPool(HandlerPool):
    """
    A dedicated C{ThreadPool} of C{size} threads (not the reactor's shared
    pool), started by C{startService} and stopped by C{stopService}.

    Python cannot kill a thread.  A job past C{handlerTimeout} fails (its
    connection closes) and its slot is given back, but its thread stays busy
    until the handler returns: it is I{stuck}.  Each stuck thread is
    replaced by a new one, up to C{size} of them, so the pool keeps C{size}
    threads working while at most C{size} more are lost; beyond that an
    error is logged, the pool runs short, and jobs that cannot start within
    the timeout fail too.  A stuck thread that returns is retired.

    @ivar stuck: threads still running a handler that timed out.
    """

    def __init__(self, handler: IPayloadHandler, size: int, **kwargs: Any) -> None:
        super().__init__(handler, size, **kwargs)
        self.executor = ThreadPool(minthreads=size, maxthreads=size, name="incproto")
        # A thread stuck in a handler must not keep the process from exiting.
        self.executor.threadFactory = _daemon_thread  # type: ignore[assignment]
        self.stuck = 0

    def startService(self) -> None:
        """Start the threads."""
        super().startService()
        self.executor.start()

    def _call(self, job: Job, done: Callable[[bool, Any], None]) -> None:
        def run() -> bytes:
            if job.abandoned:
                return b""  # it timed out while waiting for a thread
            job.started = time.monotonic()
            return self.handler.transform(job.payload)

        if self.handlerTimeout is not None:
            job.timer = self.reactor.callLater(self.handlerTimeout, self._check, job)
        self.executor.callInThreadWithCallback(done, run)

    def _check(self, job: Job) -> None:
        """C{handlerTimeout} seconds after submission, and then as needed."""
        timeout = self.handlerTimeout
        assert timeout is not None
        started = job.started
        if started is None and self.stuck < self.executor.max:
            # Waiting behind other jobs on a live thread: its clock has
            # not started yet.
            job.timer = self.reactor.callLater(timeout, self._check, job)
            return
        if started is not None:
            left = started + timeout - time.monotonic()
            if left > 0:
                job.timer = self.reactor.callLater(left, self._check, job)
                return
        job.timer = None
        job.abandoned = True
        if started is not None:
            job.handle = _STUCK  # its thread is counted stuck until it returns
            self.stuck += 1
            self._resize()
        self.log.warn(
            "{pool}: a handler call {what} {timeout}s; {stuck} threads stuck",
            pool=self,
            what="ran longer than" if started is not None else "found no thread in",
            timeout=timeout,
            stuck=self.stuck,
        )
        self._release()
        self.timeouts += 1
        job.deferred.errback(
            Failure(HandlerTimeoutError(f"the handler ran longer than {timeout}s"))
        )

    def _returned(self, job: Job) -> None:
        if job.handle is _STUCK:
            self.stuck -= 1
            self._resize()

    def _resize(self) -> None:
        """Keep C{size} threads that are not stuck, within C{2 * size}."""
        threads = self.size + min(self.stuck, self.size)
        if self.stuck > self.size:
            self.log.error(
                "{pool}: {stuck} threads are stuck in the handler; only "
                "{replaced} are replaced",
                pool=self,
                stuck=self.stuck,
                replaced=self.size,
            )
        self.executor.adjustPoolsize(threads, threads)

    def _stopPool(self, idle: bool) -> None:
        if idle and not self.stuck:
            self.executor.stop()  # joins idle threads: immediate
        else:
            # A stuck handler would block the reactor in join(); let a
            # helper thread wait for it instead.
            threading.Thread(target=self.executor.stop, daemon=True).start()

    def __repr__(self) -> str:
        return f"ThreadHandlerPool({self.handler!r}, {self.size})"


def _daemon_thread(**kwargs: Any) -> threading.Thread:
    return threading.Thread(daemon=True, **kwargs)


class ProcessHandlerPool(HandlerPool):
    """
    A pool of C{size} processes, for handlers that hold the GIL: a
    C{pebble.ProcessPool}, which knows which job each process holds, so a
    process that dies fails only its job, and kills a process whose job runs
    past C{handlerTimeout}; either way it starts a replacement.  A pool that
    breaks as a whole (all processes gone, no new one can start) is replaced
    by a new one at the next job.

    Processes are started with C{spawn}: a forked one would inherit the
    listening and client sockets (a close would send no FIN, a drained
    server would still accept in the child), and a C{forkserver}'s
    children outlive the server when the forkserver is killed, and look dead
    to the pool while they still run.  Spawned processes are the server's
    own children, and die with it (see L{_pool_process_started}).  The handler is
    pickled with each job.

    @ivar replaced: how many times a broken pool was replaced.
    """

    def __init__(self, handler: IPayloadHandler, size: int, **kwargs: Any) -> None:
        super().__init__(handler, size, **kwargs)
        self.executor: Any = None
        self.replaced = 0
        self._jobs: Set[Job] = set()

    def startService(self) -> None:
        """
        Start the processes.

        Also shorten this process's GIL switch interval (to at most 1 ms, from
        Python's 5 ms): each job crosses several threads here (the reactor
        and the pool's scheduler and result threads), and with the default
        interval each hand-off can wait up to 5 ms for the GIL, which on a
        64 KiB job cost more than the parallelism gained (measured with
        multiprocessing.Pool: 12.8 ms per job with two workers against 4.3 ms
        with this setting, 6.8 ms inline).
        """
        super().startService()
        sys.setswitchinterval(min(sys.getswitchinterval(), GIL_SWITCH_INTERVAL))
        self.executor = self._newPool()

    def _newPool(self) -> Any:
        import pebble

        with _real_stderr():
            pool = pebble.ProcessPool(
                self.size,
                initializer=_pool_process_started,
                initargs=(os.getpid(),),
                context=multiprocessing.get_context("spawn"),
            )
            # Start the processes now, from this thread (the reactor's):
            # their death signal follows the thread that started them.
            if not pool.active:
                raise RuntimeError("the process pool did not start")
        return pool

    def _call(self, job: Job, done: Callable[[bool, Any], None]) -> None:
        pool = self.executor
        if not pool.active:
            pool = self._replace(pool, "it broke")
        try:
            future = pool.schedule(
                _transform, (self.handler, job.payload), timeout=self.handlerTimeout
            )
        except RuntimeError:  # it broke just now
            pool = self._replace(pool, "it broke")
            future = pool.schedule(
                _transform, (self.handler, job.payload), timeout=self.handlerTimeout
            )
        job.handle = (pool, future)
        self._jobs.add(job)
        future.add_done_callback(lambda f: done(*self._outcome(f)))

    def _outcome(self, future: Any) -> Tuple[bool, Any]:
        """Translate a finished pebble future (in any thread)."""
        from concurrent.futures import CancelledError, TimeoutError
        from concurrent.futures.process import BrokenProcessPool

        import pebble

        try:
            return True, future.result()
        except TimeoutError:
            return False, HandlerTimeoutError(
                f"the handler ran longer than {self.handlerTimeout}s; "
                "its process was killed"
            )
        except pebble.ProcessExpired as e:
            return False, PoolProcessLostError(
                f"the process running the handler died ({e}, exit code {e.exitcode})"
            )
        except (BrokenProcessPool, CancelledError) as e:
            return False, _PoolBrokeError(str(e) or type(e).__name__)
        except BaseException as e:
            return False, e

    def _finished(self, job: Job, ok: bool, result: Any) -> None:
        self._jobs.discard(job)
        pool = job.handle[0]
        if isinstance(result, _PoolBrokeError):
            # No process held this job: the pool broke around it (all its
            # processes gone, or it was replaced).  Run it once more.
            if self.running and not job.retried:
                job.retried = True
                if pool is self.executor and not pool.active:
                    self._replace(pool, f"it broke ({result})")
                self.inFlight -= 1
                self._submit(job)
                return
            result = PoolProcessLostError(f"the process pool broke: {result}")
        if isinstance(result, (PoolProcessLostError, HandlerTimeoutError)):
            self.log.warn("{pool}: {error}", pool=self, error=str(result))
            if self.running and pool is self.executor and not pool.active:
                self._replace(pool, "its processes could not be replaced")
        super()._finished(job, ok, result)

    def _replace(self, broken: Any, why: str) -> Any:
        """
        Put a new pool in place of C{broken} (unless that was done already)
        and stop the old one in a helper thread; the jobs it never answered
        are run once more in the new one (see L{_finished}).
        """
        if broken is not self.executor:
            return self.executor
        self.replaced += 1
        self.log.warn(
            "{pool}: replacing the process pool, because {why}", pool=self, why=why
        )
        self.executor = self._newPool()
        self._stopInThread(broken)
        return self.executor

    def _stopPool(self, idle: bool) -> Deferred[None]:
        pool, self.executor = self.executor, None
        if pool is None:
            return succeed(None)
        return self._stopInThread(pool)

    def _stopInThread(self, pool: Any) -> Deferred[None]:
        """
        Stop a pebble pool (it terminates its processes, then kills those
        that linger) and join its threads, in a daemon thread: never on the
        reactor's.  Then fail the jobs it never answered.  Fires on the
        reactor thread once done, or after C{STOP_GRACE} seconds.
        """
        stopped: Deferred[None] = Deferred()

        def stop() -> None:
            try:
                pool.stop()
                _terminate_processes(pool)
                pool.join()
            finally:
                self.reactor.callFromThread(done)

        def done() -> None:
            thread.join(1.0)  # it ends as it hands this over
            for job in list(self._jobs):
                future = job.handle[1]
                if job.handle[0] is pool and not future.done():
                    future.set_exception(_PoolBrokeError("its pool was stopped"))
            if not stopped.called:
                stopped.callback(None)

        def late(failure: Failure) -> None:
            # addTimeout fails a Deferred it cancelled with its TimeoutError.
            failure.trap(StopTimeoutError)
            self.log.warn(
                "{pool}: its processes did not stop within {grace}s",
                pool=self,
                grace=STOP_GRACE,
            )

        thread = threading.Thread(target=stop, name="incproto pool stop", daemon=True)
        thread.start()
        return stopped.addTimeout(STOP_GRACE, self.reactor).addErrback(late)

    def __repr__(self) -> str:
        return f"ProcessHandlerPool({self.handler!r}, {self.size})"


def _terminate_processes(pool: Any) -> None:
    """
    Terminate a stopped pebble pool's processes before it closes its
    channels.  pebble closes them first, and a process still starting then
    fails to unpickle the channel's lock and prints a traceback (seen when a
    server stops within a second of starting).  Waits for the pool's manager
    thread first, so that no process is started afterwards.
    """
    manager_loop = getattr(pool, "_pool_manager_loop", None)
    if manager_loop is not None:
        manager_loop.join(STOP_GRACE)
    manager = getattr(getattr(pool, "_pool_manager", None), "worker_manager", None)
    for process in list(getattr(manager, "workers", {}).values()):
        with suppress(Exception):
            process.terminate()


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
    flight, and payload that arrives meanwhile is batched into the next job
    (at most C{limit // 2} bytes a job, so that the next batch can be read
    while one runs).

    Memory is bounded as inline is, plus C{limit}: when the payload waiting
    plus the job in flight (or its reply, held) reach C{limit} bytes,
    C{pause(True)} asks the connection to stop reading; C{pause(False)}
    once they fit again.  While the connection's writes are paused (its
    client is not reading, see L{writesPaused}), no job is submitted and a
    finished job's reply is held, not written, until they resume.

    @ivar pending: bytes waiting for the next job.
    @ivar carried: bytes of the job in flight, or of its reply held.
    """

    def __init__(
        self,
        pool: HandlerPool,
        deliver: Callable[[bytes], None],
        failed: Callable[[Failure], None],
        pause: Callable[[bool], None],
        idle: Callable[[], None],
        limit: int,
    ) -> None:
        self.pool = pool
        self.deliver = deliver
        self.failed = failed
        self.pause = pause
        self.idle = idle
        self.limit = limit
        self.pending = 0
        self.carried = 0
        self._batch: List[bytes] = []
        self._held: Optional[bytes] = None
        self._busy = False
        self._paused = False
        self._writesPaused = False
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
        if not (self._busy or self._held is not None or self._writesPaused):
            self._next()
        self._checkPause()

    def writesPaused(self, paused: bool) -> None:
        """
        The connection's transport paused (C{True}: its client is not
        reading) or resumed its writes: hold or let go of the work.
        """
        self._writesPaused = paused
        if paused or self._cancelled:
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
        over = self.pending + self.carried >= self.limit
        if over != self._paused:
            self._paused = over
            self.pause(over)

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
        if self._writesPaused:
            self._held = reply
            return
        self._deliver(reply)

    def _deliver(self, reply: bytes) -> None:
        self.carried = 0
        if reply:
            self.deliver(reply)  # may pause writes, at once
        if self._cancelled:
            return
        if self._batch:
            if not self._writesPaused:
                self._next()
        else:
            self.idle()
        self._checkPause()

    def _error(self, failure: Failure) -> None:
        self._busy = False
        self.carried = 0
        if not self._cancelled:
            self._cancelled = True
            self.failed(failure)
