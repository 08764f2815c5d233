"""incproto._kernel.sdnotify over a real AF_UNIX datagram socket, as systemd
listens for notifications: a path, and the abstract namespace ('@')."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Iterator

import pytest
from twisted.internet.task import Clock

from incproto._kernel.sdnotify import SystemdNotifier


@pytest.fixture(params=["path", "abstract"])
def listener(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[socket.socket, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if request.param == "path":
        name = str(tmp_path / "notify")
        sock.bind(name)
    else:
        name = f"@incproto-test-{os.getpid()}-{id(sock)}"
        sock.bind("\0" + name[1:])
    sock.settimeout(5.0)
    yield sock, name
    sock.close()


def test_ready_watchdog_and_stopping_reach_the_socket(
    listener: tuple[socket.socket, str],
) -> None:
    sock, name = listener
    environ = {"NOTIFY_SOCKET": name, "WATCHDOG_USEC": "2000000"}
    clock = Clock()
    notifier = SystemdNotifier(clock, environ, pid=os.getpid())
    notifier.startService()
    clock.advance(1.0)
    notifier.stopService()
    received = [sock.recv(64) for _ in range(4)]
    assert received == [b"READY=1", b"WATCHDOG=1", b"WATCHDOG=1", b"STOPPING=1"]
