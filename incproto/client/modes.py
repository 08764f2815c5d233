# -*- test-case-name: tests.unit.test_client,tests.integration.test_client -*-
"""The client's modes: the series' scripted client, and four load shapes.

Each mode is a L{Run}: it opens L{CheckedConnection}s to a L{Target}, fails
on the first wrong byte, refused connection or stall, and fires its result
as a flat dict (times in seconds, rates per second) that the report prints.
"""

from __future__ import annotations

from itertools import cycle, islice
from typing import Any, Callable, List, Optional, cast

from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import (
    IConsumer,
    IDelayedCall,
    IPushProducer,
    IReactorTime,
)
from twisted.internet.task import LoopingCall
from zope.interface import implementer

from incproto.client.clock import PerfCounterClock
from incproto.client.connection import (
    CheckedConnection,
    ClientError,
    Target,
    first_error,
)
from incproto.client.report import Result
from incproto.client.stats import Histogram, histogram_of

# The series' client: what it sends, and how long it waits after each send.
SERIES_SCRIPT = ((b"^abc$de^abte$f", 1.0), (b"xyz^123", 1.0), (b"25$^ab0000$abab", 0.2))
SERIES_REPLY = b"*bcdbcuf23436bc1111"

_ALPHABET = b"abcdefghijklmnopqrstuvwxyz0123456789"


def payload(length: int) -> bytes:
    """C{length} bytes of message payload (no delimiters in it)."""
    return bytes(islice(cycle(_ALPHABET), length))


class Run:
    """
    What every mode shares: its connections, a watchdog that fails stalled
    ones, a progress callback, and failing fast.

    @ivar clock: what times the run and schedules its waits.
    @ivar connections: every connection opened, in order.
    @ivar began: when the run started (on C{clock}).
    @ivar failure: the reason of the first connection that failed, which
        ended the run.
    """

    mode = ""
    tick = 0.25

    def __init__(
        self,
        target: Target,
        timeout: float = 10.0,
        progress: Optional[Callable[[str], None]] = None,
        clock: Optional[IReactorTime] = None,
    ) -> None:
        """
        @param clock: what times the run and schedules its waits (a
            C{task.Clock} in tests); by default C{perf_counter}'s seconds on
            the target's reactor (see L{PerfCounterClock}).
        """
        self.target = target
        self.clock: IReactorTime = (
            PerfCounterClock(target.reactor) if clock is None else clock
        )
        self.timeout = timeout
        self.progress = progress
        self.connections: List[CheckedConnection] = []
        self.began = self.clock.seconds()
        self.failure: Optional[str] = None
        self._watchdog = LoopingCall(self._watch)
        self._watchdog.clock = self.clock

    def run(self) -> Deferred[Result]:
        """Run the mode; fire its result, or fail with L{ClientError}."""
        self.began = self.clock.seconds()
        self._watchdog.start(self.tick, now=False)
        finished = self.start()

        def stop(result: Any) -> Any:
            if self._watchdog.running:
                self._watchdog.stop()
            return result

        def check(result: Result) -> Result:
            error = self.failure or first_error(self.connections)
            if error is not None:
                raise ClientError(error)
            result.update(mode=self.mode, target=self.target.label)
            return result

        return finished.addBoth(stop).addCallback(check)

    def start(self) -> Deferred[Result]:
        """Open the connections; fire the result when they are done."""
        raise NotImplementedError

    def status(self) -> str:
        """A short live status for the progress line."""
        return ""

    def open(self, connection: CheckedConnection) -> Deferred[CheckedConnection]:
        """Connect C{connection}; abort the whole run if it fails."""
        self.connections.append(connection)
        done = self.target.connect(connection)
        done.addCallback(self._closed)
        return done

    def _closed(self, connection: CheckedConnection) -> CheckedConnection:
        if connection.error is not None and self.failure is None:
            # The cause: connections aborted below fail only because of it.
            self.failure = connection.error
            self.stopped()
            for other in self.connections:
                if other.closedAt is None and other.transport is not None:
                    other.transport.abortConnection()  # type: ignore[attr-defined]
        return connection

    def stopped(self) -> None:
        """A connection failed: stop starting new work."""

    def _watch(self) -> None:
        now = self.clock.seconds()
        for connection in self.connections:
            if connection.closedAt is None:
                connection.stalled(now, self.timeout)
        if self.progress is not None:
            self.progress(f"{self.mode} {now - self.began:6.1f}s  {self.status()}")

    def all_done(self) -> Deferred[Any]:
        """Fires when every connection opened so far is closed."""
        return DeferredList([c.done for c in self.connections])


class SeriesConnection(CheckedConnection):
    """The series' client: three sends with pauses, then a half-close."""

    record = True

    def __init__(
        self,
        number: int,
        clock: IReactorTime,
        origin: float,
        say: Optional[Callable[[str], None]] = None,
    ) -> None:
        super().__init__(number, clock)
        self.origin = origin
        self.say = say
        self._next: Optional[IDelayedCall] = None

    def _log(self, what: str) -> None:
        if self.say is not None:
            elapsed = self.clock.seconds() - self.origin
            self.say(f"{elapsed:8.3f}s  #{self.number:<4} {what}")

    def connectionMade(self) -> None:
        super().connectionMade()
        self._log("connected")

    def dataReceived(self, data: bytes) -> None:
        self._log(f"received {data!r}")
        super().dataReceived(data)

    def send(self, data: bytes) -> None:
        self._log(f"sent {data!r}")
        super().send(data)

    def greeted(self) -> None:
        self._step(0)

    def _step(self, index: int) -> None:
        if index == len(SERIES_SCRIPT):
            self.finish()
            return
        data, pause = SERIES_SCRIPT[index]
        self.send(data)
        self._next = self.clock.callLater(pause, self._step, index + 1)

    def connectionLost(self, reason: Any = None) -> None:
        if self._next is not None and self._next.active():
            self._next.cancel()
        self._log("closed")
        complete = self.check.received + 1 == len(SERIES_REPLY)
        if (
            self.error is None
            and self.check.greeted
            and not self.check.owed
            and not complete
        ):
            self.error = (
                f"connection {self.number}: closed by the server after "
                f"{self.check.received + 1} of {len(SERIES_REPLY)} reply bytes"
            )
        super().connectionLost(reason)


class Series(Run):
    """
    The series' client: C{clients} connections at once, each greeted, then
    C{^abc$de^abte$f}, 1 s, C{xyz^123}, 1 s, C{25$^ab0000$abab}, 0.2 s, and
    a half-close; every reply must be C{*bcdbcuf23436bc1111}.
    """

    mode = "series"

    def __init__(
        self,
        target: Target,
        clients: int,
        say: Optional[Callable[[str], None]] = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(target, **kwargs)
        self.clients = clients
        self.say = say

    def start(self) -> Deferred[Result]:
        for number in range(1, self.clients + 1):
            self.open(SeriesConnection(number, self.clock, self.began, self.say))

        def result(_: Any) -> Result:
            waits = [
                c.greetedAt - c.started
                for c in self.connections
                if c.greetedAt is not None
            ]
            return {
                "connections": self.clients,
                "seconds": self.clock.seconds() - self.began,
                "wait_max": max(waits, default=0.0),
                "wait_p50": histogram_of(waits).percentile(50),
            }

        return self.all_done().addCallback(result)

    def status(self) -> str:
        greeted = sum(c.greetedAt is not None for c in self.connections)
        closed = sum(c.closedAt is not None for c in self.connections)
        return f"{greeted}/{self.clients} greeted, {closed} done"


class PingConnection(CheckedConnection):
    """Sends one message, waits for its reply, and again, while the run is on."""

    def __init__(self, number: int, run: Ping) -> None:
        super().__init__(number, run.clock)
        self.run = run
        self.sentAt = 0.0

    def greeted(self) -> None:
        self.run.greeted()

    def ping(self) -> None:
        self.sentAt = self.clock.seconds()
        self.send(self.run.message)

    def answered(self) -> None:
        if self.run.sending:
            now = self.clock.seconds()
            self.run.latencies.add(now - self.sentAt)
            self.run.messages += 1
            self.sentAt = now
            self.send(self.run.message)
        else:
            self.finish()


class Ping(Run):
    """
    C{connections} connections; once all are greeted, each sends a message of
    C{length} payload bytes and waits for its reply, again and again, for
    C{duration} seconds.  Reports messages per second and latency.
    """

    mode = "ping"

    def __init__(
        self,
        target: Target,
        connections: int,
        length: int,
        duration: float,
        **kwargs: Any,
    ) -> None:
        super().__init__(target, **kwargs)
        self.count = connections
        self.message = b"^" + payload(length) + b"$"
        self.length = length
        self.duration = duration
        self.sending = False
        self.messages = 0
        self.latencies = Histogram()
        self._greeted = 0
        self._started = 0.0
        self._stop: Optional[IDelayedCall] = None
        self._elapsed = 0.0

    def start(self) -> Deferred[Result]:
        for number in range(1, self.count + 1):
            self.open(PingConnection(number, self))

        def result(_: Any) -> Result:
            return {
                "connections": self.count,
                "length": self.length,
                "seconds": self._elapsed,
                "messages": self.messages,
                "rate": self.messages / self._elapsed if self._elapsed else 0.0,
                "latency_p50": self.latencies.percentile(50),
                "latency_p99": self.latencies.percentile(99),
                "histogram": self.latencies.to_json(),
            }

        return self.all_done().addCallback(result)

    def greeted(self) -> None:
        self._greeted += 1
        if self._greeted == self.count and self.failure is None:
            self.sending = True
            self._started = self.clock.seconds()
            self._stop = self.clock.callLater(self.duration, self._finish)
            for connection in self.connections:
                assert isinstance(connection, PingConnection)
                connection.ping()

    def _finish(self) -> None:
        self.sending = False
        self._elapsed = self.clock.seconds() - self._started

    def stopped(self) -> None:
        if self._stop is not None and self._stop.active():
            self._stop.cancel()
        self.sending = False

    def status(self) -> str:
        if not self.sending:
            return f"{self._greeted}/{self.count} greeted"
        rate = self.messages / max(self.clock.seconds() - self._started, 1e-9)
        p99 = self.latencies.percentile(99) or 0.0
        return f"{self.messages:,} messages  {rate:,.0f}/s  p99 {p99 * 1e3:.2f} ms"


@implementer(IPushProducer)
class StreamConnection(CheckedConnection):
    """Sends one long message as fast as the server takes it."""

    chunk = 64 * 1024
    window = 4 * 1024 * 1024  # reply bytes owed before sending pauses

    def __init__(self, total: int, clock: Optional[IReactorTime] = None) -> None:
        super().__init__(1, clock)
        self.remaining = total
        self.total = total
        self.data = payload(self.chunk)
        self.paused = False
        self.ended = False
        self.startedAt = 0.0
        self.finishedAt = 0.0

    def greeted(self) -> None:
        transport = cast(IConsumer, self.transport)
        transport.registerProducer(self, True)
        self.startedAt = self.clock.seconds()
        self.send(b"^")
        self.pump()

    def dataReceived(self, data: bytes) -> None:
        super().dataReceived(data)
        if self.check.greeted and self.error is None:
            self.pump()

    def pump(self) -> None:
        while not self.paused and self.remaining and self.check.owed < self.window:
            data = self.data[: min(self.chunk, self.remaining)]
            self.remaining -= len(data)
            self.send(data)
        if not self.remaining and not self.ended:
            self.ended = True
            self.send(b"$")

    def answered(self) -> None:
        if self.ended and not self.finishedAt:
            self.finishedAt = self.clock.seconds()
            transport = cast(IConsumer, self.transport)
            transport.unregisterProducer()
            self.finish()

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        self.pump()

    def stopProducing(self) -> None:
        self.paused = True


class Stream(Run):
    """
    One connection, one message of C{mebibytes} MiB: reports MB/s, from the
    first byte sent to the last reply byte received.
    """

    mode = "stream"

    def __init__(self, target: Target, mebibytes: float, **kwargs: Any) -> None:
        super().__init__(target, **kwargs)
        self.size = int(mebibytes * 1024 * 1024)

    def start(self) -> Deferred[Result]:
        connection = StreamConnection(self.size, self.clock)

        def result(_: Any) -> Result:
            seconds = connection.finishedAt - connection.startedAt
            return {
                "bytes": self.size,
                "seconds": seconds,
                "mb_per_s": self.size / 1e6 / seconds if seconds > 0 else 0.0,
            }

        return self.open(connection).addCallback(result)

    def status(self) -> str:
        if not self.connections:
            return ""
        received = self.connections[0].check.received
        return f"{received / 1e6:,.0f} of {self.size / 1e6:,.0f} MB back"


class BurstConnection(CheckedConnection):
    """Greeted, sends one message, and once answered waits to be released."""

    message = b"^burst$"

    def __init__(self, number: int, run: Burst) -> None:
        super().__init__(number, run.clock)
        self.run = run
        self.servedAt: Optional[float] = None

    def greeted(self) -> None:
        self.send(self.message)

    def answered(self) -> None:
        self.servedAt = self.clock.seconds()
        self.run.served(self)


class Burst(Run):
    """
    C{connections} connections opened at once; each is greeted and answered
    once, then held open until all are (and C{hold} seconds more, for
    measuring the server's memory).  Reports the time until all were served;
    then every connection closes.
    """

    mode = "burst"

    def __init__(
        self, target: Target, connections: int, hold: float = 0.0, **kwargs: Any
    ) -> None:
        super().__init__(target, **kwargs)
        self.count = connections
        self.hold = hold
        self.servedCount = 0
        self.allServed = 0.0

    def start(self) -> Deferred[Result]:
        for number in range(1, self.count + 1):
            self.open(BurstConnection(number, self))

        def result(_: Any) -> Result:
            served = [
                c.servedAt - c.started
                for c in self.connections
                if isinstance(c, BurstConnection) and c.servedAt is not None
            ]
            histogram = histogram_of(served)
            return {
                "connections": self.count,
                "seconds": self.allServed - self.began,
                "served_p50": histogram.percentile(50),
                "served_p99": histogram.percentile(99),
            }

        return self.all_done().addCallback(result)

    def served(self, connection: BurstConnection) -> None:
        self.servedCount += 1
        if self.servedCount == self.count:
            self.allServed = self.clock.seconds()
            self.clock.callLater(self.hold, self._release)

    def _release(self) -> None:
        for connection in self.connections:
            connection.finish()

    def status(self) -> str:
        greeted = sum(c.greetedAt is not None for c in self.connections)
        return f"{greeted:,} greeted, {self.servedCount:,}/{self.count:,} served"


class ChurnConnection(CheckedConnection):
    """Connects, waits for the greeting, and closes."""

    def greeted(self) -> None:
        assert self.transport is not None
        self.transport.loseConnection()


class Churn(Run):
    """
    C{concurrency} loops of connect, greeting, close, for C{duration}
    seconds: reports connections per second.
    """

    mode = "churn"

    def __init__(
        self, target: Target, concurrency: int, duration: float, **kwargs: Any
    ) -> None:
        super().__init__(target, **kwargs)
        self.concurrency = concurrency
        self.duration = duration
        self.completed = 0
        self.going = True
        self.number = 0
        self._finished: Deferred[Result] = Deferred()
        self._running = 0
        self._stop: Optional[IDelayedCall] = None

    def start(self) -> Deferred[Result]:
        self._stop = self.clock.callLater(self.duration, self.stopped)
        for _ in range(self.concurrency):
            self._next()
        return self._finished

    def _next(self) -> None:
        self.number += 1
        self._running += 1
        connection = ChurnConnection(self.number, self.clock)
        self.connections.append(connection)
        self.target.connect(connection).addCallback(self._churned)

    def _churned(self, connection: CheckedConnection) -> None:
        self._running -= 1
        self.connections.remove(connection)
        if connection.error is not None:
            self.connections.append(connection)  # kept for the report
            self.stopped()
        elif connection.greetedAt is not None:
            self.completed += 1
        if self.going:
            self._next()
        elif not self._running:
            seconds = self.clock.seconds() - self.began
            self._finished.callback(
                {
                    "concurrency": self.concurrency,
                    "seconds": seconds,
                    "connections": self.completed,
                    "rate": self.completed / seconds,
                }
            )

    def stopped(self) -> None:
        self.going = False
        if self._stop is not None and self._stop.active():
            self._stop.cancel()

    def status(self) -> str:
        rate = self.completed / max(self.clock.seconds() - self.began, 1e-9)
        return f"{self.completed:,} connections  {rate:,.0f}/s"
