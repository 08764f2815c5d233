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

    python benchmarks/hostile.py {dead-queue,proxy-header,emfile}
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import struct
import sys
import time
import urllib.request
from pathlib import Path
from typing import List

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

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
    parser.add_argument("attack", choices=["dead-queue", "proxy-header", "emfile"])
    args = parser.parse_args()
    {"dead-queue": dead_queue, "proxy-header": proxy_header, "emfile": emfile}[
        args.attack
    ]()


if __name__ == "__main__":
    main()
