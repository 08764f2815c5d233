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
        "drain timeout 30s; 2 workers (limits per worker)"
    )
