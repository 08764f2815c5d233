"""Tests for incproto._kernel.sdnotify: what is sent to systemd and when, on
a fake datagram socket and task.Clock.  (A real AF_UNIX datagram socket:
tests/integration/test_sdnotify.py.)"""

from __future__ import annotations

import socket
from typing import Any, List, Optional, Tuple

import pytest
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import Logger

from incproto._kernel.sdnotify import SystemdNotifier, notify_address, watchdog_interval
from incproto.tap import Options, makeService


class FakeDatagrams:
    """A socket factory whose sockets record what they send."""

    def __init__(self, error: Optional[OSError] = None) -> None:
        self.sent: List[Tuple[bytes, str]] = []
        self.kinds: List[Tuple[int, int]] = []
        self.closed = 0
        self.error = error

    def __call__(self, family: int, kind: int) -> Any:
        self.kinds.append((family, kind))
        return self

    def sendto(self, data: bytes, address: str) -> None:
        if self.error is not None:
            raise self.error
        self.sent.append((data, address))

    def close(self) -> None:
        self.closed += 1


def test_the_address_and_the_abstract_namespace() -> None:
    assert notify_address({}) is None
    assert notify_address({"NOTIFY_SOCKET": ""}) is None
    assert (
        notify_address({"NOTIFY_SOCKET": "/run/systemd/notify"})
        == "/run/systemd/notify"
    )
    assert notify_address({"NOTIFY_SOCKET": "@sd/notify"}) == "\0sd/notify"


@pytest.mark.parametrize(
    "environ, interval",
    [({}, None), ({"WATCHDOG_USEC": "0"}, None), ({"WATCHDOG_USEC": "x"}, None),
     ({"WATCHDOG_USEC": "10000000"}, 5.0),
     ({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "42"}, 5.0),
     ({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "43"}, None)],
)  # fmt: skip
def test_the_watchdog_interval_is_half_of_watchdog_usec(
    environ: Any, interval: Optional[float]
) -> None:
    assert watchdog_interval(environ, 42) == interval


def test_ready_watchdog_pings_and_stopping() -> None:
    clock = Clock()
    datagrams = FakeDatagrams()
    environ = {"NOTIFY_SOCKET": "@notify", "WATCHDOG_USEC": "4000000"}
    notifier = SystemdNotifier(clock, environ, pid=1, socketFactory=datagrams)
    notifier.startService()
    assert [data for data, _ in datagrams.sent] == [b"READY=1", b"WATCHDOG=1"]
    clock.advance(2.0)
    clock.advance(2.0)
    notifier.stopService()
    clock.advance(10.0)
    assert [data for data, _ in datagrams.sent] == [
        b"READY=1", b"WATCHDOG=1", b"WATCHDOG=1", b"WATCHDOG=1", b"STOPPING=1",
    ]  # fmt: skip
    assert {address for _, address in datagrams.sent} == {"\0notify"}
    assert set(datagrams.kinds) == {(socket.AF_UNIX, socket.SOCK_DGRAM)}
    assert datagrams.closed == 5


def test_no_pings_without_a_watchdog_and_nothing_outside_systemd() -> None:
    clock = Clock()
    datagrams = FakeDatagrams()
    notifier = SystemdNotifier(clock, {"NOTIFY_SOCKET": "/n"}, 1, datagrams)
    notifier.startService()
    clock.advance(60)
    notifier.stopService()
    assert [data for data, _ in datagrams.sent] == [b"READY=1", b"STOPPING=1"]
    outside = FakeDatagrams()
    notifier = SystemdNotifier(clock, {"WATCHDOG_USEC": "1000"}, 1, outside)
    notifier.startService()
    clock.advance(60)
    notifier.stopService()
    assert outside.kinds == [] and not clock.getDelayedCalls()


def test_a_failed_notification_is_logged_not_raised() -> None:
    events: List[Any] = []
    notifier = SystemdNotifier(
        Clock(),
        {"NOTIFY_SOCKET": "/n"},
        1,
        FakeDatagrams(ConnectionRefusedError(111, "refused")),
    )
    notifier.log = Logger(observer=events.append)  # type: ignore[arg-type]
    notifier.startService()
    assert "cannot notify systemd" in events[0]["log_format"]
    assert events[0]["state"] == "READY=1"


@pytest.mark.parametrize("workers", [[], ["--workers", "2"]])
def test_ready_after_listening_and_stopping_first(workers: List[str]) -> None:
    """In the stack (and the supervisor's) the notifier starts after the
    listener and stops before anything else."""
    service = makeService(
        Options.parse(["--port", "tcp:0", *workers]), MemoryReactorClock()
    )
    children = list(service)
    assert children[-1].name == "systemd"
    listener = "workers" if workers else "incproto"
    names = [child.name for child in children]
    assert names.index(listener) < names.index("systemd")
