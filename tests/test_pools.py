"""Real thread and process pools (pytest-twisted): replies are
byte-identical to inline for any input and chunking, and stopping leaves no
thread or process behind."""

from __future__ import annotations

import multiprocessing
import random
import threading
from typing import Any, Generator, List

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred

from incproto import IncrementFactory, IncrementProtocol
from incproto.handlers import HashingHandler, PurePythonHandler
from incproto.offload import ProcessWorkers, ThreadWorkers, Workers
from tests.fakes import HalfCloseableTransport
from tests.helpers import within
from tests.test_parser import reference


@pytest.fixture(scope="module", params=["threads", "processes"])
def workers(request: pytest.FixtureRequest) -> Generator[Workers, None, None]:
    kind = ThreadWorkers if request.param == "threads" else ProcessWorkers
    handler = HashingHandler(rounds=2) if kind is ThreadWorkers else PurePythonHandler()
    pool = kind(handler, 2, reactor=reactor)
    pool.startService()
    yield pool
    pytest_twisted.blockon(pool.stopService())


def through_pool(workers: Workers, chunks: List[bytes]) -> Deferred[bytes]:
    """Feed C{chunks} to a protocol whose handler runs in C{workers}; fire
    with everything written once the client's half-close completes."""
    protocol = IncrementFactory(workers=workers).buildProtocol(None)
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
    workers: Workers,
) -> Generator[Deferred[Any], Any, None]:
    """
    Property: for random streams and random chunkings, the pool's replies
    are byte-identical to the per-byte reference (which inline matches: see
    tests.test_parser).  All cases run at once, so jobs of different
    connections finish in any order.
    """
    rng = random.Random(2026)
    cases = [random_chunked(rng) for _ in range(60)]
    replies = yield within(
        Deferred.fromCoroutine(gather([through_pool(workers, c) for c in cases]))
    )
    for chunks, reply in zip(cases, replies):
        assert reply == b"*" + reference(b"".join(chunks))


@pytest_twisted.inlineCallbacks
def test_many_connections_at_once(
    workers: Workers,
) -> Generator[Deferred[Any], Any, None]:
    streams = [b"^" + bytes([65 + i]) * (3000 + i) for i in range(20)]
    results = yield within(
        Deferred.fromCoroutine(gather([through_pool(workers, [s]) for s in streams]))
    )
    assert results == [b"*" + reference(s) for s in streams]


async def gather(ds: List[Deferred[bytes]]) -> List[bytes]:
    return [await d for d in ds]


@pytest_twisted.inlineCallbacks
def test_stopping_leaves_no_thread_or_process() -> Generator[Deferred[Any], Any, None]:
    threads_before = set(threading.enumerate())
    children_before = set(multiprocessing.active_children())
    pools = [
        ThreadWorkers(HashingHandler(rounds=1), 3, reactor=reactor),
        ProcessWorkers(PurePythonHandler(), 2, reactor=reactor),
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
