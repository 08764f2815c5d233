"""Tests for OrderedWork, the per-connection ordered job queue, and for the
protocol that drives it, on a pool whose jobs the test finishes by hand, in
any order (no threads, no reactor)."""

from __future__ import annotations

import random
from typing import Any, List

from twisted.internet.error import ConnectionLost
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from incproto import IncrementFactory
from incproto.handlers import IncrementHandler
from incproto.ordered import OrderedWork
from tests.support.fakes import connect_to
from tests.support.formats import reference
from tests.support.pools import Failing, ManualPool


class RecordingConnection:
    """The connection an OrderedWork works for, recording into a test's lists."""

    def __init__(self, test: Any) -> None:
        self.test = test
        self.writesPaused = False

    def deliver(self, reply: bytes) -> None:
        self.test.delivered.append(reply)

    def workFailed(self, failure: Failure) -> None:
        self.test.failures.append(failure)

    def workBehind(self, behind: bool) -> None:
        self.test.pauses.append(behind)

    def workDone(self) -> None:
        self.test.idles += 1


def writes_paused(work: OrderedWork, paused: bool) -> None:
    """The connection's writes pause or resume, as its protocol reports them."""
    work.connection.writesPaused = paused  # type: ignore[misc]
    if not paused:
        work.writesResumed()


class OrderedWorkTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.pool = ManualPool()
        self.delivered: List[bytes] = []
        self.pauses: List[bool] = []
        self.idles = 0
        self.failures: List[Failure] = []
        self.work = OrderedWork(self.pool, RecordingConnection(self), limit=10)

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
        writes_paused(self.work, True)
        self.work.add(b"cd")
        self.pool.finish()
        self.assertEqual((self.delivered, self.pool.jobs), ([], []))
        self.assertTrue(self.work.busy)  # the reply is held
        writes_paused(self.work, False)
        self.assertEqual(self.delivered, [b"bc"])
        self.assertEqual([job[0] for job in self.pool.jobs], [b"cd"])
        self.pool.finish()
        self.assertEqual((self.delivered, self.idles), ([b"bc", b"de"], 1))

    def test_writes_paused_by_a_delivery_hold_the_next_job(self) -> None:
        self.work.add(b"ab")
        self.work.add(b"cd")
        self.work.connection.deliver = (  # type: ignore[method-assign]
            lambda reply: writes_paused(self.work, True)
        )
        self.pool.finish()
        self.assertEqual(self.pool.jobs, [])
        writes_paused(self.work, False)
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


class Tenfold:
    """Each byte's increment, ten times (it keeps the handler contract)."""

    def transform(self, payload: bytes) -> bytes:
        return b"".join(bytes([(b + 1) % 256]) * 10 for b in payload)


class AmplificationTests(SynchronousTestCase):
    """
    Jobs are sized by the handler's last ratio of reply to payload, so that
    a job's reply is about C{limit // 2} bytes whatever the handler returns,
    and none runs while the client does not read (issue 22).
    """

    def setUp(self) -> None:
        self.delivered: List[bytes] = []
        self.pauses: List[bool] = []
        self.idles = 0
        self.failures: List[Failure] = []

    def test_pool_jobs_shrink_by_the_ratio(self) -> None:
        pool = ManualPool(Tenfold())  # type: ignore[arg-type]
        work = OrderedWork(pool, RecordingConnection(self), limit=400)
        work.add(b"a" * 1000)
        self.assertEqual(len(pool.jobs[0][0]), 200)  # no ratio known: limit // 2
        pool.finish()  # 2000 bytes of reply: the ratio is 10
        self.assertEqual(work.ratio.value, 10.0)
        self.assertEqual(len(pool.jobs[0][0]), 20)  # 200 bytes of reply
        pool.finish()
        self.assertEqual([len(r) for r in self.delivered], [2000, 200])

    def test_first_job_is_small_until_the_ratio_is_known(self) -> None:
        pool = ManualPool(Tenfold())  # type: ignore[arg-type]
        work = OrderedWork(pool, RecordingConnection(self), limit=1 << 20)
        work.add(b"a" * 100000)
        self.assertEqual(len(pool.jobs[0][0]), 4096)

    def test_inline_runs_in_pieces_and_stops_while_writes_are_paused(self) -> None:
        connection = RecordingConnection(self)
        work = OrderedWork(None, connection, limit=400, handler=Tenfold())  # type: ignore[arg-type]
        work.ratio.update(1, 10)
        replies: List[int] = []

        def deliver(reply: bytes) -> None:
            replies.append(len(reply))
            if len(replies) == 3:
                connection.writesPaused = True  # the client stopped reading

        connection.deliver = deliver  # type: ignore[method-assign]
        work.add(b"a" * 100)
        self.assertEqual(replies, [200, 200, 200])  # 20 bytes a job, then paused
        self.assertEqual(work.pending, 40)
        self.assertTrue(work.busy)
        self.assertEqual(self.idles, 0)
        writes_paused(work, False)
        self.assertEqual(replies, [200] * 5)
        self.assertEqual((work.pending, work.busy, self.idles), (0, False, 1))

    def test_inline_small_payload_is_answered_at_once(self) -> None:
        work = OrderedWork(
            None, RecordingConnection(self), limit=400, handler=Tenfold()
        )  # type: ignore[arg-type]
        work.add(b"ab")
        self.assertEqual(self.delivered, [b"b" * 10 + b"c" * 10])
        self.assertFalse(work.busy)

    def test_inline_fault_is_reported_once(self) -> None:
        work = OrderedWork(
            None, RecordingConnection(self), limit=400, handler=Failing()
        )  # type: ignore[arg-type]
        work.add(b"ab")
        work.add(b"cd")
        self.assertEqual(len(self.failures), 1)
        self.assertFalse(work.busy)

    def test_inline_needs_a_handler(self) -> None:
        self.assertRaises(ValueError, OrderedWork, None, RecordingConnection(self), 10)


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

    def test_handler_or_pool_not_both(self) -> None:
        self.assertRaises(
            ValueError,
            IncrementFactory,
            handler=IncrementHandler(),
            pool=self.pool,
        )


class Empty:
    """A handler that answers nothing."""

    def transform(self, payload: bytes) -> bytes:
        return b""


class OrderedWorkEdgeTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.pool = ManualPool()
        self.delivered: List[bytes] = []
        self.pauses: List[bool] = []
        self.idles = 0
        self.failures: List[Failure] = []

    def work(self, limit: int = 10) -> OrderedWork:
        return OrderedWork(self.pool, RecordingConnection(self), limit=limit)

    def test_pauses_exactly_at_the_limit(self) -> None:
        work = self.work()
        work.add(b"x" * 9)  # 5 in flight, 4 waiting
        self.assertEqual((work.carried, work.pending, self.pauses), (5, 4, []))
        work.add(b"x")  # 5 + 5: the limit
        self.assertEqual(self.pauses, [True])

    def test_a_limit_of_one_still_makes_progress(self) -> None:
        work = self.work(limit=1)
        work.add(b"abc")
        self.assertEqual([job[0] for job in self.pool.jobs], [b"a"])
        self.assertEqual(work.pending, 2)

    def test_an_empty_reply_is_not_delivered(self) -> None:
        self.pool.handler = Empty()  # type: ignore[assignment]
        work = self.work()
        work.add(b"ab")
        self.pool.finish()
        self.assertEqual((self.delivered, self.idles), ([], 1))
        self.assertFalse(work.busy)

    def test_failure_after_cancel_is_not_reported(self) -> None:
        self.pool.handler = Failing()  # type: ignore[assignment]
        work = self.work()
        work.add(b"ab")
        work.cancel()
        self.pool.finish()
        self.assertEqual(self.failures, [])

    def test_failure_ends_the_work(self) -> None:
        self.pool.handler = Failing()  # type: ignore[assignment]
        work = self.work()
        work.add(b"abcd")
        self.assertEqual(work.carried, 4)
        self.pool.finish()
        [failure] = self.failures
        self.assertEqual(failure.getErrorMessage(), "handler broke")
        self.assertEqual(work.carried, 0)
        self.assertFalse(work.busy)

    def test_resumed_writes_submit_waiting_payload(self) -> None:
        work = self.work()
        writes_paused(work, True)
        work.add(b"x" * 10)
        self.assertEqual((self.pool.jobs, self.pauses), ([], [True]))
        writes_paused(work, False)
        self.assertEqual([job[0] for job in self.pool.jobs], [b"xxxxx"])
        self.assertEqual(self.pauses, [True])  # 5 waiting + 5 in flight
        self.pool.finish()
        self.assertEqual(self.pauses, [True, False])

    def test_resumed_writes_after_cancel_do_nothing(self) -> None:
        work = self.work()
        work.add(b"ab")
        writes_paused(work, True)
        self.pool.finish()
        work.cancel()
        writes_paused(work, False)
        self.assertEqual(self.delivered, [])

    def test_a_delivery_that_cancels_stops_the_work(self) -> None:
        work = self.work()
        work.add(b"ab")
        work.add(b"cd")
        delivered: List[bytes] = []

        def deliver(reply: bytes) -> None:
            delivered.append(reply)
            work.cancel()

        work.connection.deliver = deliver  # type: ignore[method-assign]
        self.pool.finish()
        self.assertEqual((delivered, self.pool.jobs, self.idles), ([b"bc"], [], 0))

    def test_nothing_is_carried_before_the_first_job(self) -> None:
        work = self.work()
        writes_paused(work, True)
        work.add(b"x" * 9)
        self.assertEqual((work.carried, self.pauses), (0, []))

    def test_resuming_with_nothing_waiting_submits_nothing(self) -> None:
        work = self.work()
        writes_paused(work, True)
        writes_paused(work, False)
        self.assertEqual((self.pool.jobs, work.busy), ([], False))

    def test_nothing_runs_after_a_failure(self) -> None:
        self.pool.handler = Failing()  # type: ignore[assignment]
        work = self.work()
        work.add(b"ab")
        work.add(b"cd")
        self.pool.finish()
        writes_paused(work, False)
        self.assertEqual((self.pool.jobs, len(self.failures)), ([], 1))

    def test_cancel_drops_a_held_reply(self) -> None:
        work = self.work()
        work.add(b"ab")
        writes_paused(work, True)
        self.pool.finish()
        self.assertTrue(work.busy)
        work.cancel()
        self.assertFalse(work.busy)

    def test_a_batch_of_exactly_half_the_limit_is_one_job(self) -> None:
        work = self.work()
        work.add(b"x" * 5)
        self.pool.finish()
        self.assertEqual((self.pool.jobs, self.idles, work.busy), ([], 1, False))

    def test_nothing_is_carried_after_a_delivery(self) -> None:
        work = self.work()
        work.add(b"ab")
        self.assertEqual(work.carried, 2)
        self.pool.finish()
        self.assertEqual(work.carried, 0)
