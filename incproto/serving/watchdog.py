# -*- test-case-name: tests.unit.test_watchdog,tests.e2e.test_watchdog -*-
"""C{--watchdog}: a process whose reactor stops turning is ended, not left
to look healthy.

L{Heartbeat} stamps the time on a timer of the reactor, so the stamp ages
only while the reactor does not turn: a handler that never returns on the
reactor thread, a blocking write, a SIGSTOP.  In one process a daemon
thread, which needs no reactor, checks the stamp; when it is older than the
watchdog's limit it writes one line to standard error (with every thread's
stack, from C{faulthandler}) and aborts the process (SIGABRT), so that
whatever runs it (systemd, Kubernetes, a shell loop) starts a new one, as
HAProxy's watchdog does with a stuck thread.  A process stopped whole
(SIGSTOP, then SIGCONT) is not aborted when it resumes: its reactor turns
again, and ending it then would turn a pause into an outage (a supervisor's
workers with it); the thread knows such a pause by its own late wake-up,
and the reactor logs the stall.  Under C{--workers} a worker does not abort
itself: its beats go to its supervisor (L{incproto.workers.supervisor}),
which kills and replaces it, stopped or stuck.
"""

from __future__ import annotations

import faulthandler
import fcntl
import os
import threading
import time
from typing import Any, Callable, List, Optional

from twisted.application.service import Service
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

# The longest time between two beats: a stall is seen within this of its
# limit, and a beat costs a few microseconds.
MAX_BEAT_INTERVAL = 1.0
# Seconds an abort waits for its last words (see with_last_words).
LAST_WORDS_GRACE = 1.0


def beat_interval(limit: float) -> float:
    """Seconds between beats for a watchdog of C{limit} seconds."""
    return min(MAX_BEAT_INTERVAL, limit / 4)


class Heartbeat(Service):
    """
    Stamp the time on every beat of a reactor timer, and end the process
    once the stamp is older than C{limit} seconds (see the module's
    docstring).

    @ivar limit: seconds the reactor may go without turning.
    @ivar interval: seconds between beats.
    @ivar last: when the reactor last beat (C{now()} time).
    @ivar longest: the longest stall seen, in seconds: how much later than
        due a beat came (the C{incproto_reactor_stall_seconds} gauge).
    @ivar listeners: called on every beat (a worker tells its supervisor).
    @ivar abort: called with the stall's length, in seconds, to end the
        process; C{None} (a worker) never ends it, and starts no thread.
    """

    name = "heartbeat"
    log = Logger()

    def __init__(
        self,
        limit: float,
        clock: Any,
        abort: Optional[Callable[[float, float], None]] = None,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        """
        @param limit: seconds, more than 0.
        @param clock: the reactor whose turns are watched.
        @param abort: what ends the process, given the stall and the limit
            (L{abort_stalled}); C{None} to only measure.
        @param now: a monotonic clock (a test passes C{Clock.seconds}).
        """
        self.limit = limit
        self.interval = beat_interval(limit)
        self.clock = clock
        self.abort = abort
        self.now = now
        self.last = now()
        self.longest = 0.0
        self.listeners: List[Callable[[], None]] = []
        self._loop: Optional[LoopingCall] = None
        self._stopped = threading.Event()

    def startService(self) -> None:
        """
        Start beating and, if it may abort, the watchdog thread, once the
        reactor runs (twistd starts services before it runs the reactor).
        """
        super().startService()
        when_running = getattr(self.clock, "callWhenRunning", None)
        if when_running is not None:
            when_running(self._start)
        else:
            self._start()

    def _start(self) -> None:
        if not self.running:
            return
        self.last = self.now()
        self._loop = LoopingCall(self.beat)
        self._loop.clock = self.clock
        self._loop.start(self.interval, now=False)
        if self.abort is not None:
            self._stopped.clear()
            thread = threading.Thread(
                target=self.watch,
                args=(self._stopped.wait,),
                name="incproto watchdog",
                daemon=True,
            )
            thread.start()

    def stopService(self) -> None:
        """Stop beating and watching."""
        super().stopService()
        self._stopped.set()
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    def beat(self) -> None:
        """The reactor turned: stamp the time, tell the listeners."""
        now = self.now()
        lag = now - self.last
        self.last = now
        self.longest = max(self.longest, lag - self.interval)
        if lag > self.limit:  # the process resumes after a pause
            self.log.warn(
                "the reactor did not turn for {lag:.1f} s (--watchdog {limit:g}): "
                "the process was stopped or starved; it turns again",
                lag=lag,
                limit=self.limit,
            )
        for listener in self.listeners:
            listener()

    def stalled(self) -> Optional[float]:
        """Seconds since the last beat if more than C{limit}, else C{None}."""
        lag = self.now() - self.last
        return lag if lag > self.limit else None

    def watch(self, wait: Callable[[float], bool]) -> None:
        """
        The watchdog thread: check every C{interval} until C{wait} says the
        service stopped, and abort on a stall.

        @param wait: waits up to the seconds given; C{True} to stop.
        """
        previous = self.now()
        while not wait(self.interval):
            woke = self.now()
            paused, previous = woke - previous > 2 * self.interval, woke
            if paused:  # the whole process was stopped: let the reactor beat
                continue
            lag = self.stalled()
            if lag is not None:
                assert self.abort is not None
                self.abort(lag, self.limit)
                return


def with_last_words(
    abort: Callable[[float, float], None], words: Callable[[], None]
) -> Callable[[float, float], None]:
    """
    C{abort}, after C{words()}: what the process should still write before
    it ends (an access log's waiting lines).  The stuck reactor thread may
    hold what C{words} needs (a file's lock, in a blocked write), so they
    run in a thread of their own, given at most C{LAST_WORDS_GRACE}
    seconds: they can delay the abort, never prevent it.
    """

    def abort_after_words(lag: float, limit: float) -> None:
        try:
            speaking = threading.Thread(
                target=words, name="incproto last words", daemon=True
            )
            speaking.start()  # may fail: no thread can start
            speaking.join(LAST_WORDS_GRACE)
        except BaseException:
            pass  # the words are lost, never the abort
        finally:
            abort(lag, limit)

    return abort_after_words


def abort_stalled(lag: float, limit: float) -> None:
    """
    End this process with SIGABRT after one line to standard error, which
    names the stall, and the stacks of all its threads (where the reactor
    thread is stuck).  Standard error is written without blocking: a full
    pipe there costs the line, never the abort.
    """
    line = (
        f"incproto: the reactor has not turned for {lag:.1f} s "
        f"(--watchdog {limit:g}); aborting (SIGABRT). Stacks of all threads:\n"
    )
    try:
        flags = fcntl.fcntl(2, fcntl.F_GETFL)
        fcntl.fcntl(2, fcntl.F_SETFL, flags | os.O_NONBLOCK)
        try:
            os.write(2, line.encode("utf-8"))
            faulthandler.dump_traceback(2, all_threads=True)
        finally:
            # Shared with whoever else writes there (a terminal's shell).
            fcntl.fcntl(2, fcntl.F_SETFL, flags)
    except OSError:
        pass
    os.abort()
