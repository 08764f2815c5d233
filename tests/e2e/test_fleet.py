"""A fleet behind HAProxy, proven with the real tools: failover when a
backend dies, and a rolling restart that fails no session."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import List

import pytest

from tests.support.fleet import (
    SessionLoop,
    admin_command,
    fleet_config,
    free_port,
    server_states,
    start_haproxy,
)
from tests.support.processes import (
    TIMEOUT,
    ServerProcess,
    connect,
    receive_all,
    receive_exactly,
    script,
)
from tests.support.restart_backend import stop as stop_backend

pytestmark = pytest.mark.skipif(not shutil.which("haproxy"), reason="needs haproxy")

TWISTD = [script("twistd"), "-n", "--pidfile=", "incproto"]
ADDRESSES = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
# The shipped checks: every 1 s, down after 2 failures, 2 s check timeout.
CHECK_INTER, CHECK_FALL = 1.0, 2


def test_failover_when_a_backend_is_killed(tmp_path: Path) -> None:
    """
    Three backends on 127.0.0.2-4 behind the shipped HAProxy configuration,
    under a steady loop of series sessions; kill -9 one: only the sessions
    on it fail, HAProxy marks it down within its checks' interval x fall,
    and every session started after the kill succeeds.
    """
    started: List[ServerProcess] = []
    try:
        for address in ADDRESSES:
            started.append(
                ServerProcess(
                    [*TWISTD, "--port", f"haproxy:tcp:0:interface={address}"],
                    tmp_path,
                )
            )
        backends = list(started)
        admin = tmp_path / "admin"
        config = tmp_path / "haproxy.cfg"
        port = free_port()
        config.write_text(
            fleet_config(
                port, [(a, b.port) for a, b in zip(ADDRESSES, backends)], admin
            )
        )
        haproxy = start_haproxy(config, tmp_path)
        started.append(haproxy)
        assert server_states(admin) == {"a": 2, "b": 2, "c": 2}

        # One session held open on each backend (round robin), half done.
        held = [connect(port) for _ in ADDRESSES]
        for sock in held:
            assert receive_exactly(sock, 1) == b"*"
            sock.sendall(b"^abc")
            assert receive_exactly(sock, 3) == b"bcd"

        loop = SessionLoop(port).start()
        loop.wait_for(100)
        killed_at = time.monotonic()
        backends[2].process.kill()
        backends[2].process.wait(TIMEOUT)
        # Connections its kernel accepted before it died were on it too.
        dead_at = time.monotonic()
        haproxy.wait_for(re.compile(r"Server incproto/c is DOWN"))
        marked_down = time.monotonic() - killed_at
        loop.wait_for(200)
        sessions = loop.stop()

        finished = []
        for sock in held:
            try:
                sock.sendall(b"d$")
                sock.shutdown(2 - 1)  # SHUT_WR
                finished.append(receive_all(sock))
            except OSError as e:
                finished.append(repr(e).encode())
            sock.close()
        assert server_states(admin) == {"a": 2, "b": 2, "c": 0}
    finally:
        for process in reversed(started):
            if process.process.poll() is None:
                process.stop()

    failed = [s for s in sessions if s.error is not None]
    after_kill = [s for s in sessions if s.started > dead_at]
    print(
        f"\nfailover: {len(sessions)} loop sessions, {len(failed)} failed "
        f"({[s.error for s in failed]}), {len(after_kill)} started after the "
        f"kill, all fine; held: {finished}; "
        f"marked down {marked_down:.2f} s after kill -9"
    )
    # Only the sessions on the killed backend fail: those in flight on it
    # between the kill and its death (none ended before the kill, none
    # started after its death), and exactly one of the three held sessions.
    assert all(killed_at <= s.ended and s.started < dead_at for s in failed)
    assert len(after_kill) >= 200 and all(s.error is None for s in after_kill)
    assert sorted(finished).count(b"e") == 2, finished
    assert marked_down <= CHECK_INTER * CHECK_FALL + 1.0, marked_down


ROLLING_RESTART = (
    Path(__file__).resolve().parent.parent.parent
    / "docs"
    / "deploy"
    / "rolling-restart.py"
)
RESTART_BACKEND = (
    Path(__file__).resolve().parent.parent / "support" / "restart_backend.py"
)


def port_free_on_all(addresses: List[str]) -> int:
    """A port number free on every one of C{addresses} (bounded tries)."""
    for _ in range(100):
        port = free_port(addresses[0])
        try:
            for address in addresses[1:]:
                with socket.socket() as probe:
                    probe.bind((address, port))
        except OSError:
            continue
        return port
    raise AssertionError("no port free on all of " + ", ".join(addresses))


def test_rolling_restart_fails_no_session(tmp_path: Path) -> None:
    """
    docs/deploy/rolling-restart.py, run as shipped, restarts three
    daemonized backends one at a time (drain over the admin socket, no
    sessions, SIGTERM, start, /healthz and HAProxy's check, ready) while a
    loop of series sessions runs through HAProxy: not one session fails,
    every backend is a new process, and all are up and ready after.
    """
    ports = [free_port(address) for address in ADDRESSES]
    metrics = port_free_on_all(ADDRESSES)
    restart = (
        f"{sys.executable} {RESTART_BACKEND} {tmp_path}/{{server}} "
        f"{{address}} {{port}} {metrics}"
    )
    names = ["a", "b", "c"]
    pidfiles = [tmp_path / f"{name}.pid" for name in names]
    started: List[ServerProcess] = []
    loop = None
    try:
        for name, address, port in zip(names, ADDRESSES, ports):
            command = restart.format(server=name, address=address, port=port)
            assert subprocess.run(command, shell=True, timeout=TIMEOUT).returncode == 0
        before = [int(pidfile.read_text()) for pidfile in pidfiles]
        admin = tmp_path / "admin"
        config = tmp_path / "haproxy.cfg"
        port = free_port()
        config.write_text(fleet_config(port, list(zip(ADDRESSES, ports)), admin))
        started.append(start_haproxy(config, tmp_path))
        assert server_states(admin) == {"a": 2, "b": 2, "c": 2}

        loop = SessionLoop(port).start()
        loop.wait_for(50)
        rolled = subprocess.run(
            [sys.executable, str(ROLLING_RESTART), "--socket", str(admin),
             "--restart", restart,
             "--health", f"http://{{address}}:{metrics}/healthz"],
            capture_output=True, text=True, timeout=4 * TIMEOUT,
        )  # fmt: skip
        loop.wait_for(50)
        sessions = loop.stop()
        after = [int(pidfile.read_text()) for pidfile in pidfiles]
        states = admin_command(admin, "show servers state incproto")
    finally:
        if loop is not None:
            loop.stop()
        for pidfile in pidfiles:
            stop_backend(pidfile)
        for process in started:
            process.stop()
    print(f"\nrolling restart: {len(sessions)} sessions, output:\n{rolled.stdout}")
    assert rolled.returncode == 0, rolled.stdout + rolled.stderr
    for name in names:
        assert f"incproto/{name}: drain\n" in rolled.stdout
        assert f"incproto/{name}: healthy; ready\n" in rolled.stdout
    assert "restarted 3 servers" in rolled.stdout
    failed = [s.error for s in sessions if s.error is not None]
    assert failed == [] and len(sessions) >= 100, failed
    assert all(old != new for old, new in zip(before, after)), (before, after)
    # Every server up (op state 2) and ready again (admin state 0).
    rows = [line.split() for line in states.splitlines() if " incproto " in line]
    assert sorted((row[3], row[5], row[6]) for row in rows) == [
        ("a", "2", "0"), ("b", "2", "0"), ("c", "2", "0")
    ]  # fmt: skip
