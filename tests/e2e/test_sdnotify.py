"""Type=notify on real twistd processes: the test plays systemd's
notification socket ($NOTIFY_SOCKET, $WATCHDOG_USEC) and reads what the
server sends: READY=1 once it listens, WATCHDOG=1 pings, STOPPING=1 on
SIGTERM; under --workers, from the supervisor only."""

from __future__ import annotations

import signal
import socket
from pathlib import Path
from typing import List

import pytest

from tests.support.processes import TIMEOUT, start_incproto

# Linux's value; PyPy 3.9's socket module does not name it.
SO_PASSCRED = getattr(socket, "SO_PASSCRED", 16)


@pytest.mark.parametrize("options", [[], ["--workers", "2"]])
def test_ready_watchdog_and_stopping(
    options: List[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    address = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as systemd:
        systemd.bind(address)
        systemd.setsockopt(socket.SOL_SOCKET, SO_PASSCRED, 1)
        systemd.settimeout(TIMEOUT)
        monkeypatch.setenv("NOTIFY_SOCKET", address)
        monkeypatch.setenv("WATCHDOG_USEC", "400000")  # a ping every 0.2 s
        server = start_incproto(*options)
        pid = server.process.pid

        def receive() -> bytes:
            data, ancillary, _, _ = systemd.recvmsg(64, socket.CMSG_SPACE(12))
            [(_, _, credentials)] = ancillary
            sender = int.from_bytes(credentials[:4], "little")
            assert sender == pid, "only the main process notifies"
            return bytes(data)

        assert receive() == b"READY=1"  # after "listening", which start awaited
        assert [receive() for _ in range(3)] == [b"WATCHDOG=1"] * 3
        server.process.send_signal(signal.SIGTERM)
        states = [receive()]
        while states[-1] == b"WATCHDOG=1":
            states.append(receive())
        assert states[-1] == b"STOPPING=1"
        assert server.stop() == -signal.SIGTERM
