# -*- test-case-name: tests.unit.test_pools,tests.integration.test_pools -*-
"""L{ProcessHandlerPool}: a handler pool of processes (a C{pebble} pool), for
handlers that hold the GIL, which survives its processes and kills a
handler that runs too long."""

from __future__ import annotations

import os
import pickle
import sys
import threading
import time
from contextlib import contextmanager, suppress
from typing import Any, Callable, Dict, Iterator, Set, Tuple

from twisted.internet.defer import Deferred, succeed
from twisted.internet.defer import TimeoutError as StopTimeoutError
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure

from incproto._kernel.poolprocess import started, transform
from incproto._kernel.ratelimit import RateLimitedLog
from incproto._kernel.spawning import pool_context
from incproto._kernel.words import counted
from incproto.handlers import IPayloadHandler
from incproto.pools._base import (
    HandlerPool,
    HandlerTimeoutError,
    Job,
    PoolProcessLostError,
)

# See ProcessHandlerPool.startService.
GIL_SWITCH_INTERVAL = 0.001
# Seconds to wait for a pool's processes to stop, beyond the drain.
STOP_GRACE = 10.0
# Seconds between two logged faults of pool processes.
FAULT_LOG_INTERVAL = 10.0
# Seconds between two checks that a pool's processes can still take jobs
# (see ProcessHandlerPool._check); also how long a job waits for a process
# before its pool's channel lock is probed.
CHECK_INTERVAL = 1.0
# Seconds the pool's channel lock may stay held before its holder is taken
# to have died holding it: a live process holds it while it reads one job
# and acknowledges it (microseconds), pebble's manager while it stops a
# process past its handler timeout (SIGTERM, then up to 3 s for it to exit,
# pebble's term_timeout, then SIGKILL).
LOCK_PROBE_TIMEOUT = 5.0


class _PoolBrokeError(Exception):
    """A process pool failed a job that none of its processes held."""


class ProcessHandlerPool(HandlerPool):
    """
    A pool of C{size} processes, for handlers that hold the GIL: a
    C{pebble.ProcessPool}, which knows which job each process holds, so a
    process that dies fails only its job, and kills a process whose job runs
    past C{handlerTimeout}; either way it starts a replacement.  A pool that
    breaks as a whole (all processes gone, no new one can start) is replaced
    by a new one at the next job.

    Processes are forked by a forkserver, not by the server: one forked by
    the server would inherit the listening and client sockets (a close
    would send no FIN, a drained server would still accept in the child).
    The forkserver has imported what they need, so that a replacement costs
    milliseconds, and they die with it, and it with the server (see
    L{incproto._kernel.spawning}).  The handler is pickled with each job.

    Once a second, while jobs are in flight, the pool checks what pebble
    does not: that a process killed at the wrong instant (the OOM killer,
    C{kill -9}, its forkserver's death) has not wedged it (see L{_check}).

    @ivar replaced: how many times a broken pool was replaced.
    """

    def __init__(
        self,
        handler: IPayloadHandler,
        size: int,
        maxJobsPerProcess: int = 0,
        **kwargs: Any,
    ) -> None:
        """
        @param maxJobsPerProcess: jobs after which a process is replaced by
            a fresh one (pebble's C{max_tasks}), so that a handler that
            leaks memory cannot grow a process for ever; 0 for never.
        """
        super().__init__(handler, size, **kwargs)
        if maxJobsPerProcess < 0:
            raise ValueError(
                "jobs per process must be 0 (no limit) or more, "
                f"not {maxJobsPerProcess}"
            )
        self.maxJobsPerProcess = maxJobsPerProcess
        self.executor: Any = None
        self.replaced = 0
        self._jobs: Set[Job] = set()
        self._checks = LoopingCall(self._check)
        self._checks.clock = self.reactor
        self._probing = False
        self._stranded: Set[int] = set()
        # A process killed by each of many clients' jobs must not flood the
        # log: one line per 10 s, then a count (as the protocol's own).
        self._faults = RateLimitedLog(
            self.log,
            self.reactor,
            FAULT_LOG_INTERVAL,
            "{count} more pool process faults in the last {interval}s (not logged)",
        )

    def startService(self) -> None:
        """
        Start the processes.

        Also shorten this process's GIL switch interval (to at most 1 ms, from
        Python's 5 ms): each job crosses several threads here (the reactor
        and pebble's scheduling and result threads), and with the default
        interval each hand-off can wait up to 5 ms for the GIL, which on a
        64 KiB job costs more than the parallelism gains.  (The effect was
        measured before pebble replaced C{multiprocessing.Pool}, which hands
        jobs across the same kind of threads; C{benchmarks/pools.py}
        measures the pools as they are.)
        """
        super().startService()
        sys.setswitchinterval(min(sys.getswitchinterval(), GIL_SWITCH_INTERVAL))
        self.executor = self._newPool()
        self._checks.start(CHECK_INTERVAL, now=False)

    def _newPool(self) -> Any:
        import pebble

        try:
            warm = pickle.dumps(self.handler)
        except Exception:
            warm = None  # each job fails with the pickling error instead
        with _real_stderr():
            pool = pebble.ProcessPool(
                self.size,
                max_tasks=self.maxJobsPerProcess,
                initializer=started,
                initargs=(os.getpid(), warm),
                context=pool_context(self.handler),
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
                transform, (self.handler, job.payload), timeout=self.handlerTimeout
            )
        except RuntimeError:  # it broke just now
            pool = self._replace(pool, "it broke")
            future = pool.schedule(
                transform, (self.handler, job.payload), timeout=self.handlerTimeout
            )
        job.executor, job.future = pool, future
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
        pool = job.executor
        if isinstance(result, _PoolBrokeError):
            # No process held this job: the pool broke around it (all its
            # processes gone, or it was replaced).  Run it once more.
            if self.executor is not None and not job.retried:
                job.retried = True
                if pool is self.executor and not pool.active:
                    self._replace(pool, f"it broke ({result})")
                self.inFlight -= 1
                self._submit(job)
                return
            result = PoolProcessLostError(f"the process pool broke: {result}")
        if isinstance(result, (PoolProcessLostError, HandlerTimeoutError)):
            self._faults.warn("{pool}: {error}", pool=self, error=str(result))
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
        self.log.warn(
            "{pool}: replacing the process pool, because {why}", pool=self, why=why
        )
        self.executor = self._newPool()
        self.replaced += 1
        self._stranded = set()  # task ids are the old pool's
        self._stopInThread(broken)
        return self.executor

    def _check(self) -> None:
        """
        Make sure that the pool's processes can still take jobs; replace the
        pool if not (jobs no process started run once more in the new one,
        started ones fail: see L{_stopInThread}).

        pebble's processes take jobs from one pipe under a lock shared by
        all of them, and acknowledge each job they take.  A process killed
        while it holds that lock (reading a job, or acknowledging it) leaves
        it held for good: every other process, replacements included, then
        waits pebble's lock timeout (60 s) for each job.  So a job that has
        waited a second for a process has the lock probed (in a helper
        thread, for at most C{LOCK_PROBE_TIMEOUT} seconds).  And a process
        killed just after its acknowledgement may have been found dead
        before the acknowledgement was read: pebble then holds its job as
        running, on a process that is gone, for ever.  A job seen so on two
        checks in a row is stranded: it fails as its process's death would
        have failed it (its handler may have killed it), and the pool is
        replaced, as pebble would never run another job in its place.  (A
        job past its handler timeout is not: pebble is stopping its
        process, which it has already let go of, and fails it itself.)

        Checks go on while the pool drains, so that a wedged pool cannot
        hold a stop for the whole drain timeout.
        """
        try:
            self._checkPool()
        except Exception:
            self._checkFailed()

    def _checkFailed(self) -> None:
        """A replacement could not start (no memory, no descriptors): say
        so; the next check tries again."""
        self.log.failure("{pool}: checking its processes failed", pool=self)

    def _checkPool(self) -> None:
        pool = self.executor
        if pool is None or not self._jobs:
            self._stranded = set()
            return
        stranded = _stranded_tasks(pool)
        lost = {id: future for id, future in stranded.items() if id in self._stranded}
        self._stranded = set(stranded)
        if lost:
            futures = set(lost.values())
            for job in self._jobs:
                if job.future in futures:
                    job.retried = True  # its handler ran: fail it, once
            self._replace(
                pool,
                f"pebble lost {counted(len(lost), 'job')} of a process that died",
            )
            return
        now = self.reactor.seconds()
        if not self._probing and any(
            job.executor is pool
            and not job.future.running()
            and not job.future.done()
            and now - job.asked >= CHECK_INTERVAL
            for job in self._jobs
        ):
            self._probe(pool)

    def _probe(self, pool: Any) -> None:
        """Probe C{pool}'s channel lock in a helper thread (see
        L{_check}); replace the pool if no process could have taken it."""
        mutex = _channel_mutex(pool)
        if mutex is None:
            return
        self._probing = True

        def probe() -> None:
            free = True
            try:
                free = _lock_is_free(mutex, LOCK_PROBE_TIMEOUT)
            finally:
                self.reactor.callFromThread(probed, free)

        def probed(free: bool) -> None:
            self._probing = False
            if not free and pool is self.executor:
                try:
                    self._replace(
                        pool,
                        "a process died holding its channel lock "
                        f"(held for over {LOCK_PROBE_TIMEOUT:g}s)",
                    )
                except Exception:
                    self._checkFailed()

        threading.Thread(target=probe, name="incproto pool check", daemon=True).start()

    def _stopPool(self, idle: bool) -> Deferred[None]:
        if self._checks.running:
            self._checks.stop()
        self._faults.stop()
        pool, self.executor = self.executor, None
        if pool is None:
            return succeed(None)
        return self._stopInThread(pool)

    def _stopInThread(self, pool: Any) -> Deferred[None]:
        """
        Stop a pebble pool (it terminates its processes, then kills those
        that linger) and join its threads, in a daemon thread: never on the
        reactor's.  Then fail the jobs it never answered: those a process
        had started as lost, the others to be run once more (L{_finished}).
        Fires on the reactor thread once done, or after C{STOP_GRACE}
        seconds.
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
                if job.executor is pool and not job.future.done():
                    # A job a process had started may have run: it fails.
                    # One no process took runs once more (see _finished).
                    job.retried = job.retried or job.future.running()
                    job.future.set_exception(_PoolBrokeError("its pool was stopped"))
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


def _channel_mutex(pool: Any) -> Any:
    """The lock pebble's processes take a job under (pebble 5's
    C{ChannelMutex}), or C{None} if C{pool} has none."""
    manager = getattr(getattr(pool, "_pool_manager", None), "worker_manager", None)
    channel = getattr(manager, "workers_channel", None)
    return getattr(channel, "mutex", None)


def _lock_is_free(mutex: Any, timeout: float) -> bool:
    """Whether C{mutex} could be taken (it is let go at once); also C{True}
    if it is gone (its pool was stopped).  pebble's C{ChannelMutex} is two
    locks, each given C{timeout} seconds."""
    try:
        if not mutex.acquire(block=True, timeout=timeout):
            return False
        mutex.release()
    except Exception:  # unlinked as its pool stopped
        pass
    return True


def _stranded_tasks(pool: Any) -> Dict[int, Any]:
    """
    The tasks that pebble holds as running on a process it no longer has,
    by id, with their futures (pebble 5's C{TaskManager.tasks} and
    C{WorkerManager.workers}, read without their threads' help: a copy,
    and nothing on a race).  Tasks past their timeout are left out: pebble
    lets go of such a task's process before it stops it (up to 3 s), then
    fails the task itself.
    """
    manager = getattr(pool, "_pool_manager", None)
    tasks = getattr(getattr(manager, "task_manager", None), "tasks", None)
    workers = getattr(getattr(manager, "worker_manager", None), "workers", None)
    if tasks is None or workers is None:
        return {}
    now = time.time()  # pebble's task clock
    try:
        running = [
            (t.id, t.worker_id, t.future)
            for t in list(tasks.values())
            if not (t.timeout and t.timestamp and now - t.timestamp > t.timeout)
        ]
        alive = set(workers)
    except RuntimeError:  # changed size while copied
        return {}
    return {id: future for id, pid, future in running if pid and pid not in alive}


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
