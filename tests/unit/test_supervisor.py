"""Tests for incproto.workers.supervisor without a socket: the --workers
options and the service they build (WorkerPool on a fake process reactor, which
binds its shared socket: tests/integration/test_supervisor.py)."""

from __future__ import annotations

import pytest
from twisted.python import usage

from incproto.tap import Options, makeService
from incproto.workers.supervisor import WorkerPool
from tests.support.fakes import ProcessClock


def test_an_access_log_to_standard_output_reaches_workers_as_events() -> None:
    """A worker's standard output is its log pipe: `--access-log -` becomes
    log events there, which the supervisor writes to its own log."""
    options = Options.parse(["--workers", "2", "--access-log", "-"])
    assert options.config.for_worker().access_log == "log"
    assert Options.parse(["--access-log", "-"]).config.access_log == "-"


def test_bad_workers_option() -> None:
    with pytest.raises(usage.UsageError, match="not a positive integer"):
        Options.parse(["--workers", "0"])


def test_workers_option_builds_a_supervisor() -> None:
    options = Options.parse(["--port", "tcp:0", "--workers", "2"])
    service = makeService(options, ProcessClock())
    assert isinstance(service.getServiceNamed("workers"), WorkerPool)  # type: ignore[attr-defined]


def test_the_supervisor_watches_its_own_reactor_and_its_workers() -> None:
    """--watchdog with --workers: the supervisor's reactor has a heartbeat
    that aborts it, as one process's; its workers' beats are checked
    against the same limit; off, neither."""
    from incproto.serving.watchdog import abort_stalled

    options = Options.parse(["--port", "tcp:0", "--workers", "2", "--watchdog", "3"])
    service = makeService(options, ProcessClock())
    assert service.heartbeat.limit == 3.0  # type: ignore[attr-defined]
    assert service.heartbeat.abort is abort_stalled  # type: ignore[attr-defined]
    pool = service.getServiceNamed("workers")  # type: ignore[attr-defined]
    assert pool.watchdog == 3.0
    off = Options.parse(["--port", "tcp:0", "--workers", "2", "--watchdog", "off"])
    service = makeService(off, ProcessClock())
    assert service.heartbeat is None  # type: ignore[attr-defined]
    assert service.getServiceNamed("workers").watchdog is None  # type: ignore[attr-defined]


def test_the_supervisor_logs_the_settings_once() -> None:
    """Under --workers the supervisor logs the settings; a worker's stack
    (incproto.workers.worker) does not log them again."""
    from twisted.logger import globalLogPublisher

    options = Options.parse(["--port", "tcp:0", "--workers", "2"])
    service = makeService(options, ProcessClock())
    events: list = []
    globalLogPublisher.addObserver(events.append)
    try:
        service._announce()  # type: ignore[attr-defined]
    finally:
        globalLogPublisher.removeObserver(events.append)
    [event] = [e for e in events if "settings" in e]
    assert event["settings"].endswith(
        "drain timeout 30s; watchdog 10s; 2 workers (limits per worker)"
    )
