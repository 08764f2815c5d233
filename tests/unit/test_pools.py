"""Tests for incproto.pools' handler pools on fakes, with no reactor: the
base pool on one whose jobs the test finishes by hand, the thread pool on a
fake ThreadPool, the process pool on fake pebble pools, and the process
pool's helpers called directly. (The stop of the thread and process pools
runs in a helper thread of their own, which these tests join.)"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
import sys
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FuturesTimeoutError
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import forkserver
from types import ModuleType, SimpleNamespace
from typing import Any, Callable, Dict, List, Optional, Tuple
from unittest import mock

import pebble
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from incproto._kernel import poolprocess, spawning
from incproto.handlers import FunctionHandler, HandlerReplyError, IncrementHandler
from incproto.pools import (
    HandlerPool,
    HandlerTimeoutError,
    PoolProcessLostError,
    ProcessHandlerPool,
    ThreadHandlerPool,
    _processes,
    _threads,
)
from tests.support.pools import ImmediateReactor, ManualPool, TextHandler


class PoolSizeTests(SynchronousTestCase):
    """A pool's size and backlog bound the jobs in it, and its stop waits for
    them (up to the drain timeout)."""

    def test_backlog_bounds_jobs_in_the_pool(self) -> None:
        pool = ManualPool(backlog=2)
        results: List[bytes] = []
        for payload in (b"a", b"b", b"c", b"d"):
            pool.run(payload).addCallback(results.append)
        self.assertEqual((len(pool.jobs), pool.waiting, pool.inFlight), (2, 2, 2))
        pool.finish(1)
        self.assertEqual([job[0] for job in pool.jobs], [b"a", b"c"])
        while pool.jobs:
            pool.finish()
        self.assertEqual(results, [b"c", b"b", b"d", b"e"])  # completion order
        self.assertEqual(pool.completed, 4)

    def test_stop_waits_for_work_in_flight(self) -> None:
        pool = ManualPool()
        pool.startService()
        pool.run(b"a")
        stopped: List[Any] = []
        pool.stopService().addCallback(stopped.append)
        self.assertEqual((stopped, pool.stopped), ([], None))
        pool.finish()
        self.assertEqual(pool.stopped, True)
        self.assertEqual(len(stopped), 1)

    def test_stop_gives_up_after_the_drain_timeout(self) -> None:
        pool = ManualPool(drainTimeout=5.0)
        pool.startService()
        pool.run(b"a")
        pool.stopService()
        pool.reactor.advance(5.0)
        self.assertEqual(pool.stopped, False)  # stopped, though not idle

    def test_needs_a_thread_or_process(self) -> None:
        self.assertRaises(ValueError, HandlerPool, IncrementHandler(), 0)


class HandlerPoolTests(SynchronousTestCase):
    def test_size_must_be_positive(self) -> None:
        error = self.assertRaises(ValueError, HandlerPool, IncrementHandler(), 0)
        self.assertEqual(str(error), "a pool needs at least 1 thread or process, not 0")

    def test_defaults(self) -> None:
        from twisted.internet import reactor

        pool = HandlerPool(IncrementHandler(), 3)
        self.assertIs(pool.reactor, reactor)
        self.assertEqual((pool.backlog, pool.handlerTimeout), (6, None))
        self.assertEqual((pool.inFlight, pool.completed, pool.timeouts, pool.lost),
                         (0, 0, 0, 0))  # fmt: skip
        self.assertRaises(NotImplementedError, pool.run, b"a")
        self.assertRaises(NotImplementedError, pool._stopPool, True)

    def test_default_backlog_is_twice_the_size(self) -> None:
        pool = ManualPool()
        for payload in b"abcde":
            pool.run(bytes([payload]))
        self.assertEqual((len(pool.jobs), pool.waiting), (4, 1))

    def test_failures_are_counted_by_kind(self) -> None:
        pool = ManualPool()
        outcomes: List[Failure] = []
        for error in (
            HandlerTimeoutError("slow"),
            PoolProcessLostError("gone"),
            RuntimeError("broke"),
        ):
            pool.run(b"a").addErrback(outcomes.append)
            pool.jobs.pop()[1](False, error)  # an exception, not a Failure
        self.assertEqual(
            [f.type for f in outcomes],
            [HandlerTimeoutError, PoolProcessLostError, RuntimeError],
        )
        self.assertEqual((pool.timeouts, pool.lost, pool.completed), (1, 1, 3))

    def test_finishing_cancels_the_timer(self) -> None:
        pool = ManualPool()
        pool.run(b"a")
        [job] = pool.submitted
        job.timer = pool.reactor.callLater(5.0, lambda: None)
        pool.finish()
        self.assertEqual(pool.reactor.getDelayedCalls(), [])

    def test_an_abandoned_job_that_returns_is_dropped(self) -> None:
        pool = ManualPool()
        results: List[Any] = []
        pool.run(b"a").addBoth(results.append)
        [job] = pool.submitted
        job.abandoned = True
        pool.finish()
        self.assertEqual((results, pool.inFlight, pool.completed), ([], 1, 0))

    def test_when_idle(self) -> None:
        pool = ManualPool(backlog=1)
        self.successResultOf(pool.whenIdle())
        pool.run(b"a")
        pool.run(b"b")
        idle = [pool.whenIdle(), pool.whenIdle()]
        pool.finish()
        self.assertNoResult(idle[0])  # b"b" was waiting, now in flight
        pool.finish()
        for d in idle:
            self.successResultOf(d)
        self.successResultOf(pool.whenIdle())

    def test_stop_when_idle_stops_at_once(self) -> None:
        pool = ManualPool()
        pool.startService()
        self.successResultOf(pool.stopService())
        self.assertEqual((pool.stopped, pool.running), (True, 0))

    def test_stop_warns_about_unfinished_work(self) -> None:
        events: List[Dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        pool = ManualPool(backlog=1, drainTimeout=2.5)
        pool.startService()
        pool.run(b"a")
        pool.run(b"b")
        stopped = pool.stopService()
        pool.reactor.advance(2.4)
        self.assertNoResult(stopped)
        pool.reactor.advance(0.1)
        self.successResultOf(stopped)
        self.assertEqual(pool.stopped, False)
        [warning] = [e for e in events if "unfinished" in e.get("log_format", "")]
        self.assertEqual(
            formatEvent(warning),
            f"stopping {pool!r} with 2 jobs unfinished after 2.5s",
        )

    def test_stop_within_the_parent_deadline(self) -> None:
        pool = ManualPool(drainTimeout=5.0)
        pool.parent = SimpleNamespace(stopDeadline=3.0)  # type: ignore[assignment]
        pool.startService()
        pool.run(b"a")
        pool.stopService()
        pool.reactor.advance(2.9)
        self.assertIsNone(pool.stopped)
        pool.reactor.advance(0.1)
        self.assertEqual(pool.stopped, False)

    def test_stop_with_no_time_left_stops_now(self) -> None:
        pool = ManualPool(drainTimeout=5.0)
        pool.parent = SimpleNamespace(stopDeadline=0.0)  # type: ignore[assignment]
        pool.startService()
        pool.run(b"a")
        self.successResultOf(pool.stopService())
        self.assertEqual(pool.stopped, False)
        self.assertEqual(pool.reactor.getDelayedCalls(), [])

    def test_failure_counts_add_up(self) -> None:
        pool = ManualPool()
        for error in (HandlerTimeoutError(), HandlerTimeoutError(),
                      PoolProcessLostError(), PoolProcessLostError()):  # fmt: skip
            pool.run(b"a").addErrback(lambda f: None)
            pool.jobs.pop()[1](False, error)
        self.assertEqual((pool.timeouts, pool.lost), (2, 2))

    def test_stop_with_under_a_second_left_still_waits(self) -> None:
        pool = ManualPool(drainTimeout=5.0)
        pool.parent = SimpleNamespace(stopDeadline=0.5)  # type: ignore[assignment]
        pool.startService()
        pool.run(b"a")
        stopped = pool.stopService()
        self.assertNoResult(stopped)
        pool.finish()
        self.assertEqual(pool.stopped, True)

    def test_the_warning_rounds_the_timeout_to_milliseconds(self) -> None:
        events: List[Dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        pool = ManualPool(drainTimeout=1.23456)
        pool.startService()
        pool.run(b"a")
        pool.stopService()
        pool.reactor.advance(2.0)
        [warning] = [e for e in events if "unfinished" in e.get("log_format", "")]
        self.assertEqual(warning["timeout"], 1.235)


class FakeThreadPool:
    """Stands for Twisted's ThreadPool: the test runs each call by hand."""

    def __init__(self, size: int) -> None:
        self.max = size
        self.calls: List[Tuple[Callable[[bool, Any], None], Callable[[], bytes]]] = []
        self.sizes: List[Tuple[int, int]] = []
        self.started = False
        self.stops: List[str] = []

    def start(self) -> None:
        self.started = True

    def callInThreadWithCallback(
        self, done: Callable[[bool, Any], None], f: Callable[[], bytes]
    ) -> None:
        self.calls.append((done, f))

    def adjustPoolsize(self, minthreads: int, maxthreads: int) -> None:
        self.sizes.append((minthreads, maxthreads))
        self.max = maxthreads

    def stop(self) -> None:
        self.stops.append(threading.current_thread().name)

    def run(self, index: int = 0) -> None:
        """Run a call's function (as its thread would) and report."""
        done, f = self.calls.pop(index)
        try:
            result = f()
        except Exception:
            done(False, Failure())
        else:
            done(True, result)

    def start_call(self, index: int = 0) -> Tuple[Callable[[bool, Any], None], Any]:
        """A thread takes the call and starts it; return how to finish."""
        done, f = self.calls.pop(index)
        return done, f()


class ThreadHandlerPoolTests(SynchronousTestCase):
    """ThreadHandlerPool with its threads played by the test and
    C{time.monotonic} by the clock."""

    def setUp(self) -> None:
        self.clock = ImmediateReactor()
        self.patch(_threads, "time", SimpleNamespace(monotonic=self.clock.seconds))
        self.events: List[Dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def pool(
        self, handlerTimeout: Optional[float] = 2.0, size: int = 1
    ) -> Tuple[ThreadHandlerPool, FakeThreadPool]:
        pool = ThreadHandlerPool(
            IncrementHandler(), size, reactor=self.clock,
            handlerTimeout=handlerTimeout, backlog=4,
        )  # fmt: skip
        threads = FakeThreadPool(size)
        pool.executor = threads  # type: ignore[assignment]
        return pool, threads

    def test_a_dedicated_pool_of_daemon_threads(self) -> None:
        pool = ThreadHandlerPool(IncrementHandler(), 3, reactor=self.clock)
        executor = pool.executor
        self.assertEqual((executor.min, executor.max, executor.name),
                         (3, 3, "incproto"))  # fmt: skip
        thread = executor.threadFactory(target=lambda: None)
        self.assertTrue(thread.daemon)
        self.assertEqual(pool.stuck, 0)
        self.assertEqual(repr(pool), "ThreadHandlerPool(IncrementHandler(), 3)")

    def test_start_starts_the_threads(self) -> None:
        pool, threads = self.pool()
        pool.startService()
        self.assertTrue(pool.running)
        self.assertTrue(threads.started)

    def test_a_job_runs_in_a_thread(self) -> None:
        pool, threads = self.pool(handlerTimeout=None)
        results: List[bytes] = []
        pool.run(b"abc").addCallback(results.append)
        self.assertEqual(self.clock.getDelayedCalls(), [])  # no timeout
        threads.run()
        self.assertEqual((results, pool.inFlight, pool.completed), ([b"bcd"], 0, 1))

    def test_a_quick_job_cancels_its_timer(self) -> None:
        pool, threads = self.pool()
        pool.run(b"abc")
        [timer] = self.clock.getDelayedCalls()
        self.assertEqual(timer.getTime(), 2.0)
        threads.run()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_the_timeout_counts_from_when_a_thread_starts_it(self) -> None:
        pool, threads = self.pool()
        pool.run(b"abc")
        self.clock.advance(1.5)  # still waiting for a thread
        done, _ = threads.calls[0]
        self.clock.advance(0.5)  # the check: not started, so wait on
        self.assertEqual([c.getTime() for c in self.clock.getDelayedCalls()], [4.0])
        self.clock.advance(1.0)
        done, result = threads.start_call()  # started at 3.0
        self.clock.advance(1.0)  # the check at 4.0: 1s left
        self.assertEqual([c.getTime() for c in self.clock.getDelayedCalls()], [5.0])
        done(True, result)
        self.assertEqual((pool.timeouts, pool.completed), (0, 1))

    def test_a_handler_past_its_timeout_fails_and_its_thread_is_replaced(
        self,
    ) -> None:
        pool, threads = self.pool()
        failures: List[Failure] = []
        pool.run(b"abc").addErrback(failures.append)
        done, result = threads.start_call()
        self.clock.advance(2.0)
        [failure] = failures
        failure.trap(HandlerTimeoutError)
        self.assertEqual(failure.getErrorMessage(), "the handler ran longer than 2.0s")
        self.assertEqual((pool.timeouts, pool.stuck, pool.inFlight, pool.completed),
                         (1, 1, 0, 1))  # fmt: skip
        self.assertEqual(threads.sizes, [(2, 2)])
        [warning] = [e for e in self.events if "stuck" in e.get("log_format", "")]
        self.assertEqual(
            formatEvent(warning),
            "ThreadHandlerPool(IncrementHandler(), 1): a handler call ran "
            "longer than 2.0s; 1 thread stuck",
        )
        done(True, result)  # the stuck thread returns at last: retired
        self.assertEqual((pool.stuck, threads.sizes), (0, [(2, 2), (1, 1)]))
        self.assertEqual((pool.inFlight, pool.completed), (0, 1))

    def test_a_job_that_finds_no_thread_in_time_fails(self) -> None:
        pool, threads = self.pool()
        failures: List[Failure] = []
        pool.run(b"a").addErrback(lambda f: None)
        pool.run(b"b").addErrback(failures.append)
        _first_done, _first = threads.start_call()
        self.clock.advance(2.0)  # the first is stuck: its thread replaced
        self.assertEqual(pool.stuck, 1)
        threads.max = 1  # as if the replacement were lost too
        self.clock.advance(2.0)  # the second never started: no thread
        [failure] = failures
        failure.trap(HandlerTimeoutError)
        self.assertEqual(pool.stuck, 1)  # not counted stuck: it never ran
        warnings = [
            formatEvent(e) for e in self.events if "stuck" in e.get("log_format", "")
        ]
        self.assertEqual(
            warnings[-1],
            "ThreadHandlerPool(IncrementHandler(), 1): a handler call found no "
            "thread in 2.0s; 1 thread stuck",
        )
        threads.run()  # the abandoned job reaches a thread: it does nothing
        self.assertEqual((pool.stuck, pool.timeouts), (1, 2))

    def test_an_abandoned_job_is_skipped_by_its_thread(self) -> None:
        pool, threads = self.pool()
        failures: List[Failure] = []
        pool.run(b"a").addErrback(failures.append)
        _, f = threads.calls[0]
        self.clock.advance(2.0)  # not started: waits on while a thread is free
        self.assertEqual(failures, [])
        threads.max = 0  # no thread will be
        self.clock.advance(2.0)
        self.assertEqual(len(failures), 1)
        self.assertEqual(f(), b"")  # a thread reaches it at last: skipped

    def test_too_many_stuck_threads_is_an_error(self) -> None:
        pool, threads = self.pool()
        running = []
        for payload in (b"a", b"b"):
            pool.run(payload).addErrback(lambda f: None)
            running.append(threads.start_call())
            self.clock.advance(2.0)
        self.assertEqual(pool.stuck, 2)
        self.assertEqual(threads.sizes, [(2, 2), (2, 2)])
        [error] = [e for e in self.events if "are replaced" in e.get("log_format", "")]
        self.assertEqual(
            formatEvent(error),
            "ThreadHandlerPool(IncrementHandler(), 1): 2 threads are stuck in "
            "the handler; only 1 are replaced",
        )

    def test_a_pool_with_every_thread_stuck_is_unable(self) -> None:
        """Its readiness (/healthz): one stuck thread of one is replaced, so
        the pool can run; the replacement stuck too, it cannot, until one
        returns."""
        pool, threads = self.pool()
        pool.startService()
        running = []
        for payload in (b"a", b"b"):
            self.assertIsNone(pool.unable())
            pool.run(payload).addErrback(lambda f: None)
            running.append(threads.start_call())
            self.clock.advance(2.0)
        self.assertEqual(pool.unable(), "every handler thread is stuck (2 threads)")
        done, result = running[0]
        done(True, result)  # a stuck thread returns at last
        self.assertIsNone(pool.unable())

    def test_stop_when_idle_joins_on_the_reactor_thread(self) -> None:
        pool, threads = self.pool()
        pool.startService()
        pool.stopService()
        self.assertEqual(threads.stops, [threading.current_thread().name])

    def test_stop_with_a_stuck_thread_joins_in_another_thread(self) -> None:
        pool, threads = self.pool()
        pool.startService()
        pool.run(b"a").addErrback(lambda f: None)
        _done, _result = threads.start_call()
        self.clock.advance(2.0)
        self.successResultOf(pool.stopService())
        for thread in threading.enumerate():
            if thread is not threading.current_thread() and thread.daemon:
                thread.join(5.0)
        self.assertEqual(len(threads.stops), 1)
        self.assertNotEqual(threads.stops, [threading.current_thread().name])

    def test_a_started_job_fails_once_its_time_is_up(self) -> None:
        pool, threads = self.pool()
        failures: List[Failure] = []
        pool.run(b"abc").addErrback(failures.append)
        self.clock.advance(2.0)  # not started yet: wait on
        threads.start_call()  # started at 2.0
        self.clock.advance(1.0)  # nothing due at 3.0
        self.assertEqual((failures, pool.stuck), ([], 0))
        self.clock.advance(1.0)  # the check at 4.0: exactly the timeout
        self.assertEqual((len(failures), pool.stuck), (1, 1))

    def test_a_started_job_is_checked_again_when_its_time_is_up(self) -> None:
        pool, threads = self.pool()
        failures: List[Failure] = []
        pool.run(b"abc").addErrback(failures.append)
        self.clock.advance(1.0)
        threads.start_call()  # started at 1.0: due at 3.0
        self.clock.advance(1.0)  # the check at 2.0: 1s left
        self.assertEqual(failures, [])
        self.clock.advance(1.0)
        self.assertEqual(len(failures), 1)

    def test_the_stop_helper_is_a_daemon(self) -> None:
        pool, threads = self.pool()
        daemons: List[bool] = []
        threads.stop = lambda: daemons.append(  # type: ignore[method-assign]
            threading.current_thread().daemon
        )
        pool.startService()
        pool.run(b"a").addErrback(lambda f: None)
        threads.start_call()
        self.clock.advance(2.0)
        pool.stopService()
        for thread in threading.enumerate():
            if thread is not threading.current_thread() and thread.daemon:
                thread.join(5.0)
        self.assertEqual(daemons, [True])

    def test_threads_keep_their_names(self) -> None:
        pool = ThreadHandlerPool(IncrementHandler(), 1, reactor=self.clock)
        thread = pool.executor.threadFactory(name="incproto-1", target=lambda: None)
        self.assertEqual((thread.name, thread.daemon), ("incproto-1", True))


class FakeProcessPool:
    """Stands for a C{pebble.ProcessPool}: each job's future is finished by
    the test (C{set_result}, C{set_exception}, C{cancel})."""

    def __init__(self) -> None:
        self.active = True
        self.scheduled: List[Tuple[Any, Tuple[Any, ...], Any, Future[bytes]]] = []
        self.refuse = 0  # schedule raises RuntimeError this many times
        self.calls: List[str] = []
        self.threads: List[str] = []
        self.release: Optional[threading.Event] = None  # stop waits for it

    def schedule(
        self, function: Any, args: Tuple[Any, ...], timeout: Any = "unset"
    ) -> Future[bytes]:
        if self.refuse:
            self.refuse -= 1
            self.active = False
            raise RuntimeError("the pool is not running")
        future: Future[bytes] = Future()
        self.scheduled.append((function, args, timeout, future))
        return future

    def future(self, index: int = 0) -> Future[bytes]:
        return self.scheduled[index][3]

    def stop(self) -> None:
        self.threads.append(threading.current_thread().name)
        self.calls.append("stop")
        if self.release is not None:
            self.release.wait(10.0)

    def join(self) -> None:
        self.calls.append("join")


class ThreadedReactor(Clock):
    """A Clock whose callFromThread runs the call at once on the test's
    thread, and queues it from any other, for L{settle}."""

    def __init__(self) -> None:
        super().__init__()
        self.thread = threading.current_thread()
        self.queued: List[Tuple[Callable[..., Any], Tuple[Any, ...]]] = []
        self.lock = threading.Lock()

    def callFromThread(self, f: Callable[..., Any], *args: Any) -> None:
        if threading.current_thread() is self.thread:
            f(*args)
        else:
            with self.lock:
                self.queued.append((f, args))

    def settle(self) -> None:
        """Wait for the pool's helper threads, then run what they handed over."""
        for thread in threading.enumerate():
            if thread.name in ("incproto pool stop", "incproto pool check"):
                thread.join(10.0)
        with self.lock:
            queued, self.queued = self.queued, []
        for f, args in queued:
            f(*args)


class FakeMutex:
    """Stands for pebble's channel lock: free or held (by a dead process)."""

    def __init__(self, free: bool) -> None:
        self.free = free
        self.calls: List[Any] = []

    def acquire(self, block: bool = True, timeout: Optional[float] = None) -> bool:
        self.calls.append(("acquire", block, timeout))
        return self.free

    def release(self) -> None:
        self.calls.append("release")


PROBE = _processes.LOCK_PROBE_TIMEOUT


def pebble_task(
    id: int, worker: int, future: Future[bytes], timeout: Optional[float] = None
) -> SimpleNamespace:
    """A pebble 5 task that process C{worker} took a second ago."""
    return SimpleNamespace(
        id=id, worker_id=worker, future=future, timeout=timeout,
        timestamp=time.time() - 1.0,
    )  # fmt: skip


def pebble_inside(
    pool: FakeProcessPool,
    tasks: Tuple[Any, ...] = (),
    workers: Tuple[int, ...] = (),
    mutex: Optional[FakeMutex] = None,
) -> None:
    """Give a fake pool the insides of a pebble 5 pool that its checks read:
    its tasks, its processes' pids and its channel lock."""
    pool._pool_manager = SimpleNamespace(  # type: ignore[attr-defined]
        task_manager=SimpleNamespace(tasks={task.id: task for task in tasks}),
        worker_manager=SimpleNamespace(
            workers=dict.fromkeys(workers),
            workers_channel=SimpleNamespace(mutex=mutex),
        ),
    )


class FakePoolProcessPool(ProcessHandlerPool):
    """A ProcessHandlerPool whose pebble pools are L{FakeProcessPool}s."""

    def __init__(self, **kwargs: Any) -> None:
        self.pools: List[FakeProcessPool] = []
        super().__init__(IncrementHandler(), 2, **kwargs)

    def _newPool(self) -> FakeProcessPool:
        pool = FakeProcessPool()
        self.pools.append(pool)
        return pool


class ProcessHandlerPoolTests(SynchronousTestCase):
    """ProcessHandlerPool over fake pebble pools whose futures the test
    finishes, on a clock (no reactor, no processes)."""

    def setUp(self) -> None:
        self.clock = ThreadedReactor()
        self.events: List[Dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        self.addCleanup(self.clock.settle)

    def pool(
        self, handlerTimeout: Optional[float] = 2.0, start: bool = True
    ) -> FakePoolProcessPool:
        pool = FakePoolProcessPool(
            reactor=self.clock, handlerTimeout=handlerTimeout, backlog=4
        )
        if start:
            pool.startService()
        return pool

    def warnings(self) -> List[str]:
        return [
            formatEvent(e) for e in self.events if e.get("log_level") == LogLevel.warn
        ]

    def failure(self, d: Deferred[bytes]) -> Failure:
        failures: List[Failure] = []
        d.addErrback(failures.append)
        [failure] = failures
        return failure

    def test_a_new_pool(self) -> None:
        pool = self.pool(start=False)
        self.assertEqual((pool.executor, pool.replaced, pool._jobs), (None, 0, set()))
        self.assertEqual(repr(pool), "ProcessHandlerPool(IncrementHandler(), 2)")
        self.assertEqual((pool.size, pool.backlog, pool.handlerTimeout), (2, 4, 2.0))

    def test_start_makes_the_pool_and_shortens_the_switch_interval(self) -> None:
        intervals: List[float] = []
        fake_sys = SimpleNamespace(
            getswitchinterval=lambda: 0.005, setswitchinterval=intervals.append
        )
        self.patch(_processes, "sys", fake_sys)
        pool = self.pool()
        self.assertTrue(pool.running)
        self.assertEqual(pool.pools, [pool.executor])
        self.assertEqual(intervals, [0.001])
        fake_sys.getswitchinterval = lambda: 0.0005
        self.pool()
        self.assertEqual(intervals, [0.001, 0.0005])  # never lengthened

    def test_a_job_runs_in_the_pool(self) -> None:
        pool = self.pool()
        d = pool.run(b"abc")
        [(function, args, timeout, future)] = pool.executor.scheduled
        self.assertIs(function, poolprocess.transform)
        self.assertEqual((args, timeout), ((pool.handler, b"abc"), 2.0))
        [job] = pool._jobs
        self.assertEqual((job.executor, job.future), (pool.executor, future))
        self.assertEqual((pool.inFlight, pool.completed), (1, 0))
        future.set_result(function(*args))
        self.assertEqual(self.successResultOf(d), b"bcd")
        self.assertEqual((pool.inFlight, pool.completed, pool._jobs), (0, 1, set()))
        self.assertEqual((pool.timeouts, pool.lost, pool.replaced), (0, 0, 0))
        self.assertEqual(self.warnings(), [])

    def test_no_timeout(self) -> None:
        pool = self.pool(handlerTimeout=None)
        pool.run(b"abc")
        self.assertIsNone(pool.executor.scheduled[0][2])

    def test_a_handler_error_fails_its_job(self) -> None:
        pool = self.pool()
        d = pool.run(b"abc")
        pool.executor.future().set_exception(ValueError("bad payload"))
        failure = self.failure(d)
        failure.trap(ValueError)
        self.assertEqual(failure.getErrorMessage(), "bad payload")
        self.assertEqual((pool.lost, pool.timeouts, pool.completed), (0, 0, 1))
        self.assertEqual(self.warnings(), [])

    def test_a_base_exception_fails_its_job(self) -> None:
        pool = self.pool()
        d = pool.run(b"abc")
        pool.executor.future().set_exception(KeyboardInterrupt())
        self.failure(d).trap(KeyboardInterrupt)

    def test_a_job_past_its_timeout_fails(self) -> None:
        pool = self.pool()
        d = pool.run(b"abc")
        pool.executor.future().set_exception(FuturesTimeoutError())
        failure = self.failure(d)
        failure.trap(HandlerTimeoutError)
        message = "the handler ran longer than 2.0s; its process was killed"
        self.assertEqual(failure.getErrorMessage(), message)
        self.assertEqual((pool.timeouts, pool.lost, pool.completed), (1, 0, 1))
        self.assertEqual(self.warnings(), [f"{pool!r}: {message}"])
        self.assertEqual((pool.replaced, len(pool.pools)), (0, 1))

    def test_a_job_whose_process_died_fails(self) -> None:
        pool = self.pool()
        d = pool.run(b"abc")
        died = pebble.ProcessExpired("Abnormal termination", code=-9, pid=5)
        pool.executor.future().set_exception(died)
        failure = self.failure(d)
        failure.trap(PoolProcessLostError)
        message = (
            "the process running the handler died (Abnormal termination, exit code -9)"
        )
        self.assertEqual(failure.getErrorMessage(), message)
        self.assertEqual((pool.lost, pool.timeouts, pool.completed), (1, 0, 1))
        self.assertEqual(self.warnings(), [f"{pool!r}: {message}"])
        self.assertEqual((pool.replaced, pool.inFlight), (0, 0))

    def test_a_lost_job_on_a_pool_that_broke_replaces_it(self) -> None:
        pool = self.pool()
        d = pool.run(b"abc")
        old = pool.executor
        old.active = False
        old.future().set_exception(pebble.ProcessExpired("gone", code=1))
        self.failure(d).trap(PoolProcessLostError)
        self.assertEqual(pool.replaced, 1)
        self.assertEqual(pool.pools, [old, pool.executor])
        self.assertEqual(
            self.warnings(),
            [
                f"{pool!r}: the process running the handler died (gone, exit code 1)",
                f"{pool!r}: replacing the process pool, because its processes "
                "could not be replaced",
            ],
        )
        self.clock.settle()
        self.assertEqual(old.calls, ["stop", "join"])
        self.assertEqual(old.threads, ["incproto pool stop"])

    def test_a_timeout_on_a_pool_that_broke_replaces_it(self) -> None:
        pool = self.pool()
        d = pool.run(b"abc")
        pool.executor.active = False
        pool.executor.future().set_exception(FuturesTimeoutError())
        self.failure(d).trap(HandlerTimeoutError)
        self.assertEqual((pool.replaced, len(pool.pools)), (1, 2))

    def test_a_lost_job_after_a_replacement_replaces_nothing(self) -> None:
        pool = self.pool()
        d = pool.run(b"abc")
        old = pool.executor
        old.active = False
        pool.run(b"def")  # finds it broken: replaced
        self.assertEqual((pool.replaced, len(pool.pools)), (1, 2))
        old.future().set_exception(pebble.ProcessExpired("gone", code=1))
        self.failure(d).trap(PoolProcessLostError)
        self.assertEqual((pool.replaced, len(pool.pools)), (1, 2))

    def test_a_lost_job_after_stop_replaces_nothing(self) -> None:
        pool = self.pool()
        d = pool.run(b"abc")
        old = pool.executor
        pool.running = False
        old.active = False
        old.future().set_exception(pebble.ProcessExpired("gone", code=1))
        self.failure(d).trap(PoolProcessLostError)
        self.assertEqual((pool.replaced, pool.executor), (0, old))

    def test_a_broken_pool_is_replaced_at_the_next_job(self) -> None:
        pool = self.pool()
        old = pool.executor
        old.active = False
        d = pool.run(b"abc")
        new = pool.executor
        self.assertEqual((pool.pools, old.scheduled), ([old, new], []))
        self.assertEqual(pool.replaced, 1)
        self.assertEqual(
            self.warnings(),
            [f"{pool!r}: replacing the process pool, because it broke"],
        )
        [job] = pool._jobs
        self.assertEqual((job.executor, job.future), (new, new.future()))
        new.future().set_result(b"bcd")
        self.assertEqual(self.successResultOf(d), b"bcd")
        self.clock.settle()
        self.assertEqual(old.calls, ["stop", "join"])

    def test_each_replacement_counts(self) -> None:
        pool = self.pool()
        for _ in range(2):
            pool.executor.active = False
            pool.run(b"abc")
        self.assertEqual((pool.replaced, len(pool.pools)), (2, 3))

    def test_a_pool_that_breaks_as_a_job_is_scheduled_is_replaced(self) -> None:
        pool = self.pool()
        old = pool.executor
        old.refuse = 1
        d = pool.run(b"abc")
        new = pool.executor
        self.assertEqual(pool.pools, [old, new])
        self.assertEqual((pool.replaced, old.scheduled), (1, []))
        [(function, args, timeout, future)] = new.scheduled
        self.assertIs(function, poolprocess.transform)
        self.assertEqual((args, timeout), ((pool.handler, b"abc"), 2.0))
        [job] = pool._jobs
        self.assertEqual((job.executor, job.future), (new, future))
        self.assertEqual(
            self.warnings(),
            [f"{pool!r}: replacing the process pool, because it broke"],
        )
        future.set_result(b"bcd")
        self.assertEqual(self.successResultOf(d), b"bcd")

    def test_a_job_the_broken_pool_dropped_runs_once_more(self) -> None:
        pool = self.pool()
        d = pool.run(b"abc")
        old = pool.executor
        old.active = False
        old.future().set_exception(BrokenProcessPool("the pool broke"))
        new = pool.executor
        self.assertEqual((pool.pools, pool.replaced), ([old, new], 1))
        self.assertEqual(
            self.warnings(),
            [f"{pool!r}: replacing the process pool, because it broke "
             "(the pool broke)"],
        )  # fmt: skip
        [(_function, args, timeout, future)] = new.scheduled
        self.assertEqual((args, timeout), ((pool.handler, b"abc"), 2.0))
        [job] = pool._jobs
        self.assertTrue(job.retried)
        self.assertEqual((job.executor, job.future), (new, future))
        self.assertEqual((pool.inFlight, pool.completed), (1, 0))
        future.set_result(b"bcd")
        self.assertEqual(self.successResultOf(d), b"bcd")
        self.assertEqual((pool.inFlight, pool.completed, pool.lost), (0, 1, 0))

    def test_a_dropped_job_on_a_live_pool_runs_again_there(self) -> None:
        pool = self.pool()
        d = pool.run(b"abc")
        old = pool.executor
        old.future().cancel()  # pebble cancels what a pool drops
        self.assertEqual((pool.pools, pool.replaced), ([old], 0))
        self.assertEqual(len(old.scheduled), 2)
        old.future(1).set_result(b"bcd")
        self.assertEqual(self.successResultOf(d), b"bcd")
        self.assertEqual(self.warnings(), [])

    def test_a_job_dropped_twice_is_lost(self) -> None:
        pool = self.pool()
        d = pool.run(b"abc")
        pool.executor.future().set_exception(BrokenProcessPool("broke"))
        pool.executor.future(1).set_exception(BrokenProcessPool())
        failure = self.failure(d)
        failure.trap(PoolProcessLostError)
        message = "the process pool broke: BrokenProcessPool"
        self.assertEqual(failure.getErrorMessage(), message)
        self.assertEqual((pool.lost, pool.inFlight, pool.completed), (1, 0, 1))
        self.assertEqual(self.warnings(), [f"{pool!r}: {message}"])

    def test_a_cancelled_job_once_stopped_is_lost(self) -> None:
        pool = self.pool()
        d = pool.run(b"abc")
        old, pool.executor = pool.executor, None  # as stopped (_stopPool)
        old.future().cancel()
        failure = self.failure(d)
        failure.trap(PoolProcessLostError)
        self.assertEqual(
            failure.getErrorMessage(), "the process pool broke: CancelledError"
        )
        self.assertEqual(len(old.scheduled), 1)

    def test_waiting_jobs_go_in_as_others_finish(self) -> None:
        pool = self.pool()
        results = [pool.run(bytes([n])) for n in range(5)]
        self.assertEqual((pool.inFlight, pool.waiting), (4, 1))
        pool.executor.future().set_exception(BrokenProcessPool())  # retried
        self.assertEqual((pool.inFlight, pool.waiting), (4, 1))
        pool.executor.future(1).set_result(b"x")
        self.assertEqual((pool.inFlight, pool.waiting), (4, 0))
        self.assertEqual(self.successResultOf(results[1]), b"x")

    def test_stop_before_start(self) -> None:
        pool = self.pool(start=False)
        self.assertIsNone(self.successResultOf(pool.stopService()))
        self.assertEqual(self.clock.queued, [])

    def test_stop_stops_the_processes_in_a_thread(self) -> None:
        pool = self.pool()
        executor = pool.executor
        d = pool.stopService()
        self.assertNoResult(d)
        self.assertIsNone(pool.executor)
        self.clock.settle()
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(executor.calls, ["stop", "join"])
        self.assertEqual(executor.threads, ["incproto pool stop"])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.warnings(), [])

    def test_the_stop_helper_is_a_daemon(self) -> None:
        pool = self.pool()
        daemons: List[bool] = []
        pool.executor.join = lambda: daemons.append(  # type: ignore[method-assign]
            threading.current_thread().daemon
        )
        pool.stopService()
        self.clock.settle()
        self.assertEqual(daemons, [True])

    def test_stop_terminates_the_processes(self) -> None:
        pool = self.pool()
        process = FakeProcess()
        pool.executor._pool_manager = SimpleNamespace(  # type: ignore[attr-defined]
            worker_manager=SimpleNamespace(workers={1: process})
        )
        pool.stopService()
        self.clock.settle()
        self.assertTrue(process.terminated)

    def test_stop_fails_the_jobs_its_pool_never_answered(self) -> None:
        pool = self.pool(start=False)
        pool.drainTimeout = 1.0
        pool.startService()
        d = pool.run(b"abc")
        answered = pool.run(b"def")
        executor = pool.executor
        executor.future(1).set_result(b"efg")
        stopped = pool.stopService()
        self.clock.advance(1.0)  # drain timeout: stop anyway
        self.assertNoResult(d)
        self.clock.settle()
        self.assertIsNone(self.successResultOf(stopped))
        failure = self.failure(d)
        failure.trap(PoolProcessLostError)
        self.assertEqual(
            failure.getErrorMessage(),
            "the process pool broke: its pool was stopped",
        )
        self.assertEqual(self.successResultOf(answered), b"efg")
        self.assertEqual((pool.inFlight, pool.lost, pool._jobs), (0, 1, set()))
        self.assertEqual(len(executor.scheduled), 2)  # not retried once stopped

    def test_stopping_an_old_pool_fails_only_its_jobs(self) -> None:
        pool = self.pool()
        old_job = pool.run(b"abc")
        old = pool.executor
        old.active = False
        new_job = pool.run(b"def")  # replaced; the old stops in a thread
        new = pool.executor
        self.clock.settle()
        self.assertEqual(old.calls, ["stop", "join"])
        self.assertNoResult(new_job)
        self.assertFalse(new.future().done())
        # the old pool's job ran once more, in the new pool
        self.assertEqual(len(new.scheduled), 2)
        new.future(1).set_result(b"bcd")
        new.future().set_result(b"efg")
        self.assertEqual(self.successResultOf(old_job), b"bcd")
        self.assertEqual(self.successResultOf(new_job), b"efg")

    def test_a_pool_that_does_not_stop_in_time_is_left(self) -> None:
        pool = self.pool()
        executor = pool.executor
        executor.release = threading.Event()
        self.addCleanup(executor.release.set)
        d = pool.stopService()
        self.clock.advance(_processes.STOP_GRACE - 0.001)
        self.assertNoResult(d)
        self.clock.advance(0.001)
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(
            self.warnings(),
            [f"{pool!r}: its processes did not stop within 10.0s"],
        )
        executor.release.set()
        self.clock.settle()  # it stops at last: nothing more happens
        self.assertEqual(executor.calls, ["stop", "join"])
        self.assertEqual(len(self.warnings()), 1)

    def test_a_job_stranded_on_a_dead_process_fails_and_replaces_the_pool(
        self,
    ) -> None:
        pool = self.pool()
        d = pool.run(b"abc")
        old = pool.executor
        stranded = pebble_task(7, 42, old.future())
        pebble_inside(old, tasks=(stranded,), workers=(43,))
        self.clock.advance(_processes.CHECK_INTERVAL)
        self.assertEqual(pool.replaced, 0)  # seen once: maybe a race
        self.clock.advance(_processes.CHECK_INTERVAL)
        self.assertEqual((pool.replaced, pool.pools), (1, [old, pool.executor]))
        self.assertEqual(
            self.warnings(),
            [f"{pool!r}: replacing the process pool, because pebble lost 1 job "
             "of a process that died"],
        )  # fmt: skip
        self.clock.settle()
        failure = self.failure(d)
        failure.trap(PoolProcessLostError)  # its handler ran: not run again
        message = "the process pool broke: its pool was stopped"
        self.assertEqual(failure.getErrorMessage(), message)
        self.assertEqual((pool.executor.scheduled, pool.lost), ([], 1))

    def test_a_job_seen_once_on_a_dead_process_is_a_race(self) -> None:
        pool = self.pool()
        pool.run(b"abc")
        old = pool.executor
        task = pebble_task(7, 42, old.future())
        pebble_inside(old, tasks=(task,), workers=(43,))
        self.clock.advance(_processes.CHECK_INTERVAL)
        old._pool_manager.task_manager.tasks.clear()  # pebble caught up
        self.clock.advance(_processes.CHECK_INTERVAL)
        task.worker_id = 43  # running on a live process
        old._pool_manager.task_manager.tasks[7] = task
        self.clock.advance(2 * _processes.CHECK_INTERVAL)
        self.assertEqual((pool.replaced, self.warnings()), (0, []))

    def test_a_job_that_waits_for_a_held_lock_replaces_the_pool(self) -> None:
        pool = self.pool()
        d = pool.run(b"abc")
        old = pool.executor
        mutex = FakeMutex(free=False)
        pebble_inside(old, mutex=mutex)
        self.clock.advance(_processes.CHECK_INTERVAL)
        self.clock.settle()  # the probe
        self.assertEqual(mutex.calls, [("acquire", True, PROBE)])
        self.assertEqual((pool.replaced, pool.pools), (1, [old, pool.executor]))
        self.assertEqual(
            self.warnings(),
            [f"{pool!r}: replacing the process pool, because a process died "
             "holding its channel lock (held for over 5s)"],
        )  # fmt: skip
        self.clock.settle()  # the old pool's stop: its job runs once more
        [(_function, args, _timeout, future)] = pool.executor.scheduled
        self.assertEqual(args, (pool.handler, b"abc"))
        future.set_result(b"bcd")
        self.assertEqual(self.successResultOf(d), b"bcd")

    def test_a_job_past_its_timeout_is_not_stranded(self) -> None:
        """pebble lets go of the process of a job past its timeout before it
        stops it (up to 3 s), then fails the job itself."""
        pool = self.pool()
        pool.run(b"abc")
        old = pool.executor
        late = pebble_task(7, 42, old.future(), timeout=0.5)
        pebble_inside(old, tasks=(late,), workers=(43,))
        self.clock.advance(3 * _processes.CHECK_INTERVAL)
        self.assertEqual((pool.replaced, self.warnings()), (0, []))

    def test_a_started_job_of_a_replaced_pool_fails_and_a_waiting_one_reruns(
        self,
    ) -> None:
        pool = self.pool()
        started, waiting = pool.run(b"abc"), pool.run(b"def")
        old = pool.executor
        old.future(0).set_running_or_notify_cancel()
        pebble_inside(old, mutex=FakeMutex(free=False))
        self.clock.advance(_processes.CHECK_INTERVAL)
        self.clock.settle()  # the probe: replaced
        self.clock.settle()  # the old pool stopped
        self.failure(started).trap(PoolProcessLostError)  # it may have run
        [(_function, args, _timeout, future)] = pool.executor.scheduled
        self.assertEqual(args, (pool.handler, b"def"))
        future.set_result(b"efg")
        self.assertEqual(self.successResultOf(waiting), b"efg")

    def test_a_wedged_pool_is_replaced_while_it_drains(self) -> None:
        pool = self.pool()
        d = pool.run(b"abc")
        pebble_inside(pool.executor, mutex=FakeMutex(free=False))
        stopped = pool.stopService()
        self.assertNoResult(stopped)
        self.clock.advance(_processes.CHECK_INTERVAL)
        self.clock.settle()
        self.clock.settle()
        self.assertEqual(pool.replaced, 1)
        [(_function, _args, _timeout, future)] = pool.executor.scheduled
        future.set_result(b"bcd")  # answered in the new pool: the drain ends
        self.assertEqual(self.successResultOf(d), b"bcd")
        self.clock.settle()
        self.assertIsNone(self.successResultOf(stopped))

    def test_a_replacement_that_cannot_start_keeps_the_checks(self) -> None:
        pool = self.pool()
        pool.run(b"abc")
        old = pool.executor
        pebble_inside(old, mutex=FakeMutex(free=False))
        starts: List[str] = []

        def cannot_start() -> FakeProcessPool:
            starts.append("start")
            raise RuntimeError("the process pool did not start")

        pool._newPool = cannot_start  # type: ignore[method-assign]
        for _ in range(2):
            self.clock.advance(_processes.CHECK_INTERVAL)
            self.clock.settle()
        self.assertEqual((starts, pool.replaced), (["start"] * 2, 0))
        self.assertIs(pool.executor, old)
        self.flushLoggedErrors(RuntimeError)

    def test_a_free_lock_replaces_nothing(self) -> None:
        pool = self.pool()
        pool.run(b"abc")
        mutex = FakeMutex(free=True)
        pebble_inside(pool.executor, mutex=mutex)
        for _ in range(2):
            self.clock.advance(_processes.CHECK_INTERVAL)
            self.clock.settle()
        self.assertEqual(mutex.calls, [("acquire", True, PROBE), "release"] * 2)
        self.assertEqual((pool.replaced, self.warnings()), (0, []))

    def test_a_lock_gone_with_its_pool_replaces_nothing(self) -> None:
        pool = self.pool()
        pool.run(b"abc")
        gone = SimpleNamespace(acquire=mock.Mock(side_effect=AttributeError("None")))
        pebble_inside(pool.executor, mutex=gone)  # type: ignore[arg-type]
        self.clock.advance(_processes.CHECK_INTERVAL)
        self.clock.settle()
        self.assertEqual((gone.acquire.call_count, pool.replaced), (1, 0))

    def test_a_running_or_fresh_job_probes_nothing(self) -> None:
        pool = self.pool()
        mutex = FakeMutex(free=False)
        pebble_inside(pool.executor, mutex=mutex)
        pool.run(b"abc")
        pool.executor.future().set_running_or_notify_cancel()  # taken
        self.clock.advance(0.5)
        pool.run(b"def")  # waits, for half a second at the next check
        self.clock.advance(0.5)
        self.clock.settle()
        self.assertEqual((mutex.calls, pool.replaced), ([], 0))

    def test_stop_ends_the_checks(self) -> None:
        pool = self.pool()
        pool.stopService()
        self.clock.settle()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stop_after_a_replacement_stops_only_the_new_pool(self) -> None:
        pool = self.pool()
        old = pool.executor
        old.active = False
        pool.run(b"abc").addErrback(lambda f: None)
        self.clock.settle()
        new = pool.executor
        pool.stopService()
        self.clock.advance(pool.drainTimeout)
        self.clock.settle()
        self.assertEqual((old.calls, new.calls), (["stop", "join"], ["stop", "join"]))


class FakeProcess:
    def __init__(self, error: Optional[Exception] = None) -> None:
        self.error = error
        self.terminated = False

    def terminate(self) -> None:
        self.terminated = True
        if self.error is not None:
            raise self.error


class FakeStderr:
    def __init__(self, fd: Any) -> None:
        self.fd = fd

    def fileno(self) -> int:
        if isinstance(self.fd, Exception):
            raise self.fd
        return int(self.fd)


class ProcessHelperTests(SynchronousTestCase):
    """The process pool's helpers, called directly."""

    def test_transform_runs_the_handler(self) -> None:
        self.assertEqual(poolprocess.transform(IncrementHandler(), b"abc"), b"bcd")

    def test_transform_checks_the_reply(self) -> None:
        """A pool process sends back a wrong reply as a named error (issue 22)."""
        error = self.assertRaises(
            HandlerReplyError, poolprocess.transform, TextHandler(), b"abc"
        )
        self.assertEqual(
            str(error),
            "handler tests.support.pools.TextHandler returned str, not bytes",
        )

    def started(
        self,
        parent: int,
        handler: Any = None,
        linux: bool = True,
        grandparent: Optional[int] = None,
    ) -> List[Tuple[str, Any]]:
        calls: List[Tuple[str, Any]] = []
        self.patch(poolprocess, "os", SimpleNamespace(
            nice=lambda n: calls.append(("nice", n)),
            getppid=lambda: 42,
            _exit=lambda code: calls.append(("exit", code)),
        ))  # fmt: skip

        def die_with_parent(signum: int) -> bool:
            calls.append(("die", signum))
            return linux

        self.patch(poolprocess, "die_with_parent", die_with_parent)
        # The real one would find this process's own forkserver pipe, if
        # a test before started a pool (tests/e2e/test_faults.py checks it).
        self.patch(poolprocess, "_close_forkserver_alive_pipe", lambda: None)
        self.patch(poolprocess, "_parent_of", {42: grandparent}.get)
        self.patch(poolprocess, "pickle", SimpleNamespace(
            loads=lambda b: calls.append(("loads", b)),
        ))  # fmt: skip
        poolprocess.started(parent, handler)
        return calls

    def test_a_pool_process_lowers_its_priority_and_dies_with_its_parent(
        self,
    ) -> None:
        self.assertEqual(self.started(42), [("nice", 10), ("die", signal.SIGKILL)])

    def test_a_pool_process_whose_parent_went_exits(self) -> None:
        self.assertEqual(
            self.started(41), [("nice", 10), ("die", signal.SIGKILL), ("exit", 1)]
        )

    def test_a_forked_pool_process_of_a_live_server_carries_on(self) -> None:
        """Its parent is the forkserver (42), the server's child."""
        self.assertEqual(
            self.started(41, grandparent=41), [("nice", 10), ("die", signal.SIGKILL)]
        )

    def test_a_forked_pool_process_whose_forkserver_went_exits(self) -> None:
        self.assertEqual(
            self.started(41, grandparent=1),
            [("nice", 10), ("die", signal.SIGKILL), ("exit", 1)],
        )

    def test_a_pool_process_checks_its_parent_only_on_linux(self) -> None:
        """Off Linux nothing would kill it with its parent, and there is no
        /proc to find the server above a forkserver."""
        self.assertEqual(
            self.started(41, linux=False), [("nice", 10), ("die", signal.SIGKILL)]
        )

    def test_a_pool_process_imports_its_handler_as_it_starts(self) -> None:
        """So that a new process is ready for its first job (issue 21)."""
        self.assertEqual(
            self.started(42, b"pickled"),
            [("nice", 10), ("die", signal.SIGKILL), ("loads", b"pickled")],
        )

    def test_parent_of(self) -> None:
        self.assertEqual(poolprocess._parent_of(os.getpid()), os.getppid())
        self.assertIsNone(poolprocess._parent_of(-1))

    def test_a_forked_pool_process_closes_the_forkservers_alive_pipe(self) -> None:
        """Else the forkserver would outlive the server while the process
        lives, and the process, which dies with its forkserver, with it."""
        read, write = os.pipe()
        self.addCleanup(os.close, read)
        forkserver = SimpleNamespace(_forkserver_alive_fd=write)
        fake = ModuleType("multiprocessing.forkserver")
        fake._forkserver = forkserver  # type: ignore[attr-defined]
        with mock.patch.dict(sys.modules, {"multiprocessing.forkserver": fake}):
            poolprocess._close_forkserver_alive_pipe()
            poolprocess._close_forkserver_alive_pipe()  # once only
        self.assertIsNone(forkserver._forkserver_alive_fd)
        self.assertEqual(os.read(read, 1), b"")  # end of file: closed

    def test_a_spawned_pool_process_has_no_alive_pipe_to_close(self) -> None:
        fake = ModuleType("multiprocessing.forkserver")
        fake._forkserver = SimpleNamespace(_forkserver_alive_fd=None)  # type: ignore[attr-defined]
        with mock.patch.dict(sys.modules, {"multiprocessing.forkserver": fake}):
            poolprocess._close_forkserver_alive_pipe()
        with mock.patch.dict(sys.modules, {"multiprocessing.forkserver": None}):
            poolprocess._close_forkserver_alive_pipe()

    def test_terminate_processes(self) -> None:
        joins: List[Any] = []
        first, second = FakeProcess(OSError("gone")), FakeProcess()
        pool = SimpleNamespace(
            _pool_manager_loop=SimpleNamespace(join=joins.append),
            _pool_manager=SimpleNamespace(
                worker_manager=SimpleNamespace(workers={1: first, 2: second})
            ),
        )
        _processes._terminate_processes(pool)
        self.assertEqual(joins, [10.0])
        self.assertEqual((first.terminated, second.terminated), (True, True))

    def test_terminate_processes_of_a_pool_without_them(self) -> None:
        _processes._terminate_processes(object())
        _processes._terminate_processes(SimpleNamespace(_pool_manager=object()))
        _processes._terminate_processes(
            SimpleNamespace(_pool_manager=SimpleNamespace(worker_manager=object()))
        )

    def stderr_within(self, fd: Any) -> Tuple[Any, Any]:
        stderr = FakeStderr(fd)
        self.patch(sys, "stderr", stderr)
        with _processes._real_stderr():
            inside = sys.stderr
        self.assertIs(sys.stderr, stderr)
        return stderr, inside

    def test_real_stderr_replaces_one_without_a_descriptor(self) -> None:
        self.patch(sys, "__stderr__", FakeStderr(2))
        self.assertIs(self.stderr_within(-1)[1], sys.__stderr__)
        self.assertIs(self.stderr_within(ValueError("closed"))[1], sys.__stderr__)

    def test_real_stderr_keeps_one_with_a_descriptor(self) -> None:
        for fd in (0, 2):
            stderr, inside = self.stderr_within(fd)
            self.assertIs(inside, stderr)

    def test_real_stderr_without_a_real_one(self) -> None:
        self.patch(sys, "__stderr__", None)
        stderr, inside = self.stderr_within(-1)
        self.assertIs(inside, stderr)

    def test_real_stderr_is_put_back_after_an_error(self) -> None:
        stderr = FakeStderr(-1)
        self.patch(sys, "stderr", stderr)
        with self.assertRaises(ZeroDivisionError):
            with _processes._real_stderr():
                raise ZeroDivisionError
        self.assertIs(sys.stderr, stderr)

    def new_pool(self, active: bool) -> Tuple[List[Tuple[Any, ...]], Any]:
        made: List[Tuple[Any, ...]] = []

        class ProcessPool:
            def __init__(self, size: int, **kwargs: Any) -> None:
                made.append((size, kwargs, sys.stderr))
                self.active = active

        self.patch(sys, "stderr", FakeStderr(-1))
        self.patch(sys, "__stderr__", FakeStderr(2))
        fake = ModuleType("pebble")
        fake.ProcessPool = ProcessPool  # type: ignore[attr-defined]
        pool = ProcessHandlerPool(IncrementHandler(), 3, reactor=Clock())
        with mock.patch.dict(sys.modules, {"pebble": fake}):
            try:
                return made, pool._newPool()
            except RuntimeError as e:
                return made, e

    def test_a_new_pool_starts_its_processes(self) -> None:
        made, pebble_pool = self.new_pool(active=True)
        [(size, kwargs, stderr)] = made
        self.assertEqual(size, 3)
        context = kwargs.pop("context")
        self.assertEqual(kwargs, {
            "max_tasks": 0,
            "initializer": poolprocess.started,
            "initargs": (os.getpid(), pickle.dumps(IncrementHandler())),
        })  # fmt: skip
        self.assertEqual(context.get_start_method(), "forkserver")
        self.assertIs(stderr, sys.__stderr__)
        self.assertTrue(pebble_pool.active)

    def test_a_new_pool_that_does_not_start(self) -> None:
        _, error = self.new_pool(active=False)
        self.assertIsInstance(error, RuntimeError)
        self.assertEqual(str(error), "the process pool did not start")


class SpawningTests(SynchronousTestCase):
    """The pool processes' light start (issue 21)."""

    def test_a_handler_from_a_module_is_forked_by_a_forkserver(self) -> None:
        self.patch(forkserver._forkserver, "_preload_modules", [])
        context = spawning.pool_context(IncrementHandler())
        self.assertIsInstance(context, spawning._ForkServerContext)
        self.assertIs(context.Process, spawning._ForkServerProcess)
        self.assertEqual(context.get_start_method(), "forkserver")
        self.assertEqual(forkserver._forkserver._preload_modules, [
            "incproto._kernel.poolprocess",
            "incproto._kernel.spawning",
            "pebble",
            "incproto.handlers",
        ])  # fmt: skip

    def test_the_forkserver_imports_a_function_handlers_module(self) -> None:
        self.patch(forkserver._forkserver, "_preload_modules", [])
        spawning.pool_context(FunctionHandler(upper))
        self.assertEqual(
            forkserver._forkserver._preload_modules[-2:],
            ["incproto.handlers", __name__],
        )

    def test_a_handler_from_main_keeps_it(self) -> None:
        kind = type("Main", (), {"__module__": "__main__"})
        self.assertIs(
            spawning.pool_context(kind()), multiprocessing.get_context("spawn")
        )
        function = SimpleNamespace(function=SimpleNamespace(__module__="__main__"))
        self.assertIs(
            spawning.pool_context(function), multiprocessing.get_context("spawn")
        )

    def test_the_main_script_is_left_out_only_while_launching(self) -> None:
        self.patch(
            spawning,
            "_real_preparation_data",
            lambda name: {"name": name, "init_main_from_path": "/bin/twistd"},
        )
        self.assertIn("init_main_from_path", spawning._preparation_data("p"))
        spawning._launching.withoutMain = True
        self.addCleanup(setattr, spawning._launching, "withoutMain", False)
        self.assertEqual(spawning._preparation_data("p"), {"name": "p"})


def upper(payload: bytes) -> bytes:
    """A function handler defined here."""
    return payload.upper()


def fake_pebble() -> Tuple[ModuleType, List[Dict[str, Any]]]:
    """A C{pebble} module whose C{ProcessPool} only records its keyword
    arguments, in the list returned with it."""
    made: List[Dict[str, Any]] = []

    class ProcessPool:
        def __init__(self, size: int, **kwargs: Any) -> None:
            made.append(kwargs)
            self.active = True

    fake = ModuleType("pebble")
    fake.ProcessPool = ProcessPool  # type: ignore[attr-defined]
    return fake, made


class RecyclingTests(SynchronousTestCase):
    def test_jobs_per_process_reach_pebble(self) -> None:
        fake, made = fake_pebble()
        pool = ProcessHandlerPool(IncrementHandler(), 1, maxJobsPerProcess=50)
        with mock.patch.dict(sys.modules, {"pebble": fake}):
            pool._newPool()
        self.assertEqual(made[0]["max_tasks"], 50)

    def test_jobs_per_process_cannot_be_negative(self) -> None:
        error = self.assertRaises(
            ValueError, ProcessHandlerPool, IncrementHandler(), 1, maxJobsPerProcess=-1
        )
        self.assertIn("not -1", str(error))

    def test_an_unpicklable_handler_is_not_warmed(self) -> None:
        fake, made = fake_pebble()
        pool = ProcessHandlerPool(FunctionHandler(lambda b: b), 1)
        with mock.patch.dict(sys.modules, {"pebble": fake}):
            pool._newPool()
        self.assertEqual(made[0]["initargs"], (os.getpid(), None))
