"""Hostile clients against a real ``twistd -n incproto``: what each one costs.

dead-queue:   ``--max-connections 1 --queue 1024``, one client holds the slot;
              1,100 rounds of connect, send 200 KB, reset.  Reports the held
              count right after and 3 s later, the server's descriptors, and
              whether a real client is greeted once the slot frees.
proxy-header: ``haproxy:`` with ``--max-connections 10 --queue 10``; 3,000
              connections that never send a PROXY header.  Reports the
              server's descriptors after 3 s.
emfile:       the server's descriptors capped at 64; 200 connections held
              for 5 s.  Reports the log lines about failed accepts and the
              server's CPU time.
tls-silent:   ``ssl:`` with ``--max-connections 20``; 200 TCP connections
              that never send a ClientHello, then 8 TLS sessions (greeting
              and one message each, 20 s for all).  Reports the sessions
              served and how many silent connections are open after 15 s.
proxy-silent: ``proxy:tcp:`` with ``--max-connections 50 --queue 0``; 50
              connections that never send their header, then 8 sessions
              with a header (20 s for all).  Reports the sessions served.
metrics-drip: ``--metrics``; 40 clients each send one byte of a request
              every 5 s (reconnecting when closed) while ``/healthz`` is
              probed every 5 s for 40 s, 1 s allowed per probe (a
              Kubernetes probe's default).  Reports the probes answered 200.

    python benchmarks/hostile.py ATTACK   # one of the names above
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import ssl
import struct
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Callable, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.certificates import make_certificate
from tests.support.formats import V1
from tests.support.processes import ServerProcess, script, start_incproto


def descriptors(server: ServerProcess) -> int:
    return len(os.listdir(f"/proc/{server.process.pid}/fd"))


def cpu_seconds(server: ServerProcess) -> float:
    fields = Path(f"/proc/{server.process.pid}/stat").read_text().split()
    return (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")


def held(metrics_port: int) -> int:
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    for line in urllib.request.urlopen(url).read().decode().splitlines():
        if line.startswith("incproto_connections_held "):
            return int(float(line.split()[1]))
    raise AssertionError("no incproto_connections_held")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def dead_queue() -> None:
    metrics = free_port()
    server = start_incproto(
        "--max-connections", "1", "--queue", "1024", "--metrics", str(metrics)
    )
    holder = socket.create_connection(("127.0.0.1", server.port))
    holder.recv(1)
    for _ in range(1100):
        sock = socket.create_connection(("127.0.0.1", server.port))
        sock.setblocking(False)
        try:
            sock.send(b"x" * 200_000)
        except BlockingIOError:
            pass
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()  # a reset
    print(f"held right after the attack: {held(metrics)}")
    time.sleep(3)  # the benchmark's observation window
    print(f"held 3 s later: {held(metrics)}; server descriptors: {descriptors(server)}")
    late = socket.create_connection(("127.0.0.1", server.port))
    holder.close()
    late.settimeout(5)
    print(f"a real client, once the slot frees, gets: {late.recv(1)!r}")
    late.close()
    server.stop()


def proxy_header() -> None:
    server = start_incproto(
        "--max-connections", "10", "--queue", "10",
        "--port", "haproxy:tcp:0:interface=127.0.0.1",
    )  # fmt: skip
    socks = connect_many(server.port, 3000)
    time.sleep(3)  # the benchmark's observation window
    print(f"server descriptors with 3,000 header-less clients: {descriptors(server)}")
    close_all(socks)
    server.stop()


def emfile() -> None:
    server = ServerProcess(
        ["prlimit", "--nofile=64:64", script("twistd"), "-n", "--pidfile=",
         "incproto", "--port", "tcp:0:interface=127.0.0.1"],
        Path("/tmp"),
    )  # fmt: skip
    before = cpu_seconds(server)
    socks = connect_many(server.port, 200)
    time.sleep(5)  # the benchmark's observation window
    lines = [
        line
        for line in server.output.splitlines()
        if "EMFILE" in line or "accept" in line.lower()
    ]
    print(f"accept-failure log lines in 5 s: {len(lines)}")
    print(f"server CPU in 5 s: {cpu_seconds(server) - before:.2f} s")
    close_all(socks)
    server.stop()


def sessions(count: int, window: float, session: Callable[[float], bool]) -> int:
    """How many of C{count} sessions, one after the other, succeed within
    C{window} seconds in all."""
    deadline = time.monotonic() + window
    served = 0
    for _ in range(count):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            served += session(min(left, 5.0))
        except OSError:
            pass
    return served


def increment_session(sock: socket.socket, first: bytes = b"") -> bool:
    """Greeting, then one message: whether the replies are right."""
    sock.sendall(first + b"^abc$")
    received = b""
    while len(received) < 4:
        chunk = sock.recv(4 - len(received))
        if not chunk:
            break
        received += chunk
    return received == b"*bcd"


def tls_silent() -> None:
    directory = Path(tempfile.mkdtemp())
    key, certificate = make_certificate(directory)
    server = start_incproto(
        "--port", f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={certificate}",
        "--max-connections", "20",
    )  # fmt: skip
    socks = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(200)]
    context = ssl.create_default_context(cafile=str(certificate))

    def session(timeout: float) -> bool:
        raw = socket.create_connection(("127.0.0.1", server.port), timeout=timeout)
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            return increment_session(tls)

    print(f"TLS sessions served in 20 s, of 8: {sessions(8, 20.0, session)}")
    time.sleep(15)  # the benchmark's observation window, past the deadline
    print(f"silent connections still open after 15 s: {still_open(socks)} of 200")
    close_all(socks)
    server.stop()


def still_open(socks: List[socket.socket]) -> int:
    """How many of C{socks} the server has not closed."""
    count = 0
    for sock in socks:
        try:
            count += sock.recv(1, socket.MSG_DONTWAIT) != b""
        except BlockingIOError:
            count += 1
        except OSError:
            pass
    return count


def proxy_silent() -> None:
    server = start_incproto(
        "--port", "proxy:tcp:0:interface=127.0.0.1",
        "--max-connections", "50", "--queue", "0",
    )  # fmt: skip
    socks = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(50)]

    def session(timeout: float) -> bool:
        with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as s:
            return increment_session(s, V1)

    print(f"sessions served in 20 s, of 8: {sessions(8, 20.0, session)}")
    close_all(socks)
    server.stop()


def metrics_drip() -> None:
    metrics = free_port()
    server = start_incproto("--metrics", str(metrics))
    stop = threading.Event()

    def drip() -> None:
        socks: List[Optional[socket.socket]] = [None] * 40
        sent = [0] * 40
        request = b"GET /metrics HTTP/1.1\r\nHost: x\r\n" + b"X: y\r\n" * 1000
        while not stop.is_set():
            for i, sock in enumerate(socks):
                if sock is not None and still_open([sock]) == 0:
                    sock.close()
                    sock = None
                if sock is None:
                    sock = socks[i] = socket.create_connection(("127.0.0.1", metrics))
                    sent[i] = 0
                try:
                    sock.send(request[sent[i] : sent[i] + 1])
                    sent[i] += 1
                except OSError:
                    sock.close()
                    socks[i] = None
                stop.wait(5.0 / 40)  # each client a byte every 5 s
        close_all([sock for sock in socks if sock is not None])

    dripping = threading.Thread(target=drip)
    dripping.start()
    time.sleep(5)  # the drip-feeders connect first
    answered = 0
    for _ in range(8):
        started = time.monotonic()
        try:
            url = f"http://127.0.0.1:{metrics}/healthz"
            answered += urllib.request.urlopen(url, timeout=1.0).status == 200
        except OSError:
            pass
        time.sleep(max(0.0, 5.0 - (time.monotonic() - started)))
    stop.set()
    dripping.join()
    print(f"/healthz probes answered 200 over 40 s, of 8: {answered}")
    server.stop()


def connect_many(port: int, count: int) -> List[socket.socket]:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    socks = []
    for _ in range(count):
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", port))
        socks.append(sock)
    return socks


def close_all(socks: List[socket.socket]) -> None:
    for sock in socks:
        sock.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    attacks = {
        "dead-queue": dead_queue,
        "proxy-header": proxy_header,
        "emfile": emfile,
        "tls-silent": tls_silent,
        "proxy-silent": proxy_silent,
        "metrics-drip": metrics_drip,
    }
    parser.add_argument("attack", choices=list(attacks))
    attacks[parser.parse_args().attack]()


if __name__ == "__main__":
    main()
