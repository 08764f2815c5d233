"""Server memory while a client sends an endless message and never reads.

Starts a real ``twistd -n incproto`` on 127.0.0.1, sends one message until
the kernel stops taking bytes for 2 s (the server stopped reading), reads the
server's VmRSS/VmHWM from /proc, then half-closes and reads every reply.

    python benchmarks/backpressure_memory.py [--runs 3]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.processes import (
    connect,
    memory_kib,
    receive_all,
    start_incproto,
)

MiB = 1024 * 1024


def one_run() -> tuple[int, int, int]:
    server = start_incproto()
    pid = server.process.pid
    rss_before = memory_kib(pid) or 0
    chunk = memoryview(b"a" * MiB)
    sent = 0
    with connect(server.port) as sock:
        sock.sendall(b"^")
        sock.settimeout(2.0)
        try:
            while sent < 1024 * MiB:
                sent += sock.send(chunk)
        except socket.timeout:
            pass
        rss_stalled = memory_kib(pid) or 0
        sock.settimeout(30)
        sock.shutdown(socket.SHUT_WR)
        received = receive_all(sock)
    server.stop()
    assert received == b"*" + b"b" * sent
    return sent, rss_before, rss_stalled


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    runs = [one_run() for _ in range(parser.parse_args().runs)]
    for sent, before, stalled in runs:
        print(
            f"stalled after {sent / MiB:.1f} MiB; server VmRSS {before} -> "
            f"{stalled} KiB (+{stalled - before} KiB)"
        )
    growth = statistics.median(stalled - before for _, before, stalled in runs)
    print(f"median growth: {growth:.0f} KiB")


if __name__ == "__main__":
    main()
