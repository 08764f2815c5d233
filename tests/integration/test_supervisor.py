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
from incproto.serving.metrics import registry_of
from incproto.tap import Options, makeService
from incproto.workers.supervisor import (
    METRICS_REPLIES,
    METRICS_REQUESTS,
    METRICS_TIMEOUT,
    WORKER_FD,
    WorkerPool,
    WorkerProcess,
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
    assert relayed[0]["log_system"] == "worker 2"
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


def test_a_dead_worker_is_restarted_with_back_off(pool: Any) -> None:
    pool_, clock, events = pool
    end(clock.spawned[0]["protocol"])  # died at once
    assert len(clock.spawned) == 2
    clock.advance(1)
    assert len(clock.spawned) == 3
    end(clock.spawned[2]["protocol"])  # died at once again: twice the delay
    clock.advance(1.9)
    assert len(clock.spawned) == 3
    clock.advance(0.1)
    assert len(clock.spawned) == 4
    clock.advance(10)
    end(clock.spawned[3]["protocol"])  # ran a while: back at once
    clock.advance(0)
    assert len(clock.spawned) == 5
    assert pool_.restarts == 3 and sorted(pool_.workers) == [1, 2]
    said = [formatEvent(e) for e in events]
    assert "worker 1 exited with status 1 after 0.0 s; restarting it in 2 s" in said


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
    """SIGHUP's rolling restart: a new worker per slot, SIGQUIT to the old
    ones (let sessions end), which are not restarted when they exit; a stop
    SIGTERMs and waits for them."""
    pool_, clock, events = pool
    old = [s["protocol"] for s in clock.spawned]
    pool_.reload()
    assert len(clock.spawned) == 4
    new = [s["protocol"] for s in clock.spawned[2:]]
    quit = signal.SIGQUIT
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
    assert "old worker 1 exited" in [formatEvent(e) for e in events]


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
        assert worker.transport.written == [(METRICS_REQUESTS, b"metrics\n")]
    reply = json.dumps({"text": WORKER_METRICS.format(count=3)}).encode() + b"\n"
    first.childDataReceived(METRICS_REPLIES, reply[:7])
    first.childDataReceived(METRICS_REPLIES, reply[7:])
    assert not scraped.called
    clock.advance(METRICS_TIMEOUT)  # the second never answers
    collector = scraped.result
    text = generate_latest(registry_of(collector)).decode()
    assert "incproto_workers 2.0" in text
    assert 'incproto_connections_accepted_total{worker="1"} 3.0' in text
    assert (
        'incproto_connections_closed_total{reason="client closed",worker="1"} 3.0'
        in text
    )
    assert 'worker="2"' not in text


# One value per option, none of them its default (--processes, which
# excludes --threads, is given on its own below).
EVERY_OPTION = {
    "port": "proxy:tcp:0:interface=127.0.0.1", "backlog": "7",
    "max-connections": "5", "queue": "3", "queue-timeout": "2.5",
    "max-per-peer": "2", "handler": "incproto.handlers:hashing",
    "threads": "2", "handler-timeout": "1.5", "metrics": "9100",
    "idle-timeout": "4.5", "workers": "3", "access-log": "log",
    "drain-timeout": "6.5",
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
    assert set(EVERY_OPTION) | {"processes", "no-connection-log"} == set(option_names())


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
        elif name != "processes":
            assert getattr(worker, field) == given != getattr(default, field), name
    assert (
        worker.endpoint
        == options.config.endpoint
        == ("proxy:tcp:0:interface=127.0.0.1:backlog=7")
    )


def test_processes_reach_the_workers() -> None:
    options = Options.parse(["--port", "tcp:0", "--workers", "2", "--processes", "3"])
    assert worker_config(options).processes == 3


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
