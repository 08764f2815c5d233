"""Tests for incproto._kernel.accepting on a fake port and a Clock: accept
errors (EMFILE) turned into a quiet pause, and pauses for several reasons."""

from __future__ import annotations

from typing import Any, Dict, List

from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher

from incproto._kernel.accepting import AcceptControl
from tests.support.fakes import FakePort


def capture() -> List[Dict[str, Any]]:
    events: List[Dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    return events


def emfile(port: FakePort) -> None:
    # What tcp.Port logs for each failed accept (twisted.internet.tcp._accept).
    port._logger.info(
        "Could not accept new connection ({acceptError})", acceptError="EMFILE"
    )


def test_accept_errors_pause_accepting_and_are_logged_once_per_interval() -> None:
    clock = Clock()
    port = FakePort()
    control = AcceptControl(port, clock, backoff=1.0, logInterval=10.0)
    events = capture()
    try:
        for _ in range(1000):
            emfile(port)
        port._logger.info("other port news")
        assert not port.reading
        assert control.acceptErrors == 1000
        warned = [e for e in events if "cannot accept" in e.get("log_format", "")]
        assert len(warned) == 1
        assert not [e for e in events if "acceptError" in e]
        assert [e["log_format"] for e in events if "news" in e["log_format"]]
        clock.advance(1.0)
        assert port.reading  # tries again after the back-off
        clock.advance(9.0)
        [summary] = [e for e in events if "in the last" in e["log_format"]]
        assert summary["count"] == 999
    finally:
        globalLogPublisher.removeObserver(events.append)
        control.stop()


def test_pause_holds_until_every_reason_resumes() -> None:
    port = FakePort()
    control = AcceptControl(port, Clock())
    control.pause("limit")
    control.pause("proxy")
    control.resume("limit")
    assert not port.reading
    control.resume("proxy")
    assert port.reading
    assert control.pauses == 1


def test_a_port_it_cannot_control_is_left_alone() -> None:
    class Other:
        pass

    control = AcceptControl(Other(), Clock())
    control.pause("limit")
    assert not control.controls
    assert not control.paused
