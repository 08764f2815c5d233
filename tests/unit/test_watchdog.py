"""Tests for incproto.serving.watchdog: the heartbeat, the decision to end a
stalled process, and what --watchdog builds, on task.Clock (no thread is
started: the watchdog thread's loop is called with a fake wait)."""

from __future__ import annotations

import threading
from typing import Any, Dict, List, Tuple

import pytest
from prometheus_client import generate_latest
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import Logger, formatEvent
from twisted.python import usage

from incproto.config import DEFAULT_WATCHDOG
from incproto.serving import watchdog
from incproto.serving.metrics import registry_of
from incproto.serving.watchdog import (
    Heartbeat,
    beat_interval,
    with_last_words,
)
from incproto.tap import Options, makeService


def heartbeat(limit: float = 4.0) -> Tuple[Heartbeat, Clock, List[Tuple[float, float]]]:
    clock = Clock()
    aborted: List[Tuple[float, float]] = []
    beat = Heartbeat(
        limit, clock, lambda lag, lim: aborted.append((lag, lim)), clock.seconds
    )
    return beat, clock, aborted


def test_the_interval_is_a_quarter_of_the_limit_at_most_a_second() -> None:
    assert beat_interval(1.0) == 0.25
    assert beat_interval(10.0) == 1.0


def test_beats_stamp_the_time_and_call_the_listeners() -> None:
    clock = Clock()
    beat = Heartbeat(4.0, clock, None, clock.seconds)
    heard: List[float] = []
    beat.listeners.append(lambda: heard.append(clock.seconds()))
    beat.startService()  # a task.Clock has no callWhenRunning: at once
    clock.advance(1.0)
    clock.advance(1.0)
    assert heard == [1.0, 2.0] and beat.last == 2.0
    assert beat.stalled() is None and beat.longest == 0.0
    beat.stopService()
    clock.advance(5.0)
    assert heard == [1.0, 2.0] and not clock.getDelayedCalls()


def test_the_longest_stall_is_measured() -> None:
    """A beat that comes late by 2.5 s (the reactor busy) is a 2.5 s
    stall, kept as the longest; a worker's heartbeat (no abort) only
    measures, even a stall beyond the limit."""
    clock = Clock()
    beat = Heartbeat(4.0, clock, None, clock.seconds)
    beat.startService()
    clock.advance(1.0)
    clock.advance(3.5)  # the timer fired 2.5 s late
    assert beat.longest == 2.5
    clock.advance(10.0)
    assert beat.longest == 9.0 and beat.running


def test_the_watchdog_thread_aborts_a_stalled_reactor() -> None:
    """The thread's loop, with a wait that lets clock time pass but never
    runs the reactor's timers: the stall is seen within one interval of
    the limit, and the process ended once."""
    beat, clock, aborted = heartbeat(limit=4.0)
    beat.startService()
    waits: List[float] = []

    def wait(seconds: float) -> bool:
        waits.append(seconds)
        clock.rightNow += seconds  # time passes, the reactor does not turn
        return False

    beat.watch(wait)
    assert waits == [1.0] * 5
    assert aborted == [(5.0, 4.0)]


def test_the_watchdog_thread_leaves_a_turning_reactor_alone() -> None:
    beat, clock, aborted = heartbeat(limit=4.0)
    beat.startService()
    turns = iter(range(20))

    def wait(seconds: float) -> bool:
        clock.advance(seconds)  # the reactor turns: beats come
        return next(turns, None) is None

    beat.watch(wait)
    assert aborted == [] and beat.longest == 0.0


def test_a_reactor_that_resumes_after_a_pause_carries_on() -> None:
    """After a SIGSTOP the reactor may beat before the thread looks: the
    process turns again, so the stall is measured and logged, not ended
    (an abort would turn the pause into an outage)."""
    beat, clock, aborted = heartbeat(limit=4.0)
    heard: List[float] = []
    beat.listeners.append(lambda: heard.append(clock.seconds()))
    events: List[Dict[str, Any]] = []
    beat.log = Logger(observer=events.append)  # type: ignore[assignment]
    beat.startService()
    clock.advance(1.0)
    clock.advance(6.0)
    assert aborted == [] and heard == [1.0, 7.0] and beat.longest == 5.0
    assert [formatEvent(e) for e in events] == [
        "the reactor did not turn for 6.0 s (--watchdog 4): the process was "
        "stopped or starved; it turns again"
    ]


def test_the_watchdog_thread_leaves_a_paused_process_to_its_reactor() -> None:
    """The thread itself woke late (the whole process was stopped): it
    does not abort on that round, and the reactor, turning again, beats;
    a reactor still stuck is caught on the next round."""
    beat, clock, aborted = heartbeat(limit=4.0)
    beat.startService()
    rounds = iter([10.0, 1.0, 1.0, 1.0, 1.0, 1.0])  # one 10 s pause

    def wait(seconds: float) -> bool:
        step = next(rounds, None)
        if step is None:
            return True
        clock.rightNow += step  # the reactor stays stuck throughout
        return False

    beat.watch(wait)
    assert aborted == [(11.0, 4.0)]


def test_it_starts_only_once_the_reactor_runs() -> None:
    """twistd starts services before it runs the reactor: the time in
    between is no stall, and no thread starts on a reactor never run."""
    reactor = MemoryReactorClock()
    beat = Heartbeat(4.0, reactor, None, reactor.seconds)
    beat.startService()
    assert not reactor.getDelayedCalls()
    reactor.advance(100.0)
    reactor.run()
    assert beat.last == 100.0 and len(reactor.getDelayedCalls()) == 1
    beat.stopService()


@pytest.mark.parametrize(
    "argv, limit", [([], DEFAULT_WATCHDOG), (["--watchdog", "2.5"], 2.5),
                    (["--watchdog", "off"], None), (["--watchdog", "0"], None)],
)  # fmt: skip
def test_the_option(argv: List[str], limit: Any) -> None:
    options = Options.parse(["--metrics", "tcp:0", *argv])
    assert options.config.watchdog == limit
    service = makeService(options, MemoryReactorClock())
    heartbeat = service.heartbeat  # type: ignore[attr-defined]
    if limit is None:
        assert heartbeat is None
        return
    assert heartbeat.limit == limit and heartbeat.abort is not None
    heartbeat.longest = 1.25
    text = generate_latest(registry_of(service.collector)).decode()  # type: ignore[attr-defined]
    assert "incproto_reactor_stall_seconds 1.25" in text


@pytest.mark.parametrize("value", ["-1", "soon", "0.1", "inf", "1e400", "nan"])
def test_a_bad_value_is_a_usage_error(value: str) -> None:
    with pytest.raises(usage.UsageError, match="--watchdog"):
        Options.parse(["--watchdog", value])


def test_last_words_come_before_the_abort() -> None:
    said: List[Any] = []
    abort = with_last_words(
        lambda *stall: said.append(stall), lambda: said.append("words")
    )
    abort(12.5, 10.0)
    assert said == ["words", (12.5, 10.0)]


def test_last_words_that_never_end_delay_the_abort_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Words blocked where the stuck reactor thread holds a lock: the abort
    comes after the grace, from the watchdog's thread."""
    monkeypatch.setattr(watchdog, "LAST_WORDS_GRACE", 0.05)
    blocked = threading.Event()
    aborted: List[Tuple[float, float]] = []
    abort = with_last_words(lambda *stall: aborted.append(stall), blocked.wait)
    try:
        abort(12.5, 10.0)
        assert aborted == [(12.5, 10.0)]
    finally:
        blocked.set()  # let the words' thread end


def test_no_thread_for_last_words_still_aborts(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stalled process that cannot start a thread (pids.max, no memory
    for a stack) loses its last words, not its abort."""

    class NoThread:
        def __init__(self, **kwargs: Any) -> None:
            pass

        def start(self) -> None:
            raise RuntimeError("can't start new thread")

    monkeypatch.setattr(watchdog.threading, "Thread", NoThread)
    aborted: List[Tuple[float, float]] = []
    with_last_words(lambda *stall: aborted.append(stall), lambda: None)(12.5, 10.0)
    assert aborted == [(12.5, 10.0)]
