"""--workers in real twistd processes: sharing the load, restarting a killed
worker, stopping cleanly, and the metrics of all workers at the supervisor."""

from __future__ import annotations

import os
import re
import signal
import threading
import urllib.request
from pathlib import Path

from tests.support.processes import (
    TIMEOUT,
    ServerProcess,
    alive,
    connect,
    descendants,
    receive_exactly,
    script,
)

WORKER_STARTED = re.compile(r"worker \d+\.(\d+) started \(pid (\d+)\)")


def _serve_one(port: int, payload: bytes) -> bytes:
    with connect(port) as sock:
        greeting = receive_exactly(sock, 1)
        sock.sendall(b"^" + payload + b"$")
        return greeting + receive_exactly(sock, len(payload))


def test_workers_share_the_load_survive_a_kill_and_stop(tmp_path: Path) -> None:
    server = ServerProcess(
        [script("twistd"), "-n", "--pidfile=", "incproto", "--workers", "2",
         "--port", "tcp:0:interface=127.0.0.1", "--threads", "2"],
        tmp_path,
    )  # fmt: skip
    try:
        started = dict(server.wait_for(WORKER_STARTED, count=2))
        server.wait_for(re.compile(r"\[worker 1\.\d\] incproto listening"), count=2)
        # Each worker serves the shared socket: with the other one stopped,
        # every connection is its.
        for serving, stopped in (("1", "2"), ("2", "1")):
            os.kill(int(started[stopped]), signal.SIGSTOP)
            try:
                assert _serve_one(server.port, b"abc") == b"*bcd"
            finally:
                os.kill(int(started[stopped]), signal.SIGCONT)
            server.wait_for(re.compile(rf"\[worker 1\.{serving}\] connection from 127"))
        os.kill(int(started["1"]), signal.SIGKILL)
        # It had served: back at once, no back-off.
        server.wait_for(re.compile(r"worker 1\.1 .* restarting it in 0 s"))
        restarted = server.wait_for(WORKER_STARTED, count=3)[-1]
        assert restarted[0] == "1" and restarted[1] != started["1"]
        server.wait_for(re.compile(r"\[worker 1\.\d\] incproto listening"), count=3)
        results = []
        port = server.port
        threads = [
            threading.Thread(target=lambda: results.append(_serve_one(port, b"xyz")))
            for _ in range(10)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(TIMEOUT)
        assert results == [b"*yz{"] * 10
        workers = descendants(server.process.pid)
        assert len(workers) == 2
    finally:
        status = server.stop()
    assert status == -signal.SIGTERM  # as twistd does after SIGTERM
    assert "worker 1.1 exited" in server.output and "worker 1.2 exited" in server.output
    assert "Traceback" not in server.output, server.output
    assert [pid for pid in workers if alive(pid)] == []


def test_metrics_of_all_workers_at_the_supervisor(tmp_path: Path) -> None:
    server = ServerProcess(
        [script("twistd"), "-n", "--pidfile=", "incproto", "--workers", "2",
         "--port", "tcp:0:interface=127.0.0.1",
         "--metrics", "tcp:0:interface=127.0.0.1"],
        tmp_path,
    )  # fmt: skip
    try:
        server.wait_for(re.compile(r"\[worker 1\.\d\] incproto listening"), count=2)
        (metrics_port,) = server.wait_for(
            re.compile(r"metrics listening on 127\.0\.0\.1:(\d+)")
        )[0]
        assert _serve_one(server.port, b"abc") == b"*bcd"
        server.wait_for(re.compile(r"\[worker 1\.\d\] connection from .* closed"))
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
            text = response.read().decode()
    finally:
        server.stop()
    assert "incproto_workers 2.0" in text
    accepted = re.findall(
        r'incproto_connections_accepted_total\{worker="(\d)"\} (\d+)', text
    )
    assert sorted(slot for slot, _ in accepted) == ["1", "2"]
    assert sum(float(count) for _, count in accepted) == 1
    # Histograms: each worker's, with the same buckets; summed over workers,
    # the service's (one connection, closed).
    for le in ("0.01", "+Inf"):
        buckets = re.findall(
            rf'incproto_connection_duration_seconds_bucket\{{le="{re.escape(le)}",'
            rf'worker="(\d)"\}} (\S+)',
            text,
        )
        assert sorted(slot for slot, _ in buckets) == ["1", "2"], le
    counts = re.findall(
        r'incproto_connection_duration_seconds_count\{worker="\d"\} (\S+)', text
    )
    assert sum(float(count) for count in counts) == 1
    # The process collector: each worker's, and the supervisor's unlabelled.
    assert len(re.findall(r'process_open_fds\{worker="\d"\} \d', text)) == 2
    assert re.search(r"^process_open_fds \d", text, re.MULTILINE)
    # The settings are logged once, by the supervisor.
    settings = re.findall(r".*incproto settings: .*", server.output)
    assert len(settings) == 1, settings
    assert "[worker" not in settings[0] and "2 workers" in settings[0]


def test_a_worker_that_served_and_died_is_replaced_at_once(tmp_path: Path) -> None:
    """
    A payload that kills its worker, twice: each time the worker had
    served (it listened), so it is replaced at once, even when it lived
    less than a second (it was backed off for 1 s, then 2 s, 4 s...);
    clients after it are served.
    """
    server = ServerProcess(
        [script("twistd"), "-n", "--pidfile=", "incproto", "--workers", "1",
         "--port", "tcp:0:interface=127.0.0.1",
         "--handler", "tests.support.faulty:faulty"],
        tmp_path,
    )  # fmt: skip
    listening = re.compile(r"\[worker 1\.1\] incproto listening")
    try:
        for deaths in (1, 2):
            server.wait_for(listening, deaths)
            with connect(server.port) as sock:
                sock.sendall(b"^!")
                assert receive_exactly(sock, 2) == b"*"
            server.wait_for(re.compile(r"worker 1\.1 was killed by signal 9"), deaths)
        server.wait_for(listening, 3)
        assert _serve_one(server.port, b"abc") == b"*bcd"
    finally:
        server.stop()
    delays = re.findall(
        r"worker 1\.1 was killed .* restarting it in (\S+) s", server.output
    )
    assert delays == ["0", "0"]
