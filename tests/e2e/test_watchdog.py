"""--watchdog on real twistd processes: a worker whose reactor is stuck in a
handler is killed, replaced and counted by its supervisor, and the clients
after it are served; one process whose reactor is stuck, or was stopped,
aborts itself (SIGABRT) for its own supervisor to restart."""

from __future__ import annotations

import os
import re
import signal
import socket
import threading
import time
import urllib.error
import urllib.request
from typing import List

from tests.support.processes import (
    TIMEOUT,
    connect,
    receive_all,
    receive_exactly,
    start_incproto,
)

FAULTY = ["--handler", "tests.support.faulty:faulty"]
WORKER_LISTENING = re.compile(r"\[worker \d\.(\d)\] incproto listening")
METRICS_LISTENING = re.compile(r"metrics listening on 127\.0\.0\.1:(\d+)")
KILLED = re.compile(r"worker \d\.(\d) \(pid \d+\) has not answered for ([0-9.]+) s")
RESUMED = re.compile(r"the reactor did not turn for ([0-9.]+) s \(--watchdog 1\)")
ABORTED = re.compile(r"the reactor has not turned for ([0-9.]+) s \(--watchdog 1\)")


def served(port: int, timeout: float) -> bool:
    """Whether one session (greeting, C{^abc$}'s reply) completes in time."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(b"^abc$")
            return receive_exactly(sock, 4) == b"*bcd"
    except OSError:
        return False


def ended(sock: socket.socket) -> bool:
    """Whether the server closed C{sock} (a FIN or a reset), in time."""
    try:
        receive_all(sock)
    except ConnectionResetError:
        pass
    return True


def scrape(port: int, path: str = "/metrics") -> str:
    url = f"http://127.0.0.1:{port}{path}"
    with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
        return str(response.read().decode())


def test_stalled_workers_are_killed_replaced_and_counted() -> None:
    """
    Two payloads whose handler never returns wedge the reactors of both
    workers (0 of 12 later sessions were served, and /healthz said 200):
    within --watchdog the supervisor kills each, says why, starts a new
    one and counts it, and then 12 sessions in a row are served.
    """
    server = start_incproto(
        "--workers", "2", "--watchdog", "2", "--no-connection-log",
        "--metrics", "tcp:0:interface=127.0.0.1", *FAULTY,
    )  # fmt: skip
    wedging: List[socket.socket] = []
    try:
        server.wait_for(WORKER_LISTENING, 2)
        [(metrics,)] = server.wait_for(METRICS_LISTENING)
        for _ in range(2):
            sock = connect(server.port)
            sock.sendall(b"^~")
            wedging.append(sock)
        server.wait_for(KILLED)
        deadline = time.monotonic() + TIMEOUT
        in_a_row = 0
        while in_a_row < 12:
            assert time.monotonic() < deadline, "12 sessions in a row never served"
            in_a_row = in_a_row + 1 if served(server.port, 3.0) else 0
        for sock in wedging:  # closed with their worker, not left hanging
            assert ended(sock)
        # Every wedged worker is gone now (both payloads may have wedged one
        # worker, or one each): count the kills only now, or a second kill
        # after the count would make the counter disagree.
        text = scrape(int(metrics))
        kills = server.wait_for(KILLED)
        assert all(2.0 <= float(lag) < 10.0 for _, lag in kills), kills
        server.wait_for(WORKER_LISTENING, 2 + len(kills))
        assert (
            f'incproto_workers_replaced_total{{reason="stalled"}} {len(kills)}.0'
            in text
        )
        assert 'incproto_workers_replaced_total{reason="crashed"} 0.0' in text
        assert 'incproto_worker_up{worker="1"} 1.0' in text
        assert 'incproto_worker_up{worker="2"} 1.0' in text
        assert scrape(int(metrics), "/livez") == "ok\n"
    finally:
        for sock in wedging:
            sock.close()
        status = server.stop()
    assert status == -signal.SIGTERM
    assert "starting a new one" in server.output
    assert "Traceback" not in server.output


def test_a_scrape_answers_in_time_without_a_stopped_worker() -> None:
    """A SIGSTOPped worker (each scrape took 5 s): the scrape answers
    within 2 s and marks the worker missing."""
    server = start_incproto("--workers", "2", "--metrics", "tcp:0:interface=127.0.0.1")
    try:
        server.wait_for(WORKER_LISTENING, 2)
        [(metrics,)] = server.wait_for(METRICS_LISTENING)
        [(pid,)] = server.wait_for(re.compile(r"worker 1\.2 started \(pid (\d+)\)"))
        os.kill(int(pid), signal.SIGSTOP)
        try:
            started = time.monotonic()
            text = scrape(int(metrics))
            took = time.monotonic() - started
        finally:
            os.kill(int(pid), signal.SIGCONT)
    finally:
        server.stop()
    assert took < 3.0
    assert 'incproto_worker_up{worker="1"} 1.0' in text
    assert 'incproto_worker_up{worker="2"} 0.0' in text


def test_a_process_whose_reactor_is_stuck_aborts() -> None:
    """One process, an inline handler that never returns: within about
    --watchdog seconds it writes why and where (every thread's stack) and
    ends with SIGABRT.  The access log's lines that waited for their flush
    (a session closed just before the stall) are written first."""
    server = start_incproto("--watchdog", "1", *FAULTY)
    with connect(server.port) as sock:
        sock.sendall(b"^ab$")
        sock.shutdown(socket.SHUT_WR)
        assert receive_all(sock) == b"*bc"
        port = sock.getsockname()[1]
    with connect(server.port) as sock:
        sock.sendall(b"^~")
        status = server.process.wait(TIMEOUT)
    server.stop()
    assert status == -signal.SIGABRT
    [(lag,)] = server.wait_for(ABORTED)
    assert 1.0 <= float(lag) < 5.0
    assert 'faulty.py", line' in server.output  # the stuck frame
    closed = f"connection from 127.0.0.1:{port} closed (client closed)"
    assert server.output.index(closed) < server.output.index("aborting (SIGABRT)")


def test_a_stopped_process_carries_on_when_it_resumes() -> None:
    """SIGSTOP for 2 s, then SIGCONT: the reactor turns again, so the
    process is not aborted (that would turn a pause into an outage); it
    logs the stall and serves."""
    server = start_incproto("--watchdog", "1")
    try:
        with connect(server.port) as sock:  # served: the reactor (and watch) run
            assert receive_exactly(sock, 1) == b"*"
        server.process.send_signal(signal.SIGSTOP)
        threading.Event().wait(2.0)  # the fault: two seconds stopped
        server.process.send_signal(signal.SIGCONT)
        [(lag,)] = server.wait_for(RESUMED)
        assert float(lag) >= 2.0
        with connect(server.port) as sock:
            sock.sendall(b"^abc$")
            assert receive_exactly(sock, 4) == b"*bcd"
        assert server.process.poll() is None
    finally:
        server.stop()
    assert "aborting" not in server.output


def test_a_turning_reactor_is_left_alone() -> None:
    """--watchdog 1 on a server at work: never aborted."""
    server = start_incproto("--watchdog", "1")
    try:
        for _ in range(20):
            assert served(server.port, TIMEOUT)
    finally:
        status = server.stop()
    assert status == -signal.SIGTERM
    assert "has not turned" not in server.output


def test_a_stopped_worker_is_killed_and_replaced() -> None:
    """A worker SIGSTOPped (new connections landed on it and hung, the
    supervisor said nothing): killed after --watchdog, replaced, counted."""
    server = start_incproto(
        "--workers", "2", "--watchdog", "1", "--metrics", "tcp:0:interface=127.0.0.1"
    )
    try:
        server.wait_for(WORKER_LISTENING, 2)
        [(metrics,)] = server.wait_for(METRICS_LISTENING)
        [(pid,)] = server.wait_for(re.compile(r"worker 1\.2 started \(pid (\d+)\)"))
        # Once it has answered a scrape it has read the supervisor's
        # request to be watched (sent before): it serves, and is watched.
        deadline = time.monotonic() + TIMEOUT
        while 'incproto_worker_up{worker="2"} 1.0' not in scrape(int(metrics)):
            assert time.monotonic() < deadline, "worker 1.2 never answered"
        os.kill(int(pid), signal.SIGSTOP)
        [(slot, _)] = server.wait_for(KILLED)
        assert slot == "2"
        server.wait_for(WORKER_LISTENING, 3)
        assert served(server.port, TIMEOUT)
        text = scrape(int(metrics))
    finally:
        server.stop()
    assert 'incproto_workers_replaced_total{reason="stalled"} 1.0' in text
    assert f"worker 1.2 (pid {pid}) has not answered" in server.output


def test_a_thread_pool_stuck_whole_is_unready() -> None:
    """--threads 2 --handler-timeout 1 and four calls that never return:
    every thread and replacement is held, every later session would fail,
    and /healthz says so (it said 200)."""
    server = start_incproto(
        "--threads", "2", "--handler-timeout", "1", *FAULTY,
        "--metrics", "tcp:0:interface=127.0.0.1",
    )  # fmt: skip
    stuck: List[socket.socket] = []
    try:
        [(metrics,)] = server.wait_for(METRICS_LISTENING)
        for _ in range(4):
            sock = connect(server.port)
            sock.sendall(b"^~")
            stuck.append(sock)
        server.wait_for(re.compile(r"(4) threads stuck"))
        try:
            urllib.request.urlopen(
                f"http://127.0.0.1:{metrics}/healthz", timeout=TIMEOUT
            )
            raise AssertionError("/healthz answered 200")
        except urllib.error.HTTPError as e:
            assert (e.code, e.read()) == (
                503,
                b"every handler thread is stuck (4 threads)\n",
            )
        assert scrape(int(metrics), "/livez") == "ok\n"  # unready, not dead
    finally:
        for sock in stuck:
            sock.close()
        server.stop()
