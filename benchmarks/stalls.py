"""Gray failures of issue 21 against a real ``twistd -n incproto``: what a
client, ``/healthz`` and ``/metrics`` see when a process stops serving.

wedged-workers:   ``--workers 2``, an inline handler that never returns
                  (``tests.support.faulty``, payload ``~``), sent twice,
                  0.5 s apart (so that each wedges one worker);
                  then 12 sessions, one a second, each given 3 s.  Reports
                  the sessions served, ``/healthz``, the workers replaced,
                  and how long SIGTERM takes.
stopped-worker:   ``--workers 2``, one worker SIGSTOPped; four ``/metrics``
                  scrapes.  Reports how long each took.
crashing-worker:  ``--workers 2``, a payload that kills its worker
                  (``!``), one a second for 10 s, beside a client loop of
                  sessions (each given 2 s).  Reports the sessions served
                  and failed, and the seconds ``/healthz`` was not 200.

Options after the scenario are passed to the server (``--watchdog 2``).

    python benchmarks/stalls.py wedged-workers --watchdog 2
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import List, Sequence, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.processes import ServerProcess, descendants, start_incproto

FAULTY = ["--handler", "tests.support.faulty:faulty"]
WORKER_LISTENING = re.compile(r"\[worker \d\.\d\] incproto listening")
METRICS_LISTENING = re.compile(r"metrics listening on 127\.0\.0\.1:(\d+)")


def session(port: int, timeout: float) -> bool:
    """One session (greeting, ``^abc$``'s reply) completed within ``timeout``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(b"^abc$")
            got = b""
            while len(got) < 4:
                chunk = sock.recv(16)
                if not chunk:
                    break
                got += chunk
            return got == b"*bcd"
    except OSError:
        return False


def get(port: int, path: str, timeout: float = 10.0) -> Tuple[int, str]:
    try:
        url = f"http://127.0.0.1:{port}{path}"
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError as e:
        return 0, str(e)


def start(options: Sequence[str]) -> Tuple[ServerProcess, int]:
    server = start_incproto(
        "--workers", "2", "--no-connection-log",
        "--metrics", "tcp:0:interface=127.0.0.1", *FAULTY, *options,
        cwd=Path(__file__).resolve().parent.parent,
    )  # fmt: skip
    server.wait_for(WORKER_LISTENING, 2)
    [(metrics,)] = server.wait_for(METRICS_LISTENING)
    return server, int(metrics)


def stop(server: ServerProcess) -> float:
    """SIGTERM; seconds until the server exited (killed after 60 s)."""
    started = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    try:
        server.process.wait(60)
    except Exception:
        server.process.kill()
        server.process.wait()
    return time.monotonic() - started


def replaced(text: str) -> List[str]:
    return re.findall(r"incproto_workers_replaced_total\{.*", text)


def wedged_workers(options: Sequence[str]) -> None:
    server, metrics = start(options)
    idle = threading.Event()
    wedging = []
    try:
        for _ in range(2):
            sock = socket.create_connection(("127.0.0.1", server.port))
            sock.sendall(b"^~")
            wedging.append(sock)
            idle.wait(0.5)  # that worker is stuck: the next goes to the other
        served: List[bool] = []
        for _ in range(12):
            served.append(session(server.port, 3.0))
            idle.wait(1.0)
        print(f"later sessions served: {sum(served)} of 12 {served}")
        print(f"/healthz: {get(metrics, '/healthz')}")
        print(f"replaced: {replaced(get(metrics, '/metrics')[1])}")
    finally:
        print(f"SIGTERM to exit: {stop(server):.1f} s")
        for sock in wedging:
            sock.close()


def stopped_worker(options: Sequence[str]) -> None:
    server, metrics = start(options)
    try:
        pid = descendants(server.process.pid)[0]
        os.kill(pid, signal.SIGSTOP)
        took = []
        for _ in range(4):
            started = time.monotonic()
            get(metrics, "/metrics")
            took.append(round(time.monotonic() - started, 2))
        print(f"scrape seconds with a stopped worker: {took}")
        os.kill(pid, signal.SIGCONT)
    finally:
        stop(server)


def crashing_worker(options: Sequence[str]) -> None:
    server, metrics = start(options)
    results: List[bool] = []
    unhealthy = 0.0
    done = threading.Event()

    def clients() -> None:
        while not done.is_set():
            results.append(session(server.port, 2.0))

    loop = threading.Thread(target=clients, daemon=True)
    loop.start()
    try:
        for _ in range(10):
            with socket.create_connection(("127.0.0.1", server.port)) as sock:
                sock.sendall(b"^!")
            for _ in range(10):
                if get(metrics, "/healthz", 2.0)[0] != 200:
                    unhealthy += 0.1
                done.wait(0.1)
        done.set()
        loop.join(10)
        print(
            f"sessions served {results.count(True)}, failed {results.count(False)}; "
            f"/healthz not 200 for about {unhealthy:.1f} s of 10"
        )
        print(f"replaced: {replaced(get(metrics, '/metrics')[1])}")
    finally:
        stop(server)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "scenario", choices=["wedged-workers", "stopped-worker", "crashing-worker"]
    )
    args, options = parser.parse_known_args()
    {
        "wedged-workers": wedged_workers,
        "stopped-worker": stopped_worker,
        "crashing-worker": crashing_worker,
    }[args.scenario](options)


if __name__ == "__main__":
    main()
