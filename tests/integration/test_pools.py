"""Real thread and process pools (pytest-twisted): replies are
byte-identical to inline for any input and chunking, stopping leaves no
thread or process behind, and faults (a process killed mid-job or idle, a
handler that never returns) cost only the jobs they hit."""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import threading
from typing import Any, Generator, List, Set

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred

from incproto import IncrementFactory, IncrementProtocol
from incproto._kernel.spawning import pool_context
from incproto.handlers import HashingHandler, PurePythonHandler
from incproto.pools import (
    HandlerPool,
    HandlerTimeoutError,
    PoolProcessLostError,
    ProcessHandlerPool,
    ThreadHandlerPool,
    _processes,
)
from tests.support.fakes import HalfCloseableTransport
from tests.support.faulty import RELEASE, Faulty, die_holding
from tests.support.formats import reference
from tests.support.helpers import TIMEOUT, polled, within


@pytest.fixture(scope="module", params=["threads", "processes"])
def pool(request: pytest.FixtureRequest) -> Generator[HandlerPool, None, None]:
    kind = ThreadHandlerPool if request.param == "threads" else ProcessHandlerPool
    handler = (
        HashingHandler(rounds=2) if kind is ThreadHandlerPool else PurePythonHandler()
    )
    pool = kind(handler, 2, reactor=reactor)
    pool.startService()
    yield pool
    pytest_twisted.blockon(pool.stopService())


def through_pool(pool: HandlerPool, chunks: List[bytes]) -> Deferred[bytes]:
    """Feed C{chunks} to a protocol whose handler runs in C{pool}; fire
    with everything written once the client's half-close completes."""
    protocol = IncrementFactory(pool=pool).buildProtocol(None)
    assert isinstance(protocol, IncrementProtocol)
    transport = HalfCloseableTransport()
    done: Deferred[bytes] = Deferred()
    transport.loseConnection = lambda: done.callback(transport.value())  # type: ignore[method-assign]
    protocol.makeConnection(transport)
    for chunk in chunks:
        protocol.dataReceived(chunk)
    protocol.readConnectionLost()
    return within(done)


def random_chunked(rng: random.Random) -> List[bytes]:
    """A random stream, biased towards the delimiters, cut at random."""
    stream = bytes(rng.choice(b"^$^$ab\x00\xff" + bytes([rng.randrange(256)]))
                   for _ in range(rng.randrange(2000)))  # fmt: skip
    cuts = sorted(rng.randrange(len(stream) + 1) for _ in range(rng.randrange(30)))
    bounds = [0, *cuts, len(stream)]
    return [stream[a:b] for a, b in zip(bounds, bounds[1:])]


@pytest_twisted.inlineCallbacks
def test_pool_replies_equal_inline(
    pool: HandlerPool,
) -> Generator[Deferred[Any], Any, None]:
    """
    Property: for random streams and random chunkings, the pool's replies
    are byte-identical to the per-byte reference (which inline matches: see
    tests.unit.test_parser).  All cases run at once, so jobs of different
    connections finish in any order.
    """
    rng = random.Random(2026)
    cases = [random_chunked(rng) for _ in range(60)]
    replies = yield within(
        Deferred.fromCoroutine(gather([through_pool(pool, c) for c in cases]))
    )
    for chunks, reply in zip(cases, replies):
        assert reply == b"*" + reference(b"".join(chunks))


@pytest_twisted.inlineCallbacks
def test_many_connections_at_once(
    pool: HandlerPool,
) -> Generator[Deferred[Any], Any, None]:
    streams = [b"^" + bytes([65 + i]) * (3000 + i) for i in range(20)]
    results = yield within(
        Deferred.fromCoroutine(gather([through_pool(pool, [s]) for s in streams]))
    )
    assert results == [b"*" + reference(s) for s in streams]


async def gather(ds: List[Deferred[bytes]]) -> List[bytes]:
    return [await d for d in ds]


@pytest_twisted.inlineCallbacks
def test_stopping_leaves_no_thread_or_process() -> Generator[Deferred[Any], Any, None]:
    threads_before = set(threading.enumerate())
    children_before = set(multiprocessing.active_children())
    pools = [
        ThreadHandlerPool(HashingHandler(rounds=1), 3, reactor=reactor),
        ProcessHandlerPool(PurePythonHandler(), 2, reactor=reactor),
    ]
    for pool in pools:
        pool.startService()
    work = [pool.run(b"x" * 10000) for pool in pools]
    stopping = [pool.stopService() for pool in pools]
    replies = yield within(Deferred.fromCoroutine(gather(work)))
    assert replies == [b"y" * 10000] * 2
    yield within(Deferred.fromCoroutine(gather(stopping)))  # type: ignore[arg-type]
    assert set(threading.enumerate()) - threads_before == set()
    assert set(multiprocessing.active_children()) - children_before == set()


def pool_children(
    before: Set[multiprocessing.process.BaseProcess],
) -> Set[multiprocessing.process.BaseProcess]:
    """This process's children, less those in C{before} (the module's pool)."""
    return set(multiprocessing.active_children()) - before


async def outcomes(ds: List[Deferred[bytes]]) -> List[Any]:
    """Each Deferred's result, or its exception's type."""
    results: List[Any] = []
    for d in ds:
        try:
            results.append(await d)
        except Exception as e:
            results.append(type(e))
    return results


@pytest_twisted.inlineCallbacks
def test_a_dying_process_fails_only_its_job() -> Generator[Deferred[Any], Any, None]:
    """
    Worker processes killed mid-job (SIGKILL), more times than the pool
    has processes or backlog slots: each kill fails only the job it held,
    the other jobs are answered, no slot leaks, and later jobs are served.
    """
    before = set(multiprocessing.active_children())
    pool = ProcessHandlerPool(Faulty(), 2, reactor=reactor)
    pool.startService()
    try:
        for _ in range(3):
            jobs = [pool.run(b"ab"), pool.run(b"!"), pool.run(b"cd"), pool.run(b"!")]
            results = yield within(Deferred.fromCoroutine(outcomes(jobs)))
            assert results == [b"bc", PoolProcessLostError, b"de", PoolProcessLostError]
        assert (pool.lost, pool.inFlight, pool.waiting) == (6, 0, 0)
        later = [pool.run(bytes([65 + i]) * 1000) for i in range(6)]
        results = yield within(Deferred.fromCoroutine(outcomes(later)))
        assert results == [bytes([66 + i]) * 1000 for i in range(6)]
    finally:
        yield within(pool.stopService())
    assert pool_children(before) == set()


@pytest_twisted.inlineCallbacks
def test_a_pool_whose_idle_processes_died_is_replaced() -> Generator[
    Deferred[Any], Any, None
]:
    """
    Both processes killed while idle break a pebble pool as a whole; the
    next jobs run in a new pool.
    """
    before = set(multiprocessing.active_children())
    pool = ProcessHandlerPool(Faulty(), 2, reactor=reactor)
    pool.startService()
    try:
        first = yield within(pool.run(b"ab"))
        assert first == b"bc"
        yield polled(lambda: len(pool_children(before)) == 2)
        victims = pool_children(before)
        for process in victims:
            os.kill(process.pid or 0, signal.SIGKILL)
        for process in victims:
            process.join(TIMEOUT)
        later = [pool.run(b"x" * 100) for _ in range(4)]
        results = yield within(Deferred.fromCoroutine(outcomes(later)))
        assert results == [b"y" * 100] * 4
        again = yield within(pool.run(b"ab"))
        assert again == b"bc"
    finally:
        yield within(pool.stopService())
    assert pool_children(before) == set()


@pytest_twisted.inlineCallbacks
def test_a_process_that_died_holding_the_channel_lock_wedges_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> Generator[Deferred[Any], Any, None]:
    """
    A process killed while it holds the lock that pebble's processes take
    jobs under (reading a job, acknowledging it) leaves it held for good:
    every process would wait pebble's 60 s lock timeout for each job.  The
    pool sees a job wait, finds the lock held past the probe's bound,
    replaces itself, and the jobs are answered.
    """
    monkeypatch.setattr(_processes, "CHECK_INTERVAL", 0.2)
    monkeypatch.setattr(_processes, "LOCK_PROBE_TIMEOUT", 0.5)
    before = set(multiprocessing.active_children())
    pool = ProcessHandlerPool(Faulty(), 2, reactor=reactor)
    pool.startService()
    try:
        first = yield within(pool.run(b"ab"))
        assert first == b"bc"
        mutex = _processes._channel_mutex(pool.executor)
        holder = pool_context(pool.handler).Process(target=die_holding, args=(mutex,))
        holder.start()
        holder.join(TIMEOUT)
        assert holder.exitcode == -signal.SIGKILL
        jobs = [pool.run(bytes([65 + i]) * 10) for i in range(4)]
        results = yield within(Deferred.fromCoroutine(outcomes(jobs)))
        assert results == [bytes([66 + i]) * 10 for i in range(4)]
        assert (pool.replaced, pool.lost) == (1, 0)
    finally:
        yield within(pool.stopService())
    assert pool_children(before) == set()


@pytest_twisted.inlineCallbacks
def test_a_stuck_process_is_killed_after_the_timeout() -> Generator[
    Deferred[Any], Any, None
]:
    """
    Two handler calls that never return, in a pool of two: each fails with
    HandlerTimeoutError after the timeout, its process is killed and
    replaced, and the pool serves at full strength again.
    """
    before = set(multiprocessing.active_children())
    pool = ProcessHandlerPool(Faulty(), 2, reactor=reactor, handlerTimeout=0.5)
    pool.startService()
    try:
        stuck = [pool.run(b"~"), pool.run(b"~")]
        results = yield within(Deferred.fromCoroutine(outcomes(stuck)))
        assert results == [HandlerTimeoutError] * 2
        assert pool.timeouts == 2
        later = [pool.run(b"ab"), pool.run(b"cd")]
        results = yield within(Deferred.fromCoroutine(outcomes(later)))
        assert results == [b"bc", b"de"]
        # Replacements are started by pebble's manager thread, which
        # announces nothing: full strength is two processes, eventually.
        yield polled(lambda: len(pool_children(before)) == 2)
    finally:
        yield within(pool.stopService())
    assert pool_children(before) == set()


@pytest_twisted.inlineCallbacks
def test_a_stuck_thread_is_replaced_within_a_bound() -> Generator[
    Deferred[Any], Any, None
]:
    """
    A thread cannot be killed: a call past the timeout fails, its thread
    is counted stuck and replaced, up to C{size} replacements; the pool
    keeps serving.  Once the handler returns, the thread is retired.
    """
    threads_before = set(threading.enumerate())
    pool = ThreadHandlerPool(Faulty(), 1, reactor=reactor, handlerTimeout=0.2)
    pool.startService()
    RELEASE.clear()
    try:
        results = yield within(Deferred.fromCoroutine(outcomes([pool.run(b"~")])))
        assert results == [HandlerTimeoutError]
        assert (pool.stuck, pool.executor.max, pool.inFlight) == (1, 2, 0)
        served = yield within(pool.run(b"ab"))
        assert served == b"bc"
        # A second stuck thread is not replaced: at most size are lost.
        results = yield within(Deferred.fromCoroutine(outcomes([pool.run(b"~")])))
        assert results == [HandlerTimeoutError]
        assert (pool.stuck, pool.executor.max) == (2, 2)
        results = yield within(Deferred.fromCoroutine(outcomes([pool.run(b"ab")])))
        assert results == [HandlerTimeoutError]  # no thread left to run it
    finally:
        RELEASE.set()
        yield within(pool.stopService())
    # The helper thread that stops the pool first: it joins the pool's
    # threads, and PyPy's join() is not safe from two threads at once.
    left = set(threading.enumerate()) - threads_before
    for thread in sorted(left, key=lambda t: t.name.startswith("PoolThread")):
        thread.join(TIMEOUT)
    assert set(threading.enumerate()) - threads_before == set()
