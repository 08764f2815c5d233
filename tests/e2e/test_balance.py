"""--workers in real twistd processes: connections shared out evenly (counts
per worker from /metrics), the per-worker limit holding its total, and
reloads that fail no session and never leave the socket without an
accepting worker."""

from __future__ import annotations

import re
import selectors
import signal
import socket
import urllib.request
from pathlib import Path
from typing import Dict, List

from tests.support.fleet import SessionLoop
from tests.support.processes import TIMEOUT, ServerProcess, script, start_incproto

LISTENING = re.compile(r"\[worker (\d+)\.(\d+)\] incproto listening")
OLD_WORKER_GONE = re.compile(r"old worker (\d+)\.(\d+) (?:exited|was killed)")
ACTIVE = re.compile(r'incproto_connections_active\{worker="(\d)"\} (\d+)')
WAKEUPS = re.compile(r'incproto_accept_wakeups_total\{worker="(\d)"\}')


def scrape(port: int) -> str:
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
        return str(response.read().decode())


def open_at_once(port: int, count: int) -> List[socket.socket]:
    """C{count} connections, connected at once: those greeted (the rest
    were closed)."""
    socks = []
    for _ in range(count):
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", port))
        socks.append(sock)
    greeted = []
    with selectors.DefaultSelector() as selector:
        for sock in socks:
            selector.register(sock, selectors.EVENT_READ)
        for _ in range(count):
            [(key, _)] = selector.select(TIMEOUT)[:1]
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            selector.unregister(sock)
            try:
                first = sock.recv(1)
            except ConnectionResetError:
                first = b""
            if first == b"*":
                greeted.append(sock)
            else:
                sock.close()
    return greeted


def test_connections_are_shared_out_evenly_within_the_limit(tmp_path: Path) -> None:
    """180 connections at once over --workers 4 --max-connections 50
    --queue 0: each worker holds its share (the busiest at most 1.5x the
    least busy; the benchmark's figure is under 1.25x), so none is refused
    although each worker's limit is 50."""
    server = ServerProcess(
        [script("twistd"), "-n", "--pidfile=", "incproto", "--workers", "4",
         "--port", "tcp:0:interface=127.0.0.1", "--no-connection-log",
         "--metrics", "tcp:0:interface=127.0.0.1",
         "--max-connections", "50", "--queue", "0"],
        tmp_path,
    )  # fmt: skip
    socks: List[socket.socket] = []
    try:
        server.wait_for(LISTENING, 4)
        [(metrics,)] = server.wait_for(re.compile(r"metrics listening on \S+:(\d+)"))
        # A worker that answers a scrape runs its reactor, so it balances
        # (each scrape is a round trip to every worker: bounded, no sleep).
        scrapes = (len(WAKEUPS.findall(scrape(int(metrics)))) for _ in range(100))
        assert any(answered == 4 for answered in scrapes)
        socks = open_at_once(server.port, 180)
        assert len(socks) == 180  # none refused
        held: Dict[str, int] = {
            worker: int(count) for worker, count in ACTIVE.findall(scrape(int(metrics)))
        }
        assert sum(held.values()) == 180 and len(held) == 4, held
        assert max(held.values()) <= 1.5 * min(held.values()), held
    finally:
        for sock in socks:
            sock.close()
        server.stop()
    assert "Traceback" not in server.output


def test_reloads_fail_no_session_and_leave_no_accept_gap() -> None:
    """Five SIGHUPs under a loop of sessions: every session is greeted and
    served, and each old worker is retired only after its slot's new worker
    listens (so some worker accepts at every moment)."""
    server = start_incproto("--workers", "2", "--no-connection-log")
    try:
        server.wait_for(LISTENING, 2)
        # Two threads: continuous, without spending tens of thousands of
        # ephemeral ports (TIME_WAIT) on a machine that other tests share.
        loop = SessionLoop(server.port, threads=2).start()
        loop.wait_for(20)
        for reload in range(1, 6):
            server.process.send_signal(signal.SIGHUP)
            server.wait_for(OLD_WORKER_GONE, 2 * reload)
            loop.wait_for(20)
        sessions = loop.stop()
    finally:
        server.stop()
    assert [s.error for s in sessions if s.error] == []
    output = server.output
    for generation in range(2, 7):
        for slot in (1, 2):
            listens = output.index(f"[worker {generation}.{slot}] incproto listening")
            retired = [
                m.start()
                for m in OLD_WORKER_GONE.finditer(output)
                if m.groups() == (str(generation - 1), str(slot))
            ]
            assert len(retired) == 1
            assert listens < retired[0], (generation, slot)
