"""Faults inside the server, on real twistd processes: pool processes
killed mid-job, handlers that never return, a killed server or supervisor,
and every stop signal.  Each fault must cost only the connections it hit:
no other client hangs or is reset, no process is left behind."""

from __future__ import annotations

import os
import re
import signal
import socket
from pathlib import Path
from typing import List

import pytest

from incproto._kernel.poolprocess import _parent_of
from tests.support.faulty import NEVER_RETURNS
from tests.support.fleet import SessionLoop
from tests.support.processes import (
    TIMEOUT,
    ServerProcess,
    connect,
    descendants,
    receive_all,
    receive_exactly,
    script,
    signal_mid_message,
    start_incproto,
    wait_gone,
    wait_until,
)

FAULTY = ["--handler", "tests.support.faulty:faulty"]
WORKER_LISTENING = re.compile(r"\[worker \d+\.(\d+)\] incproto listening")
OLD_WORKER_GONE = re.compile(r"old worker \d+\.(\d+) (?:exited|was killed)")
MiB = 1024 * 1024
STARTED_NEVER_RETURNS = re.compile(
    re.escape(NEVER_RETURNS).replace(r"\{pid\}", r"(\d+)")
)


def served(port: int) -> bytes:
    """One client's round trip: the greeting and C{^abc$}'s reply."""
    with connect(port) as sock:
        sock.sendall(b"^abc$")
        reply = receive_exactly(sock, 4)
        sock.shutdown(socket.SHUT_WR)
        return reply + receive_all(sock)


def closed_with(port: int, payload: bytes) -> bytes:
    """Send C{payload}; return what arrives until the server closes (a
    reset raises ConnectionResetError)."""
    with connect(port) as sock:
        sock.sendall(payload)
        return receive_all(sock)


def test_killed_pool_processes_cost_only_their_connections() -> None:
    """
    Six clients whose jobs kill the process running them (more deaths than
    the pool has processes or backlog slots): each is closed cleanly, the
    reason logged and counted, and the clients after them are served.
    """
    server = start_incproto("--processes", "2", *FAULTY)
    try:
        for _ in range(6):
            assert closed_with(server.port, b"^!") == b"*"
        for _ in range(3):
            assert served(server.port) == b"*bcd"
        server.wait_for(re.compile(r"closed \((pool process lost)\)"), 6)
        children = descendants(server.process.pid)
    finally:
        status = server.stop()
    assert status == -signal.SIGTERM
    wait_gone(children, "a pool process")
    assert "Traceback" not in server.output


@pytest.mark.parametrize("pool", ["--processes", "--threads"])
def test_stuck_handlers_are_cut_off(pool: str) -> None:
    """
    Two handler calls that never return, in a pool of two: other clients
    are served meanwhile, the stuck ones are closed after --handler-timeout,
    and the server still stops promptly.
    """
    server = start_incproto(pool, "2", "--handler-timeout", "1", *FAULTY)
    try:
        stuck = [connect(server.port) for _ in range(2)]
        for sock in stuck:
            assert receive_exactly(sock, 1) == b"*"
            sock.sendall(b"^~")
        assert served(server.port) == b"*bcd"
        for sock in stuck:
            assert receive_all(sock) == b""
            sock.close()
        server.wait_for(re.compile(r"closed \((handler timeout)\)"), 2)
        assert served(server.port) == b"*bcd"
    finally:
        status = server.stop()
    assert status == -signal.SIGTERM
    assert "Traceback" not in server.output


def forkserver_of(server: ServerProcess) -> int:
    """The pid of the forkserver of a server's process pool."""
    for pid in descendants(server.process.pid):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"multiprocessing.forkserver" in command:
            return pid
    raise AssertionError("the server has no forkserver")


def pool_processes(server: ServerProcess) -> List[int]:
    """The server's pool processes: the forkserver's children."""
    forkserver = forkserver_of(server)
    return [pid for pid in descendants(forkserver) if _parent_of(pid) == forkserver]


@pytest.mark.parametrize("busy", [False, True], ids=["idle", "busy"])
def test_a_killed_server_leaves_no_pool_process(busy: bool) -> None:
    """
    kill -9 of the server: its pool processes go too, the forkserver they
    were forked by and, with C{busy}, one held in a handler that never
    returns (it reads no pipe that could tell it the server is gone).
    """
    server = start_incproto("--processes", "2", *FAULTY)
    assert served(server.port) == b"*bcd"
    stuck = connect(server.port)
    if busy:
        assert receive_exactly(stuck, 1) == b"*"
        stuck.sendall(b"^~")
    children = descendants(server.process.pid)
    assert len(children) >= 3  # the forkserver and its 2 processes
    server.process.kill()
    server.process.wait(TIMEOUT)
    stuck.close()
    wait_gone(children, "a pool process or the forkserver")


def test_pool_processes_are_forked_by_a_forkserver_and_die_with_it() -> None:
    """
    A pool process, and each that replaces a dead one, is forked by a
    forkserver that has imported what it needs (a few milliseconds, where a
    spawned one took 0.22 s of CPU: five clients that kill pool processes
    once a second took most of a 2-core machine; issue 21).  A forkserver
    killed with its processes, even one busy in a handler, takes them
    along, and the next job starts a new one.
    """
    server = start_incproto("--processes", "2", *FAULTY)
    try:
        assert served(server.port) == b"*bcd"
        forkserver = forkserver_of(server)
        assert _parent_of(forkserver) == server.process.pid
        first = pool_processes(server)
        assert len(first) == 2
        assert closed_with(server.port, b"^!") == b"*"
        assert served(server.port) == b"*bcd"
        wait_until(lambda: len(pool_processes(server)) == 2, "a replacement")
        assert forkserver_of(server) == forkserver  # forked, not spawned
        stuck = connect(server.port)
        assert receive_exactly(stuck, 1) == b"*"
        stuck.sendall(b"^~")
        [(busy,)] = server.wait_for(STARTED_NEVER_RETURNS)
        assert int(busy) in pool_processes(server)
        held = descendants(forkserver)
        os.kill(forkserver, signal.SIGKILL)
        wait_gone(held, "a pool process of a killed forkserver")
        assert receive_all(stuck) == b""  # its job failed: a FIN
        stuck.close()
        assert served(server.port) == b"*bcd"
        assert forkserver_of(server) != forkserver
        server.wait_for(re.compile(r"closed \((pool process lost)\)"), 2)
    finally:
        status = server.stop()
    assert status == -signal.SIGTERM
    assert "Traceback" not in server.output


def test_a_killed_supervisor_takes_its_workers_with_it(tmp_path: Path) -> None:
    """
    SIGKILL of the --workers supervisor: its workers drain (a connected
    client gets its replies and a FIN, not a reset) and exit, so the port
    is free again.
    """
    server = ServerProcess(
        [script("twistd"), "-n", "--pidfile=", "incproto", "--workers", "2",
         "--port", "tcp:0:interface=127.0.0.1"],
        tmp_path,
    )  # fmt: skip
    server.wait_for(WORKER_LISTENING, 2)
    with connect(server.port) as sock:
        assert receive_exactly(sock, 1) == b"*"
        workers = descendants(server.process.pid)
        server.process.kill()
        server.process.wait(TIMEOUT)
        sock.sendall(b"^abc$")
        assert receive_all(sock) in (b"bcd", b"")  # drained: FIN, not reset
    wait_gone(workers, "a worker")
    with socket.socket() as again:
        # As Twisted does: a closed connection's TIME_WAIT does not count,
        # a listener still open would.
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", server.port))
        again.listen()


def test_sighup_drains_a_single_server() -> None:
    """
    SIGHUP stops one server as gracefully as SIGTERM: a client streaming a
    long message gets a correct prefix of its replies and a FIN.
    """
    server = start_incproto("--drain-timeout", "10")
    received = signal_mid_message(server, signal.SIGHUP, after=1 + MiB)
    status = server.process.wait(TIMEOUT)
    server.stop()
    assert received[:1] == b"*" and received.count(b"b") == len(received) - 1
    assert status == -signal.SIGHUP
    assert "closed (shutdown)" in server.output
    assert "Traceback" not in server.output


@pytest.mark.parametrize("options", [[], ["--workers", "2"]])
def test_repeated_stop_signals_are_quiet(options: List[str]) -> None:
    """
    SIGTERM, then SIGTERM and SIGINT again while a connection drains: one
    line each, no ReactorNotRunning traceback, and the drain completes.
    """
    server = start_incproto(*options)
    if options:
        server.wait_for(WORKER_LISTENING, 2)
    with connect(server.port) as sock:
        assert receive_exactly(sock, 1) == b"*"
        sock.sendall(b"^ab")
        assert receive_exactly(sock, 2) == b"bc"
        server.process.send_signal(signal.SIGTERM)
        server.wait_for(re.compile(r"(draining) 1 connection\b"))
        server.process.send_signal(signal.SIGTERM)
        server.process.send_signal(signal.SIGINT)
        server.wait_for(re.compile(r"received (SIG\w+) while stopping"), 2)
        assert receive_all(sock) == b""
    status = server.process.wait(TIMEOUT)
    server.stop()
    assert status == -signal.SIGTERM
    assert "Traceback" not in server.output
    assert "ReactorNotRunning" not in server.output


def test_sighup_reloads_workers_without_resetting_clients() -> None:
    """
    With --workers, SIGHUP starts new workers and retires the old ones: a
    client of an old worker finishes its session there (every reply, then
    a FIN once it half-closes), new clients are served throughout, and the
    supervisor keeps running.
    """
    server = start_incproto("--workers", "2")
    server.wait_for(WORKER_LISTENING, 2)
    old = descendants(server.process.pid)
    try:
        with connect(server.port) as sock:
            assert receive_exactly(sock, 1) == b"*"
            sock.sendall(b"^ab")
            assert receive_exactly(sock, 2) == b"bc"
            server.process.send_signal(signal.SIGHUP)
            server.wait_for(WORKER_LISTENING, 4)
            assert served(server.port) == b"*bcd"
            sock.sendall(b"cd$")
            sock.shutdown(socket.SHUT_WR)
            assert receive_all(sock) == b"de"  # the session ran to its end
        server.wait_for(OLD_WORKER_GONE, 2)
        wait_gone(old, "an old worker")
        assert served(server.port) == b"*bcd"
        assert server.process.poll() is None
    finally:
        status = server.stop()
    assert status == -signal.SIGTERM
    assert "Traceback" not in server.output


def test_the_drain_timeout_bounds_the_whole_stop() -> None:
    """
    A connection whose handler call never returns holds the drain for the
    whole --drain-timeout; the pool is then stopped at once, not given a
    second timeout of its own.
    """
    server = start_incproto("--processes", "1", "--drain-timeout", "2", *FAULTY)
    with connect(server.port) as sock:
        assert receive_exactly(sock, 1) == b"*"
        sock.sendall(b"^~")
        server.process.send_signal(signal.SIGTERM)
        server.wait_for(re.compile(r"(aborting) 1 connection\b"))
        status = server.process.wait(TIMEOUT)
    server.stop()
    assert status == -signal.SIGTERM
    [(left,)] = server.wait_for(re.compile(r"unfinished after ([0-9.]+)s"))
    assert float(left) < 1.0


def test_sighup_reload_of_workers_fails_no_session() -> None:
    """
    SIGHUP to a --workers supervisor, twice, under a loop of series
    sessions: the old workers stop accepting and let their sessions end, so
    not one session fails, and every worker is a new process after.
    """
    server = start_incproto("--workers", "2", "--no-connection-log")
    try:
        server.wait_for(WORKER_LISTENING, 2)
        first = set(descendants(server.process.pid))
        loop = SessionLoop(server.port).start()
        loop.wait_for(50)
        for reloads in (1, 2):
            server.process.send_signal(signal.SIGHUP)
            server.wait_for(OLD_WORKER_GONE, 2 * reloads)
            loop.wait_for(50)
        sessions = loop.stop()
        assert [s.error for s in sessions if s.error] == []
        assert not first & set(descendants(server.process.pid))
    finally:
        server.stop()
