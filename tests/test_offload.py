"""Tests for incproto.offload and the protocol with a pool, on a pool whose
jobs the test finishes by hand, in any order (no threads, no reactor)."""

from __future__ import annotations

import random
from typing import Any, Callable, List, Optional, Tuple

from twisted.internet.error import ConnectionLost
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from incproto import IncrementFactory
from incproto.handlers import IncrementHandler, IPayloadHandler
from incproto.offload import HandlerPool, Job, OrderedWork
from tests.fakes import connect_to
from tests.test_parser import reference


class ImmediateReactor(Clock):
    """A Clock whose callFromThread runs the call at once."""

    def callFromThread(self, f: Callable[..., Any], *args: Any) -> None:
        f(*args)


class ManualPool(HandlerPool):
    """A pool whose jobs run when the test says so."""

    def __init__(
        self, handler: Optional[IPayloadHandler] = None, **kwargs: Any
    ) -> None:
        super().__init__(
            handler or IncrementHandler(), 2, reactor=ImmediateReactor(), **kwargs
        )
        self.jobs: List[Tuple[bytes, Callable[[bool, Any], None]]] = []
        self.stopped: Optional[bool] = None

    def _call(self, job: Job, done: Callable[[bool, Any], None]) -> None:
        self.jobs.append((job.payload, done))

    def finish(self, index: int = 0) -> None:
        payload, done = self.jobs.pop(index)
        try:
            result = self.handler.transform(payload)
        except Exception:
            done(False, Failure())
        else:
            done(True, result)

    def _stopPool(self, idle: bool) -> None:
        self.stopped = idle


class Failing:
    def transform(self, payload: bytes) -> bytes:
        raise RuntimeError("handler broke")


class OrderedWorkTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.pool = ManualPool()
        self.delivered: List[bytes] = []
        self.pauses: List[bool] = []
        self.idles = 0
        self.failures: List[Failure] = []

        def idle() -> None:
            self.idles += 1

        self.work = OrderedWork(
            self.pool, self.delivered.append, self.failures.append,
            self.pauses.append, idle, limit=10,
        )  # fmt: skip

    def test_one_job_at_a_time_batching_the_rest(self) -> None:
        self.work.add(b"ab")
        self.work.add(b"cd")
        self.work.add(b"ef")
        self.assertEqual([job[0] for job in self.pool.jobs], [b"ab"])
        self.pool.finish()
        self.assertEqual([job[0] for job in self.pool.jobs], [b"cdef"])
        self.pool.finish()
        self.assertEqual(self.delivered, [b"bc", b"defg"])
        self.assertEqual(self.idles, 1)
        self.assertFalse(self.work.busy)

    def test_pauses_while_waiting_and_carried_bytes_reach_the_limit(self) -> None:
        """Payload waiting plus the job in flight count; jobs are at most
        half the limit, so the next batch is read while one runs."""
        self.work.add(b"a")
        self.work.add(b"x" * 10)
        self.assertEqual(self.pauses, [True])
        self.pool.finish()  # b"a" delivered; b"xxxxx" submitted: 5 + 5
        self.assertEqual(([job[0] for job in self.pool.jobs], self.pauses),
                         ([b"xxxxx"], [True]))  # fmt: skip
        self.pool.finish()
        self.assertEqual(self.pauses, [True, False])
        self.pool.finish()
        self.assertEqual(self.delivered, [b"b", b"yyyyy", b"yyyyy"])

    def test_nothing_submitted_or_written_while_writes_are_paused(self) -> None:
        self.work.add(b"ab")
        self.work.writesPaused(True)
        self.work.add(b"cd")
        self.pool.finish()
        self.assertEqual((self.delivered, self.pool.jobs), ([], []))
        self.assertTrue(self.work.busy)  # the reply is held
        self.work.writesPaused(False)
        self.assertEqual(self.delivered, [b"bc"])
        self.assertEqual([job[0] for job in self.pool.jobs], [b"cd"])
        self.pool.finish()
        self.assertEqual((self.delivered, self.idles), ([b"bc", b"de"], 1))

    def test_writes_paused_by_a_delivery_hold_the_next_job(self) -> None:
        self.work.add(b"ab")
        self.work.add(b"cd")
        self.work.deliver = lambda reply: self.work.writesPaused(True)
        self.pool.finish()
        self.assertEqual(self.pool.jobs, [])
        self.work.writesPaused(False)
        self.assertEqual([job[0] for job in self.pool.jobs], [b"cd"])

    def test_cancel_drops_results_quietly(self) -> None:
        self.work.add(b"ab")
        self.work.cancel()
        self.pool.finish()
        self.assertEqual((self.delivered, self.failures), ([], []))

    def test_failure_is_reported_once(self) -> None:
        self.pool.handler = Failing()  # type: ignore[assignment]
        self.work.add(b"ab")
        self.work.add(b"cd")
        self.pool.finish()
        self.assertEqual(len(self.failures), 1)
        self.assertEqual(self.pool.jobs, [])


class WorkersTests(SynchronousTestCase):
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

    def test_needs_a_worker(self) -> None:
        self.assertRaises(ValueError, HandlerPool, IncrementHandler(), 0)


class ProtocolWithPoolTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.pool = ManualPool()
        self.factory = IncrementFactory(clock=Clock(), pool=self.pool, workBuffer=16)

    def test_replies_keep_their_order_whatever_order_jobs_finish(self) -> None:
        """Many connections; the pool finishes their jobs in random order."""
        rng = random.Random(4)
        streams = [bytes(rng.choice(b"^$ab\xff") for _ in range(60)) for _ in range(8)]
        connections = [connect_to(self.factory) for _ in streams]
        fed = [0] * len(streams)
        while any(f < len(s) for f, s in zip(fed, streams)) or self.pool.jobs:
            index = rng.randrange(len(streams))
            if fed[index] < len(streams[index]):
                cut = fed[index] + rng.randint(1, 7)
                connections[index][0].dataReceived(streams[index][fed[index] : cut])
                fed[index] = min(cut, len(streams[index]))
            if self.pool.jobs and rng.random() < 0.5:
                self.pool.finish(rng.randrange(len(self.pool.jobs)))
        for stream, (_, transport) in zip(streams, connections):
            self.assertEqual(transport.value(), b"*" + reference(stream))

    def test_reading_pauses_while_work_waits(self) -> None:
        """workBuffer 16: jobs of at most 8 bytes; reading resumes once the
        payload waiting plus the job in flight are under 16 bytes."""
        protocol, transport = connect_to(self.factory)
        protocol.dataReceived(b"^a")
        protocol.dataReceived(b"b" * 20)
        self.assertEqual(transport.producerState, "paused")
        self.pool.finish()  # 12 waiting + 8 in flight
        self.assertEqual(transport.producerState, "paused")
        self.pool.finish()  # 4 waiting + 8 in flight
        self.assertEqual(transport.producerState, "producing")

    def test_write_backpressure_and_work_backpressure_combine(self) -> None:
        protocol, transport = connect_to(self.factory)
        protocol.dataReceived(b"^a")
        protocol.dataReceived(b"b" * 20)  # work pauses reading
        protocol.pauseProducing()  # and the client stops reading
        protocol.resumeProducing()  # the client reads again...
        self.assertEqual(transport.producerState, "paused")  # ...work still blocks
        self.pool.finish()
        self.pool.finish()
        self.assertEqual(transport.producerState, "producing")
        protocol.pauseProducing()
        self.pool.finish()  # the reply is held while writes are paused...
        self.assertEqual(transport.producerState, "paused")  # ...and reading too
        self.assertEqual(transport.value(), b"*b" + b"c" * 8)
        protocol.resumeProducing()
        self.assertEqual(transport.producerState, "producing")
        self.assertEqual(transport.value(), b"*b" + b"c" * 16)

    def test_a_client_that_stops_reading_stops_its_work(self) -> None:
        """
        Once the transport pauses (the client does not read), no job of the
        connection is submitted and no reply written until it resumes.
        """
        protocol, transport = connect_to(self.factory)
        protocol.dataReceived(b"^a")
        protocol.pauseProducing()
        protocol.dataReceived(b"bc")
        self.pool.finish()
        self.assertEqual((transport.value(), self.pool.jobs), (b"*", []))
        protocol.resumeProducing()
        self.assertEqual(transport.value(), b"*b")
        self.pool.finish()
        self.assertEqual(transport.value(), b"*bcd")

    def test_half_close_waits_for_the_pool(self) -> None:
        protocol, transport = connect_to(self.factory)
        protocol.dataReceived(b"^abc$")
        protocol.readConnectionLost()
        self.assertFalse(transport.disconnecting)
        self.pool.finish()
        self.assertEqual(transport.value(), b"*bcd")
        self.assertTrue(transport.disconnecting)

    def test_client_leaving_during_work_drops_the_result(self) -> None:
        protocol, transport = connect_to(self.factory)
        protocol.dataReceived(b"^abc")
        protocol.connectionLost(Failure(ConnectionLost()))
        self.pool.finish()
        self.assertEqual(transport.value(), b"*")
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_handler_error_closes_only_that_connection(self) -> None:
        self.pool.handler = Failing()  # type: ignore[assignment]
        broken, broken_transport = connect_to(self.factory)
        broken.dataReceived(b"^abc")
        self.pool.finish()
        self.assertTrue(broken_transport.write_closed)
        [logged] = self.flushLoggedErrors(RuntimeError)
        self.assertEqual(logged.getErrorMessage(), "handler broke")
        self.assertEqual(self.factory.handlerErrors, 1)
        self.pool.handler = IncrementHandler()
        fine, fine_transport = connect_to(self.factory)
        fine.dataReceived(b"^abc")
        self.pool.finish()
        self.assertEqual(fine_transport.value(), b"*bcd")

    def test_inline_handler_error(self) -> None:
        factory = IncrementFactory(clock=Clock(), handler=Failing())  # type: ignore[arg-type]
        protocol, transport = connect_to(factory)
        protocol.dataReceived(b"^abc")
        self.assertTrue(transport.write_closed)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(factory.handlerErrors, 1)

    def test_handler_or_workers_not_both(self) -> None:
        self.assertRaises(
            ValueError,
            IncrementFactory,
            handler=IncrementHandler(),
            pool=self.pool,
        )
