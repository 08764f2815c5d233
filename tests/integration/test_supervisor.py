"""Tests for incproto.workers.supervisor: WorkerPool supervision on a fake
process reactor (spawn, relay, restart with back-off, drain, kill) and what
reaches the workers. Each pool binds its shared listening socket for real on
127.0.0.1, so these tests are not unit tests, though the reactor never runs.
(Real twistd runs: tests/e2e/test_workers.py.)"""

from __future__ import annotations

import dataclasses
import json
import signal
from typing import Any, Dict, List

import pytest
from prometheus_client import generate_latest
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import Logger, LogLevel, eventAsJSON, formatEvent
from twisted.python.failure import Failure

from incproto.config import ServerConfig
from incproto.serving.health import supervisor_readiness
from incproto.tap import Options, makeService
from incproto.workers.balance import READY_FD, TABLE_FD, WORKER_ENV
from incproto.workers.process import WorkerProcess
from incproto.workers.supervisor import (
    METRICS_REPLIES,
    METRICS_REQUESTS,
    METRICS_TIMEOUT,
    WORKER_FD,
    WorkerPool,
)
from tests.support.fakes import ProcessClock


@pytest.fixture
def pool() -> Any:
    clock = ProcessClock()
    events: List[Dict[str, Any]] = []
    config = ServerConfig(
        port="tcp:0", endpoint="tcp:0:interface=127.0.0.1", workers=2,
        idle_timeout=5.0, drain_timeout=35.0, metrics="tcp:9100",
    )  # fmt: skip
    pool = WorkerPool(config, clock)
    pool.log = Logger(observer=events.append)  # type: ignore[arg-type]
    pool.startService()
    yield pool, clock, events
    if pool.running:
        pool.stopService()
        for worker in list(pool.workers.values()):
            worker.processEnded(Failure(ProcessDone(0)))


def end(worker: WorkerProcess, status: int = 1) -> None:
    reason = ProcessDone(0) if status == 0 else ProcessTerminated(status)
    worker.processEnded(Failure(reason))


def test_workers_get_the_socket_as_fd_3_and_the_options(pool: Any) -> None:
    pool_, clock, _ = pool
    assert len(clock.spawned) == 2
    for spawn in clock.spawned:
        assert spawn["childFDs"][WORKER_FD] == pool_.socket.fileno()
        assert spawn["args"][1:4] == ["-m", "incproto.workers.worker", "inet"]
        config = ServerConfig.from_json(spawn["args"][4])
        assert (config.idle_timeout, config.workers) == (5.0, None)
        assert config.metrics is None
        assert spawn["childFDs"][1] == "r" and spawn["childFDs"][2] == "r"
        assert spawn["childFDs"][METRICS_REQUESTS] == "w"
        assert spawn["childFDs"][METRICS_REPLIES] == "r"


def test_worker_log_events_are_relayed_with_the_worker_number(pool: Any) -> None:
    _, clock, events = pool
    worker = clock.spawned[1]["protocol"]
    line = eventAsJSON(
        {
            "log_format": "connection from {peer} closed",
            "peer": "192.0.2.1:5",
            "log_level": LogLevel.info,
            "log_namespace": "incproto.protocol",
        }
    ).encode()
    worker.outReceived(line[:10])
    worker.outReceived(line[10:] + b"\nnot json\n")
    worker.errReceived(b"Traceback (most recent call last):\n")
    relayed = [e for e in events if e.get("worker") == 2]
    assert relayed[0]["peer"] == "192.0.2.1:5"
    assert relayed[0]["log_system"] == "worker 1.2"
    assert relayed[0]["worker_pid"] == 1001
    assert any(e.get("line") == b"not json" for e in events)
    errors = [e for e in events if e["log_level"] == LogLevel.error]
    assert errors[0]["line"] == "Traceback (most recent call last):"


def test_relayed_events_keep_their_format_specs(pool: Any) -> None:
    """A worker's access-log event reads as a single process's does:
    C{{duration:.3f}} survives the JSON relay (Twisted's JSON form drops
    format specs)."""
    _, clock, events = pool
    worker = clock.spawned[0]["protocol"]
    event = {
        "log_format": "connection from {peer} closed after {duration:.3f}s",
        "peer": "192.0.2.1:5",
        "duration": 0.0009124279,
        "log_level": LogLevel.info,
        "log_namespace": "incproto.protocol",
    }
    worker.outReceived(eventAsJSON(event).encode() + b"\n")
    [relayed] = [e for e in events if e.get("worker") == 1]
    assert formatEvent(relayed) == "connection from 192.0.2.1:5 closed after 0.001s"


def say(worker: WorkerProcess, message: bytes) -> None:
    """The worker writes one line on its channel to the supervisor."""
    worker.childDataReceived(METRICS_REPLIES, message + b"\n")


def test_a_worker_that_never_served_is_restarted_with_back_off(pool: Any) -> None:
    """A boot failure (it dies before it says it serves) backs off, 1 s then
    2 s, however long it took to die; one that served is replaced at once,
    and the back-off starts afresh."""
    pool_, clock, events = pool
    end(clock.spawned[0]["protocol"])  # died at once
    assert len(clock.spawned) == 2
    clock.advance(1)
    assert len(clock.spawned) == 3
    clock.advance(30)
    end(clock.spawned[2]["protocol"])  # never served: twice the delay
    clock.advance(1.9)
    assert len(clock.spawned) == 3
    clock.advance(0.1)
    assert len(clock.spawned) == 4
    say(clock.spawned[3]["protocol"], b'{"ready": true}')
    end(clock.spawned[3]["protocol"], -11)  # served, then crashed: at once
    clock.advance(0)
    assert len(clock.spawned) == 5
    end(clock.spawned[4]["protocol"])  # a boot failure again: from 1 s
    clock.advance(0.9)
    assert len(clock.spawned) == 5
    clock.advance(0.1)
    assert len(clock.spawned) == 6
    assert pool_.restarts == 4 and sorted(pool_.workers) == [1, 2]
    assert pool_.replaced == {"crashed": 4, "stalled": 0}
    said = [formatEvent(e) for e in events]
    assert "worker 1.1 exited with status 1 after 30.0 s; restarting it in 2 s" in said
    assert "worker 1.1 exited with status -11 after 0.0 s; restarting it in 0 s" in said


@pytest.fixture
def watched() -> Any:
    """A pool of two workers under --watchdog 4, its beats timed by the
    clock; both workers serve."""
    clock = ProcessClock()
    events: List[Dict[str, Any]] = []
    config = ServerConfig(
        port="tcp:0", endpoint="tcp:0:interface=127.0.0.1", workers=2, watchdog=4.0
    )
    pool = WorkerPool(config, clock, now=clock.seconds)
    pool.log = Logger(observer=events.append)  # type: ignore[assignment]
    pool.startService()
    for spawned in clock.spawned:
        say(spawned["protocol"], b'{"ready": true}')
    yield pool, clock, events
    if pool.running:
        pool.stopService()
    for worker in [*pool.workers.values(), *pool.retired]:
        end(worker, 0)


def test_workers_are_asked_to_be_watched(watched: Any) -> None:
    _, clock, _ = watched
    for spawned in clock.spawned:
        assert spawned["protocol"].transport.written == [(METRICS_REQUESTS, b"watch\n")]
        assert spawned["protocol"].ready


def test_a_stalled_worker_is_killed_replaced_and_counted(watched: Any) -> None:
    """Worker 1 beats, worker 2 falls silent (its reactor stuck): within a
    beat interval of --watchdog it is SIGKILLed, with one line saying why,
    then replaced at once and counted as stalled; worker 1 is left alone."""
    pool, clock, events = watched
    first, second = (s["protocol"] for s in clock.spawned)
    for _ in range(16):
        clock.advance(0.5)
        say(first, b'{"beat": true}')
        if clock.seconds() <= 2.0:
            say(second, b'{"beat": true}')
    assert [second.transport.signals, first.transport.signals] == [["KILL"], []]
    assert pool.live() == [first]
    [why] = [formatEvent(e) for e in events if "has not answered" in e["log_format"]]
    assert why == (
        "worker 1.2 (pid 1001) has not answered for 5.0 s (--watchdog 4): its "
        "reactor is stuck or stopped; killing it (SIGKILL) and starting a new one"
    )
    clock.advance(5)
    assert second.transport.signals == ["KILL"]  # killed once
    end(second, -9)
    clock.advance(0)
    assert len(clock.spawned) == 3 and pool.workers[2] is clock.spawned[2]["protocol"]
    assert pool.replaced == {"crashed": 0, "stalled": 1}


def test_a_stall_of_the_supervisor_itself_kills_no_worker(watched: Any) -> None:
    """The supervisor was stopped (its checks came 20 s apart): its late
    check decides nothing, since its workers' beats wait unread in their
    pipes; once read, they count; a worker that then stays silent is killed
    as usual."""
    _, clock, _ = watched
    first, second = (s["protocol"] for s in clock.spawned)
    clock.advance(1.0)  # a check on time
    clock.rightNow += 20.0  # the supervisor is stopped: no check, no beat read
    clock.advance(0.5)  # its first check, late
    assert [first.transport.signals, second.transport.signals] == [[], []]
    for worker in (first, second):  # the beats that waited in the pipes
        say(worker, b'{"beat": true}')
    clock.advance(0.5)
    assert [first.transport.signals, second.transport.signals] == [[], []]
    for _ in range(10):
        clock.advance(0.5)
        say(first, b'{"beat": true}')
    assert [first.transport.signals, second.transport.signals] == [[], ["KILL"]]


def test_a_worker_gets_a_minute_to_start_serving(watched: Any) -> None:
    """Before it says it serves, a worker is given BOOT_TIMEOUT (an import
    on a loaded machine takes seconds); one stuck at boot is then killed,
    and, never having served, replaced with back-off."""
    pool, clock, _ = watched
    end(clock.spawned[0]["protocol"], -9)
    clock.advance(0)
    booting = clock.spawned[2]["protocol"]
    for _ in range(60):
        clock.advance(1)
        say(clock.spawned[1]["protocol"], b'{"beat": true}')
    assert booting.transport.signals == [] and booting in pool.live()
    clock.advance(1)
    assert booting.transport.signals == ["KILL"] and booting not in pool.live()
    end(booting, -9)
    clock.advance(0)
    assert len(clock.spawned) == 3  # a boot failure: back-off
    clock.advance(1)
    assert len(clock.spawned) == 4 and pool.replaced["stalled"] == 1


def test_a_stalled_old_worker_is_killed_not_replaced(watched: Any) -> None:
    pool, clock, events = watched
    old = [s["protocol"] for s in clock.spawned]
    old[0].heard = True  # it has logged: it handles SIGQUIT (it retires)
    pool.reload()
    for slot in (0, 1):  # each new worker accepts, then its successor starts
        new = clock.spawned[2 + slot]["protocol"]
        say(new, b'{"ready": true}')
        new.childDataReceived(READY_FD, b"ready\n")
    for _ in range(10):
        clock.advance(0.5)
        for spawned in clock.spawned[2:]:
            say(spawned["protocol"], b'{"beat": true}')
    # One that has not logged yet may not handle SIGQUIT yet (its default
    # dumps core): it gets SIGTERM.
    assert [w.transport.signals for w in old] == [
        [signal.SIGQUIT, "KILL"],
        [signal.SIGTERM, "KILL"],
    ]
    end(old[0], -9)
    clock.advance(0)
    assert len(clock.spawned) == 4 and pool.replaced["stalled"] == 0
    said = [formatEvent(e) for e in events]
    assert any(
        line.startswith("old worker 1.1 (pid 1000) has not answered") for line in said
    )


def test_without_a_watchdog_nothing_is_killed() -> None:
    clock = ProcessClock()
    config = ServerConfig(
        port="tcp:0", endpoint="tcp:0:interface=127.0.0.1", workers=1, watchdog=None
    )
    pool = WorkerPool(config, clock, now=clock.seconds)
    pool.startService()
    worker = clock.spawned[0]["protocol"]
    say(worker, b'{"ready": true}')
    clock.advance(100)
    assert worker.transport.signals == [] and pool.live() == [worker]
    assert not clock.getDelayedCalls()
    pool.stopService()
    end(worker, 0)


def test_workers_inherit_no_systemd_notification(monkeypatch: Any) -> None:
    """Only the supervisor notifies systemd (NotifyAccess=main)."""
    for name, value in [
        ("NOTIFY_SOCKET", "@n"),
        ("WATCHDOG_USEC", "1"),
        ("WATCHDOG_PID", "1"),
        ("LISTEN_FDS", "1"),
        ("KEEP", "me"),
    ]:
        monkeypatch.setenv(name, value)
    clock = ProcessClock()
    pool = WorkerPool(
        ServerConfig(port="tcp:0", endpoint="tcp:0:interface=127.0.0.1", workers=1),
        clock,
    )
    pool.startService()
    env = clock.spawned[0]["env"]
    assert env["KEEP"] == "me"
    assert not {"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS"} & set(
        env
    )
    pool.stopService()
    end(clock.spawned[0]["protocol"], 0)


def test_stop_terms_waits_and_kills(pool: Any) -> None:
    pool_, clock, _ = pool
    first, second = (s["protocol"] for s in clock.spawned)
    stopped = pool_.stopService()
    assert pool_.socket is None  # no new connections queue for the workers
    assert first.transport.signals == ["TERM"] and second.transport.signals == ["TERM"]
    end(first, 0)
    assert not stopped.called
    clock.advance(40)
    assert second.transport.signals == ["TERM", "KILL"]
    end(second, 9)
    assert stopped.called and len(clock.spawned) == 2  # no restarts


def test_reload_starts_new_workers_then_retires_the_old(pool: Any) -> None:
    """SIGHUP's rolling restart: a new generation, a worker per slot, each
    with its own label and balance table, one slot at a time here; each old
    worker gets SIGQUIT (let sessions end) once its slot's new worker
    accepts, which starts the next slot's, and is not restarted when it
    exits; a stop SIGTERMs and waits for them."""
    pool_, clock, events = pool
    pool_.startingAtOnce = 1
    old = [s["protocol"] for s in clock.spawned]
    for worker in old:
        worker.heard = True  # they have logged: they handle SIGQUIT
    pool_.reload()
    assert [s["env"][WORKER_ENV] for s in clock.spawned] == ["1.1", "1.2", "2.1"]
    quit = signal.SIGQUIT
    assert [w.transport.signals for w in old] == [[], []]  # no accept gap
    clock.spawned[2]["protocol"].childDataReceived(READY_FD, b"ready\n")
    assert [w.transport.signals for w in old] == [[quit], []]
    assert [s["env"][WORKER_ENV] for s in clock.spawned][3:] == ["2.2"]
    new = [s["protocol"] for s in clock.spawned[2:]]
    tables = [s["protocol"].table for s in clock.spawned]
    assert tables[0] is tables[1] is not tables[2] is tables[3]
    assert clock.spawned[2]["childFDs"][TABLE_FD] == tables[2].fileno()
    new[1].childDataReceived(READY_FD, b"ready\n")
    assert [w.transport.signals for w in old] == [[quit], [quit]]
    assert pool_.workers == {1: new[0], 2: new[1]}
    end(old[0], 0)
    clock.advance(60)
    assert len(clock.spawned) == 4 and pool_.restarts == 0
    stopped = pool_.stopService()
    assert old[1].transport.signals == [quit, "TERM"]
    for worker in new:
        end(worker, 0)
    assert not stopped.called  # the old worker still drains
    end(old[1], 0)
    assert stopped.called
    assert "old worker 1.1 exited" in [formatEvent(e) for e in events]


def test_an_old_worker_serves_until_its_replacement_accepts(pool: Any) -> None:
    """A new worker that dies before it accepts is restarted, and the old
    worker of its slot accepts meanwhile; a second reload replaces both."""
    pool_, clock, _ = pool
    pool_.startingAtOnce = 1
    old = clock.spawned[0]["protocol"]
    old.heard = True  # it has logged: it handles SIGQUIT
    pool_.reload()
    failing = clock.spawned[2]["protocol"]
    end(failing, 1)
    clock.advance(1)  # the restart's back-off
    assert clock.spawned[-1]["env"][WORKER_ENV] == "2.1"
    assert old.transport.signals == []
    pool_.reload()
    spawned = {s["env"][WORKER_ENV]: s["protocol"] for s in clock.spawned}
    assert sorted(spawned) == ["1.1", "1.2", "2.1", "3.1"]
    spawned["3.1"].childDataReceived(READY_FD, b"ready\n")
    assert old.transport.signals == [signal.SIGQUIT]
    # 2.1 has not logged yet: it may not handle SIGQUIT yet, whose default
    # action dumps core (it did), so it gets SIGTERM.
    assert spawned["2.1"].transport.signals == [signal.SIGTERM]
    assert spawned["1.2"].transport.signals == []  # 3.2 starts only now
    assert clock.spawned[-1]["env"][WORKER_ENV] == "3.2"
    assert pool_.workers[1] is spawned["3.1"]


def test_an_old_worker_that_dies_before_its_turn_is_replaced_at_once(
    pool: Any,
) -> None:
    pool_, clock, _ = pool
    pool_.startingAtOnce = 1
    second = clock.spawned[1]["protocol"]
    pool_.reload()
    end(second, 1)
    assert [s["env"][WORKER_ENV] for s in clock.spawned] == [
        "1.1", "1.2", "2.1", "2.2"
    ]  # fmt: skip
    assert pool_.restarts == 0
    clock.spawned[2]["protocol"].childDataReceived(READY_FD, b"ready\n")
    assert len(clock.spawned) == 4  # no slot is started twice


def test_an_old_worker_that_dies_during_its_turn_does_not_stop_the_reload(
    pool: Any,
) -> None:
    pool_, clock, _ = pool
    pool_.startingAtOnce = 1
    first = clock.spawned[0]["protocol"]
    pool_.reload()
    end(first, 1)  # while 2.1 starts
    assert len(clock.spawned) == 3 and pool_.restarts == 0
    clock.spawned[2]["protocol"].childDataReceived(READY_FD, b"ready\n")
    assert clock.spawned[-1]["env"][WORKER_ENV] == "2.2"


WORKER_METRICS = """\
# HELP incproto_connections_accepted_total Connections served.
# TYPE incproto_connections_accepted_total counter
incproto_connections_accepted_total {count}.0
# HELP incproto_connections_closed_total Connections closed, by reason.
# TYPE incproto_connections_closed_total counter
incproto_connections_closed_total{{reason="client closed"}} {count}.0
"""


def test_scrape_asks_every_worker_and_labels_their_samples(pool: Any) -> None:
    pool_, clock, _ = pool
    first, second = (s["protocol"] for s in clock.spawned)
    scraped = pool_.scrape()
    for worker in (first, second):
        assert worker.transport.written[-1] == (METRICS_REQUESTS, b"metrics\n")
    reply = json.dumps({"text": WORKER_METRICS.format(count=3)}).encode() + b"\n"
    first.childDataReceived(METRICS_REPLIES, b'{"beat": true}\n' + reply[:7])
    first.childDataReceived(METRICS_REPLIES, reply[7:])
    assert not scraped.called
    clock.advance(METRICS_TIMEOUT)  # the second never answers: within 2 s
    assert METRICS_TIMEOUT == 2.0
    collector = scraped.result
    text = generate_latest(collector).decode()  # as WorkersMetricsResource does
    assert "incproto_workers 2.0" in text
    assert 'incproto_worker_up{worker="1"} 1.0' in text
    assert 'incproto_worker_up{worker="2"} 0.0' in text
    assert 'incproto_workers_replaced_total{reason="stalled"} 0.0' in text
    assert 'incproto_connections_accepted_total{worker="1"} 3.0' in text
    assert (
        'incproto_connections_closed_total{reason="client closed",worker="1"} 3.0'
        in text
    )
    assert 'incproto_connections_accepted_total{worker="2"}' not in text
    # The late answer, when it comes, is not taken for the next scrape's.
    second.childDataReceived(METRICS_REPLIES, reply.replace(b"3.0", b"7.0"))
    again = pool_.scrape()
    second.childDataReceived(METRICS_REPLIES, reply.replace(b"3.0", b"5.0"))
    clock.advance(METRICS_TIMEOUT)
    text = generate_latest(again.result).decode()
    assert 'incproto_connections_accepted_total{worker="2"} 5.0' in text


# One value per option, none of them its default (--processes, which
# excludes --threads, is given on its own below).
EVERY_OPTION = {
    "port": "proxy:tcp:0:interface=127.0.0.1", "backlog": "7",
    "max-connections": "5", "queue": "3", "queue-timeout": "2.5",
    "max-per-peer": "2", "handler": "incproto.handlers:hashing",
    "threads": "2", "handler-timeout": "1.5", "metrics": "9100",
    "idle-timeout": "4.5", "workers": "3", "access-log": "log",
    "drain-timeout": "6.5", "handshake-timeout": "3.5",
    "proxy-trusted": "10.0.0.0/8,127.0.0.1", "watchdog": "4.5",
}  # fmt: skip


def option_names() -> List[str]:
    return [option[0] for option in [*Options.optParameters, *Options.optFlags]]


def worker_config(options: Options) -> ServerConfig:
    """The configuration a worker of C{options}' supervisor is started with."""
    clock = ProcessClock()
    pool = WorkerPool(options.config, clock)
    pool.startService()
    try:
        return ServerConfig.from_json(clock.spawned[0]["args"][4])
    finally:
        pool.listener.stopService()


def test_every_option_is_a_field_of_the_configuration() -> None:
    fields = {field.name for field in dataclasses.fields(ServerConfig)}
    options = {name.replace("-", "_") for name in option_names()}
    assert fields == options | {"endpoint"}
    given_apart = {"processes", "max-jobs-per-process", "no-connection-log"}
    assert set(EVERY_OPTION) | given_apart == set(option_names())


def test_every_option_reaches_the_workers_but_workers_and_metrics() -> None:
    flags = [f"--{flag[0]}" for flag in Options.optFlags]
    argv = [f"--{name}={value}" for name, value in EVERY_OPTION.items()]
    options = Options.parse([*argv, *flags])
    worker, default = worker_config(options), ServerConfig()
    for name in option_names():
        field = name.replace("-", "_")
        given = getattr(options.config, field)
        if name in ("workers", "metrics"):  # the supervisor's own
            assert getattr(worker, field) is None is not given
        elif name not in ("processes", "max-jobs-per-process"):
            assert getattr(worker, field) == given != getattr(default, field), name
    assert (
        worker.endpoint
        == options.config.endpoint
        == ("proxy:tcp:0:interface=127.0.0.1:backlog=7")
    )


def test_processes_reach_the_workers() -> None:
    options = Options.parse(
        ["--port", "tcp:0", "--workers", "2", "--processes", "3",
         "--max-jobs-per-process", "50"]
    )  # fmt: skip
    assert worker_config(options).processes == 3
    assert worker_config(options).max_jobs_per_process == 50


class ProcessReactor(MemoryReactorClock, ProcessClock):
    """A memory reactor that also spawns fake processes."""

    def __init__(self) -> None:
        MemoryReactorClock.__init__(self)
        self.spawned: List[Dict[str, Any]] = []


def test_healthz_outlives_the_workers_drain() -> None:
    """The supervisor's metrics listener stops last: while its workers drain
    and exit, /healthz can still answer (503 stopping)."""
    reactor = ProcessReactor()
    options = Options.parse(["--port", "tcp:0", "--workers", "1", "--metrics", "tcp:0"])
    service = makeService(options, reactor)
    service.startService()
    metrics = service.getServiceNamed("metrics")  # type: ignore[attr-defined]
    pool = service.getServiceNamed("workers")  # type: ignore[attr-defined]
    stopped = service.stopService()
    assert (pool.running, metrics.running) == (False, True)
    assert supervisor_readiness(pool)() == "stopping"
    for worker in list(pool.workers.values()):
        end(worker, 0)
    assert stopped.called and not metrics.running


def test_sigusr1_is_sent_on_to_workers_once_they_have_logged(pool: Any) -> None:
    """A worker that has logged handles SIGUSR1: it gets it at once; one that
    has not (still importing, where SIGUSR1 would kill it) gets it when it
    first logs; none gets it twice."""
    pool_, clock, _ = pool
    first, second = (spawn["protocol"] for spawn in clock.spawned)
    first.outReceived(b"not json\n")
    pool_.reopen()
    assert first.transport.signals == [signal.SIGUSR1]
    assert second.transport.signals == []
    second.outReceived(b"not json\n")
    second.outReceived(b"not json\n")
    assert second.transport.signals == [signal.SIGUSR1]
