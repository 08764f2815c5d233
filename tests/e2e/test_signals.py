"""Signals an operator sends by habit, to a real twistd, one process and a
--workers supervisor (issue 21): USR1, USR2, ALRM, TTIN, TTOU and WINCH
leave the port serving; QUIT is a graceful stop; USR1 after a rename makes
new access lines go to a new file; HUP's stop says SIGHUP (issue 25).

Each check waits, bounded, for the log line that says the signal was
handled before it looks at the port: a signal's effect is asynchronous, and
under --workers the port is served by other processes than the one
signalled."""

from __future__ import annotations

import re
import signal
import threading
import time
from pathlib import Path
from typing import List

import pytest

from tests.support.processes import (
    TIMEOUT,
    ServerProcess,
    connect,
    half_close_round_trip,
    start_incproto,
)

HABITUAL = [
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGALRM,
    signal.SIGTTIN,
    signal.SIGTTOU,
    signal.SIGWINCH,
]
WORKER_LISTENING = re.compile(r"\[worker \d\.\d\] incproto listening")
MODES = {"one process": [], "--workers 2": ["--workers", "2"]}


def started(*options: str, cwd: Path = Path("/tmp")) -> ServerProcess:
    """A server that serves, its reactor (or under --workers, each worker's
    and the supervisor's, which relays their lines) running."""
    server = start_incproto(*options, cwd=cwd)
    if "--workers" in options:
        server.wait_for(WORKER_LISTENING, count=2)
    assert half_close_round_trip(server.port, b"^ab$") == b"*bc"
    return server


def handled(signum: int) -> re.Pattern[str]:
    """The line the signalled process logs once it has handled C{signum}."""
    name = signal.Signals(signum).name
    return re.compile(rf"\] received {name}: ")


@pytest.mark.parametrize("mode", MODES)
def test_habitual_signals_leave_the_port_serving(mode: str) -> None:
    server = started(*MODES[mode])
    try:
        for signum in HABITUAL:
            seen = len(handled(signum).findall(server.output))
            server.process.send_signal(signum)
            server.wait_for(handled(signum), count=seen + 1)
            assert server.process.poll() is None, server.output
            assert half_close_round_trip(server.port, b"^ab$") == b"*bc"
        if mode != "one process":
            # SIGUSR1 went on to both workers, which survived it.
            server.wait_for(re.compile(r"\[worker \d\.\d\] received SIGUSR1"), count=2)
            assert "restarting" not in server.output
    finally:
        status = server.stop()
    assert status == -signal.SIGTERM, server.output


@pytest.mark.parametrize("mode", MODES)
def test_sigquit_is_a_graceful_stop(mode: str) -> None:
    """SIGQUIT drains like SIGTERM: a session under way gets its replies
    and a FIN; the process exits 0 (re-raising SIGQUIT would dump core)."""
    server = started(*MODES[mode], "--drain-timeout", "5")
    sock = connect(server.port)
    assert sock.recv(1) == b"*"
    sock.sendall(b"^ab")
    assert sock.recv(2) == b"bc"
    server.process.send_signal(signal.SIGQUIT)
    server.wait_for(re.compile(r"received SIGQUIT: stopping gracefully"))
    received: List[bytes] = []
    while True:
        chunk = sock.recv(64)
        if not chunk:
            break
        received.append(chunk)
    sock.close()
    assert server.process.wait(TIMEOUT) == 0, server.output


@pytest.mark.parametrize("gap", [0.0, 0.02, 0.05, 0.1])
def test_a_second_sigquit_as_it_exits_changes_nothing(gap: float) -> None:
    """A second SIGQUIT a moment after the first, while the process exits
    (when the interpreter gives signals their default actions back): still
    exit 0, not death by SIGQUIT (it dumped core, 6 times of 6)."""
    server = started()
    server.process.send_signal(signal.SIGQUIT)
    server.wait_for(re.compile(r"received SIGQUIT: stopping gracefully"))
    threading.Event().wait(gap)  # the fault: a second signal, just after
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGQUIT)
    assert server.process.wait(TIMEOUT) == 0, server.output
    server.stop()


def test_sighup_stop_names_sighup(tmp_path: Path) -> None:
    """After SIGHUP, one process says SIGHUP, not "Received SIGTERM"."""
    server = started(cwd=tmp_path)
    server.process.send_signal(signal.SIGHUP)
    assert server.process.wait(TIMEOUT) == -signal.SIGHUP
    server.stop()
    assert "received SIGHUP: stopping gracefully, as for SIGTERM" in server.output
    assert "Received SIGTERM" not in server.output


def written(path: Path, text: str) -> None:
    """
    Wait until C{text} is in the file at C{path} (the access log writes
    within a second), checking every 50 ms; fail after the usual timeout.
    """
    deadline = time.monotonic() + TIMEOUT
    pause = threading.Event()
    while text not in path.read_text():
        assert time.monotonic() < deadline, f"{text!r} not written to {path}"
        pause.wait(0.05)


def peer_of(sock_port: int) -> str:
    return f"connection from 127.0.0.1:{sock_port} closed"


def session_port(port: int) -> int:
    """Serve one session; return the client's port (its access line)."""
    sock = connect(port)
    local = int(sock.getsockname()[1])
    sock.sendall(b"^ab$")
    sock.shutdown(1)
    while sock.recv(64):
        pass
    sock.close()
    return local


@pytest.mark.parametrize("mode", MODES)
def test_sigusr1_after_a_rename_writes_a_new_file(mode: str, tmp_path: Path) -> None:
    """logrotate's rename then postrotate SIGUSR1: lines of sessions before
    go to the renamed file, lines after to a new file of the name."""
    path = tmp_path / "access.log"
    server = started(*MODES[mode], "--access-log", str(path), cwd=tmp_path)
    before = session_port(server.port)
    written(path, peer_of(before))
    rotated = tmp_path / "access.log.1"
    path.rename(rotated)
    server.process.send_signal(signal.SIGUSR1)
    if mode == "one process":
        server.wait_for(re.compile(r"received SIGUSR1: reopened the access log"))
    else:
        server.wait_for(
            re.compile(r"\[worker \d\.\d\] received SIGUSR1: reopened the access log"),
            count=2,
        )
    after = session_port(server.port)
    server.stop()
    old, new = rotated.read_text(), path.read_text()
    assert peer_of(before) in old and peer_of(after) not in old, old
    assert peer_of(after) in new and peer_of(before) not in new, new
