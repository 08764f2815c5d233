"""A log reader that stops never stops the server (issue 21): real twistd and
twist processes whose standard output is never read, and a --workers
supervisor stopped with SIGSTOP, serve every session, count the log lines
they drop, and stop on SIGTERM within --drain-timeout plus a little."""

from __future__ import annotations

import os
import re
import signal
import socket
import time
import urllib.request
from pathlib import Path

import pytest

from tests.support.processes import ServerProcess, script, start_incproto

# Enough sessions to fill the kernel's pipe and the 64 KiB buffer twice
# over with access lines; before the fix, sessions stopped after about 500.
SESSIONS = 2000
SESSION_TIMEOUT = 5.0
DRAIN_TIMEOUT = 2.0
# What SIGTERM may take beyond --drain-timeout (the interpreter's exit).
STOP_GRACE = 5.0
METRICS = re.compile(
    rb'(?:metrics listening on \S+:|"what": "metrics", "address": "[^"]*", "port": )'
    rb"(\d+)"
)
DROPPED = re.compile(r"^incproto_log_lines_dropped_total(?:\{\})? (\S+)$", re.M)


def session(port: int) -> bytes:
    """One short session: greeting, one message, half-close, everything."""
    with socket.create_connection(("127.0.0.1", port), SESSION_TIMEOUT) as sock:
        sock.settimeout(SESSION_TIMEOUT)
        sock.sendall(b"^ab$")
        sock.shutdown(socket.SHUT_WR)
        received = b""
        while True:
            chunk = sock.recv(64)
            if not chunk:
                return received
            received += chunk


def serve_all(port: int) -> None:
    for number in range(SESSIONS):
        try:
            assert session(port) == b"*bc", f"session {number}"
        except socket.timeout:
            raise AssertionError(f"session {number} of {SESSIONS} timed out") from None


def stop_within(process: ServerProcess, bound: float) -> float:
    """SIGTERM C{process}; fail unless it exits within C{bound} seconds."""
    started = time.monotonic()
    process.process.send_signal(signal.SIGTERM)
    try:
        process.process.wait(bound)
    except Exception:
        process.process.kill()
        process.process.wait()
        raise AssertionError(f"still running {bound} s after SIGTERM") from None
    return time.monotonic() - started


@pytest.mark.parametrize("command", ["twistd", "twist"])
def test_unread_stdout_costs_log_lines_not_sessions(
    command: str, tmp_path: Path
) -> None:
    """
    twistd -n (text) and twist (JSON, not a terminal) log to standard
    output, a pipe read only until the server listens: every session is
    served, the lines that did not fit are counted in /metrics, and SIGTERM
    stops it in bounded time.
    """
    options = [
        "incproto", "--port", "tcp:0:interface=127.0.0.1",
        "--metrics", "tcp:0:interface=127.0.0.1",
        "--drain-timeout", str(DRAIN_TIMEOUT),
    ]  # fmt: skip
    runner = [script("twistd"), "-n", "--pidfile="] if command == "twistd" else []
    argv = (runner or [script("twist")]) + options
    server = ServerProcess(argv, tmp_path, keepReading=False)
    metrics = METRICS.search(server._output)
    assert metrics is not None, server.output
    try:
        serve_all(server.port)
        url = f"http://127.0.0.1:{int(metrics.group(1))}/metrics"
        with urllib.request.urlopen(url, timeout=SESSION_TIMEOUT) as answer:
            text = answer.read().decode()
        dropped = DROPPED.search(text)
        assert dropped is not None and float(dropped.group(1)) > 0, text
    finally:
        stop_within(server, DRAIN_TIMEOUT + STOP_GRACE)


def test_stopped_supervisor_costs_worker_log_lines_not_sessions() -> None:
    """
    --workers 2 with the supervisor stopped (SIGSTOP): the workers' log
    pipes fill, and they go on serving every session; once the supervisor
    runs again, each worker that dropped lines says how many, and SIGTERM
    stops them all in bounded time.
    """
    server = start_incproto("--workers", "2", "--drain-timeout", str(DRAIN_TIMEOUT))
    server.wait_for(re.compile(r"\[worker \d\.\d\] incproto listening"), count=2)
    pid = server.process.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        serve_all(server.port)
    finally:
        os.kill(pid, signal.SIGCONT)
    server.wait_for(
        re.compile(r"\[worker \d\.\d\] \d+ log lines were dropped: the log's reader")
    )
    assert "restarting" not in server.output
    stop_within(server, DRAIN_TIMEOUT + STOP_GRACE + 5)
