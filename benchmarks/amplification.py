"""Server memory with clients that do not read, and a handler that replies
100 times what it is sent (issue 22).

Starts a real ``twistd -n incproto --handler
tests.support.amplifying:hundredfold`` on 127.0.0.1, inline, with
``--threads 2`` and with ``--processes 2``, and stalls ``--clients``
connections: each sends one message until the kernel stops taking bytes
for 1 s, and never reads.  Reports the server's VmRSS from /proc (the
reactor's process; with processes, its pool's apart) before, with every
client stalled, and 2 s after they all closed.

    python benchmarks/amplification.py [--runs 3] [--clients 20]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.processes import (
    connect,
    descendants,
    memory_kib,
    receive_exactly,
    start_incproto,
)

MiB = 1024 * 1024
RUNNERS = {
    "inline": [],
    "threads": ["--threads", "2"],
    "processes": ["--processes", "2"],
}


def stall(port: int) -> socket.socket:
    """Connect and send one message until the server stops taking bytes."""
    chunk = memoryview(b"a" * 65536)
    sock = connect(port)
    sock.sendall(b"^")
    sock.settimeout(1.0)
    sent = 0
    try:
        while sent < 64 * MiB:
            sent += sock.send(chunk)
    except socket.timeout:
        pass
    return sock


def one_run(options: Sequence[str], clients: int) -> Tuple[int, int, int, int]:
    """The reactor process's VmRSS (KiB) before, stalled and after, and
    the pool processes' growth while stalled."""
    server = start_incproto(
        "--handler", "tests.support.amplifying:hundredfold", "--no-connection-log",
        *options, cwd=Path(__file__).resolve().parent.parent,
    )  # fmt: skip
    pid = server.process.pid
    sock = connect(server.port)
    receive_exactly(sock, 1)
    sock.sendall(b"^abc$")
    assert receive_exactly(sock, 300) == b"b" * 100 + b"c" * 100 + b"d" * 100
    sock.close()
    time.sleep(0.5)
    pool_before = sum(memory_kib(p) or 0 for p in descendants(pid))
    before = memory_kib(pid) or 0
    stalled = [stall(server.port) for _ in range(clients)]
    time.sleep(1.0)
    during = memory_kib(pid) or 0
    pool_during = sum(memory_kib(p) or 0 for p in descendants(pid))
    for sock in stalled:
        sock.setsockopt(
            socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
        )
        sock.close()  # a reset: the server drops what it held at once
    time.sleep(2.0)
    after = memory_kib(pid) or 0
    server.stop()
    return before, during, after, pool_during - pool_before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--clients", type=int, default=20)
    args = parser.parse_args()
    results: Dict[str, List[Tuple[int, int, int, int]]] = {r: [] for r in RUNNERS}
    for run in range(args.runs):
        for runner, options in RUNNERS.items():
            row = one_run(options, args.clients)
            results[runner].append(row)
            before, during, after, pool = row
            print(
                f"run {run + 1}, {runner}: {(during - before) / 1024:.1f} MiB held "
                f"by {args.clients} stalled clients, "
                f"{(after - before) / 1024:.1f} MiB after they closed"
                + (f"; pool processes +{pool / 1024:.1f} MiB" if pool else ""),
                flush=True,
            )
    print("medians (MiB held while stalled / after close):")
    for runner, rows in results.items():
        held = statistics.median((d - b) / 1024 for b, d, _, _ in rows)
        kept = statistics.median((a - b) / 1024 for b, _, a, _ in rows)
        print(f"  {runner}: {held:.1f} / {kept:.1f}")


if __name__ == "__main__":
    main()
