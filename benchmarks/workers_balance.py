"""How --workers shares connections out and reloads: the spread of long-lived
connections over the workers, the wake-ups each accepted connection costs,
and the greeting waits across SIGHUP reloads.

    python benchmarks/workers_balance.py [--workers 4] [--connections 200]
        [--runs 3] [--modes burst,paced,churn] [--reloads 5] [--out DIR]
        [--label NAME]

Each run starts ``twistd -n incproto --workers N --no-connection-log`` with
``--metrics`` on 127.0.0.1 and opens --connections long-lived connections
(each waits for its greeting):

    burst    all at once (non-blocking connects, then every greeting)
    paced    one at a time, 5 ms apart
    churn    paced, while two threads connect, greet and close in a loop
    limit    180 at once, with --max-connections 50 --queue 0: how many
             were refused (nominal capacity: 4 x 50)
    reuseport  no incproto: N SO_REUSEPORT listening sockets of this
             process, --connections connects, each socket's accept queue
             counted: the kernel's hash spread, for comparison

then reads each worker's ``incproto_connections_active`` from /metrics: the
spread is the busiest worker's count over the least busy one's (median of
the runs).  Wake-ups per connection: the workers' voluntary context
switches (/proc/PID/status) during the paced opening, over the connections
opened: 1.0 would be one worker woken per connection; with every idle
worker woken it approaches N.  Where the workers count them
(``incproto_accept_wakeups_total`` and ``..._empty_total``), the empty
wake-ups (an accept() that found nothing: EAGAIN) per connection too.

Reload: four client threads connect, wait for the greeting, send one
message, read the reply and close, in a loop, while the supervisor gets
SIGHUP --reloads times (each once the previous reload's old workers have
exited); a failed session is any error or wrong reply; the greeting waits'
maximum and 99th percentile are reported.

Writes DIR/workers_balance-LABEL.json (default benchmarks/results/) and
prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import selectors
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Dict, List, Tuple

HOST = "127.0.0.1"
TIMEOUT = 30.0
LISTENING = re.compile(r"\[worker [\d.]+\] incproto listening on [\d.]+:(\d+)")
METRICS = re.compile(r"metrics listening on [\d.]+:(\d+)")
ACTIVE = re.compile(r'incproto_connections_active\{worker="(\d+)"\} ([\d.]+)')
WAKEUPS = re.compile(r'incproto_accept_wakeups_total\{worker="(\d+)"\} ([\d.]+)')
EMPTY = re.compile(r'incproto_accept_wakeups_empty_total\{worker="(\d+)"\} ([\d.]+)')
OLD_EXITED = re.compile(r"old worker [\d.]+ (?:exited|was killed)")


class Server:
    """A twistd incproto --workers N process and its log."""

    def __init__(self, workers: int, extra: List[str]) -> None:
        twistd = str(Path(sys.executable).parent / "twistd")
        self.workers = workers
        self.process = subprocess.Popen(
            [twistd, "-n", "--pidfile=", "incproto", "--workers", str(workers),
             "--port", f"tcp:0:interface={HOST}",
             "--metrics", f"tcp:0:interface={HOST}", "--no-connection-log", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd="/tmp",
        )  # fmt: skip
        self.output = ""
        self.changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()
        ports = self.wait_for(LISTENING, workers)
        self.port = int(ports[0])
        self.metrics = int(self.wait_for(METRICS, 1)[0])

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self.changed:
                self.output += line.decode("utf-8", "replace")
                self.changed.notify_all()

    def wait_for(self, pattern: re.Pattern[str], count: int) -> List[str]:
        deadline = time.monotonic() + TIMEOUT
        with self.changed:
            while len(found := pattern.findall(self.output)) < count:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError(
                        f"no {pattern.pattern!r} x{count}:\n{self.output}"
                    )
                self.changed.wait(1.0)
        return found

    def worker_pids(self) -> List[int]:
        pid = self.process.pid
        with open(f"/proc/{pid}/task/{pid}/children") as children:
            return [int(p) for p in children.read().split()]

    def scrape(self) -> str:
        url = f"http://{HOST}:{self.metrics}/metrics"
        with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
            return str(response.read().decode())

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def voluntary_switches(pids: List[int]) -> int:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as status:
                for line in status:
                    if line.startswith("voluntary_ctxt_switches"):
                        total += int(line.split()[1])
        except FileNotFoundError:
            pass
    return total


def greeted(sock: socket.socket) -> None:
    sock.settimeout(TIMEOUT)
    if sock.recv(1) != b"*":
        raise RuntimeError("no greeting")


def open_burst(port: int, count: int) -> List[socket.socket]:
    socks = []
    for _ in range(count):
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex((HOST, port))
        socks.append(sock)
    with selectors.DefaultSelector() as selector:
        for sock in socks:
            selector.register(sock, selectors.EVENT_READ)
        left = len(socks)
        deadline = time.monotonic() + TIMEOUT
        while left and time.monotonic() < deadline:
            for key, _ in selector.select(1.0):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                selector.unregister(sock)
                left -= 1
                try:
                    if sock.recv(1) == b"*":
                        continue
                except ConnectionResetError:
                    pass
                socks.remove(sock)  # refused
                sock.close()
    return socks


def open_paced(port: int, count: int, gap: float = 0.005) -> List[socket.socket]:
    socks = []
    for _ in range(count):
        sock = socket.create_connection((HOST, port), TIMEOUT)
        greeted(sock)
        socks.append(sock)
        time.sleep(gap)
    return socks


def churn(port: int, stop: threading.Event) -> None:
    while not stop.is_set():
        with socket.create_connection((HOST, port), TIMEOUT) as sock:
            greeted(sock)


def per_worker(pattern: re.Pattern[str], text: str) -> Dict[int, float]:
    return {int(slot): float(value) for slot, value in pattern.findall(text)}


def reuseport_run(workers: int, count: int) -> Dict[str, Any]:
    listeners = []
    for _ in range(workers):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((HOST, listeners[0].getsockname()[1] if listeners else 0))
        sock.listen(count)
        sock.setblocking(False)
        listeners.append(sock)
    port = listeners[0].getsockname()[1]
    clients = [socket.create_connection((HOST, port), TIMEOUT) for _ in range(count)]
    counts = []
    for sock in listeners:
        accepted = 0
        while True:
            try:
                sock.accept()[0].close()
            except BlockingIOError:
                break
            accepted += 1
        counts.append(accepted)
        sock.close()
    for client in clients:
        client.close()
    return {
        "refused": 0,
        "counts": counts,
        "spread": max(counts) / max(min(counts), 1),
        "switches_per_connection": 0.0,
        "wakeups": None,
        "empty_wakeups": None,
    }


def spread_run(mode: str, workers: int, count: int, extra: List[str]) -> Dict[str, Any]:
    if mode == "reuseport":
        return reuseport_run(workers, count)
    if mode == "limit":
        extra = [*extra, "--max-connections", "50", "--queue", "0"]
        count = 180
    server = Server(workers, extra)
    socks: List[socket.socket] = []
    try:
        pids = server.worker_pids()
        before = voluntary_switches(pids)
        stop = threading.Event()
        churners = [threading.Thread(target=churn, args=(server.port, stop))
                    for _ in range(2 if mode == "churn" else 0)]  # fmt: skip
        for thread in churners:
            thread.start()
        try:
            if mode in ("burst", "limit"):
                socks = open_burst(server.port, count)
            else:
                socks = open_paced(server.port, count)
        finally:
            stop.set()
            for thread in churners:
                thread.join()
        switches = voluntary_switches(pids) - before
        deadline = time.monotonic() + TIMEOUT
        while True:  # until the churn's connections are gone
            text = server.scrape()
            active = per_worker(ACTIVE, text)
            if sum(active.values()) == len(socks) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        wakeups = sum(per_worker(WAKEUPS, text).values())
        empty = sum(per_worker(EMPTY, text).values())
        counts = [int(active.get(slot, 0)) for slot in range(1, workers + 1)]
        return {
            "refused": count - len(socks),
            "counts": counts,
            "spread": max(counts) / max(min(counts), 1),
            "switches_per_connection": switches / count,
            "wakeups": wakeups or None,
            "empty_wakeups": empty if wakeups else None,
        }
    finally:
        for sock in socks:
            sock.close()
        server.stop()


def session(port: int) -> float:
    """One session: the seconds its greeting took."""
    started = time.monotonic()
    with socket.create_connection((HOST, port), TIMEOUT) as sock:
        sock.settimeout(TIMEOUT)
        greeted(sock)
        waited = time.monotonic() - started
        sock.sendall(b"^ab$")
        reply = b""
        while len(reply) < 2:
            chunk = sock.recv(2 - len(reply))
            if not chunk:
                break
            reply += chunk
        if reply != b"bc":
            raise RuntimeError(f"reply {reply!r}")
    return waited


def reload_run(workers: int, reloads: int, extra: List[str]) -> Dict[str, Any]:
    server = Server(workers, extra)
    waits: List[Tuple[float, float]] = []
    failures: List[str] = []
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            at = time.monotonic()
            try:
                waits.append((at, session(server.port)))
            except Exception as e:
                failures.append(f"{type(e).__name__}: {e}")

    clients = [threading.Thread(target=client) for _ in range(4)]
    for thread in clients:
        thread.start()
    hups: List[float] = []
    try:
        time.sleep(1.0)
        for n in range(1, reloads + 1):
            hups.append(time.monotonic())
            server.process.send_signal(signal.SIGHUP)
            server.wait_for(OLD_EXITED, n * workers)
            time.sleep(0.5)
    finally:
        stop.set()
        for thread in clients:
            thread.join()
        server.stop()
    during = [w for at, w in waits if at >= hups[0]] if hups else []
    ordered = sorted(during)
    return {
        "sessions": len(during),
        "failed": len(failures),
        "failures": failures[:5],
        "max_greeting_ms": 1000 * max(during, default=0.0),
        "p99_greeting_ms": 1000 * ordered[int(0.99 * (len(ordered) - 1))]
        if ordered
        else 0,
        "over_250ms": sum(1 for w in during if w > 0.25),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--modes", default="burst,paced,churn")
    parser.add_argument("--reloads", type=int, default=5)
    parser.add_argument("--label", default="after")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument(
        "--server-option",
        action="append",
        default=[],
        help="an extra twistd incproto option (repeatable)",
    )
    args = parser.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    results: Dict[str, Any] = {"machine": f"{os.cpu_count()} CPUs", "spread": {}}
    for mode in modes:
        runs = [spread_run(mode, args.workers, args.connections, args.server_option)
                for _ in range(args.runs)]  # fmt: skip
        results["spread"][mode] = {
            "runs": runs,
            "median_spread": statistics.median(r["spread"] for r in runs),
            "median_switches": statistics.median(
                r["switches_per_connection"] for r in runs
            ),
        }
        median = results["spread"][mode]["median_spread"]
        print(mode, [r["counts"] for r in runs], median, flush=True)
    if args.reloads:
        results["reload"] = reload_run(args.workers, args.reloads, args.server_option)
        print("reload", results["reload"], flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"workers_balance-{args.label}.json").write_text(
        json.dumps(results, indent=1) + "\n"
    )
    print(table(results))


def table(results: Dict[str, Any]) -> str:
    lines = [
        "| mode | per-worker counts (each run) | busiest/least, median | "
        "wake-ups per connection | empty accepts per connection | refused |",
        "|---|---|---|---|---|---|",
    ]
    for mode, row in results["spread"].items():
        runs = row["runs"]
        empties = [r["empty_wakeups"] for r in runs if r["empty_wakeups"] is not None]
        count = sum(runs[0]["counts"])
        empty = (
            f"{statistics.median(empties) / count:.2f}" if empties else "not counted"
        )
        lines.append(
            f"| {mode} | {' ; '.join('/'.join(map(str, r['counts'])) for r in runs)} "
            f"| {row['median_spread']:.2f}x | {row['median_switches']:.2f} | {empty} "
            f"| {', '.join(str(r['refused']) for r in runs)} |"
        )
    reload = results.get("reload")
    if reload:
        lines.append("")
        lines.append(
            f"Reloads: {reload['sessions']} sessions, {reload['failed']} failed, "
            f"greeting wait max {reload['max_greeting_ms']:.0f} ms, "
            f"p99 {reload['p99_greeting_ms']:.1f} ms, "
            f"{reload['over_250ms']} over 250 ms."
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
