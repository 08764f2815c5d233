"""Server memory while a client sends an endless message and never reads.

Starts a real ``twistd -n incproto`` on 127.0.0.1 and stalls ``--clients``
connections: each sends one message until the kernel stops taking bytes for
2 s (the server stopped reading).  The server's VmRSS from /proc after half
of them and after all gives the cost of one; then each half-closes and
reads every reply.
With ``--threads N`` or ``--processes N`` the handler runs in that pool,
whose per-connection bound is inline's plus ``workBuffer`` (256 KiB).

    python benchmarks/backpressure_memory.py [--runs 3] [--clients 16]
        [--threads N | --processes N] [--reset-rounds N]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import struct
import sys
from pathlib import Path
from typing import List

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.processes import (
    connect,
    half_close_round_trip,
    memory_kib,
    receive_all,
    start_incproto,
)

MiB = 1024 * 1024


def stall(port: int) -> tuple[socket.socket, int]:
    """Connect and send one message until the server stops taking bytes."""
    chunk = memoryview(b"a" * MiB)
    sent = 0
    sock = connect(port)
    sock.sendall(b"^")
    sock.settimeout(2.0)
    try:
        while sent < 1024 * MiB:
            sent += sock.send(chunk)
    except socket.timeout:
        pass
    return sock, sent


def one_run(options: List[str], clients: int) -> tuple[int, int, int]:
    """
    Stall C{clients} connections, in two halves; return the bytes each sent
    (the mean), and the server's VmRSS (KiB) after the first half and after
    the second: their difference is what the second half costs, without
    what a first stall costs once (a pool's buffers, the allocator's arenas).
    """
    server = start_incproto(*options)
    pid = server.process.pid
    assert half_close_round_trip(server.port, b"^" + b"a" * (4 * MiB)) == (
        b"*" + b"b" * (4 * MiB)
    )
    half = clients // 2
    stalled = [stall(server.port) for _ in range(half)]
    rss_half = memory_kib(pid) or 0
    stalled += [stall(server.port) for _ in range(clients - half)]
    rss_stalled = memory_kib(pid) or 0
    for sock, sent in stalled:
        sock.settimeout(30)
        sock.shutdown(socket.SHUT_WR)
        received = receive_all(sock)
        sock.close()
        assert received == b"*" + b"b" * sent
    server.stop()
    mean = sum(sent for _, sent in stalled) // clients
    return mean, rss_half, rss_stalled


def reset_rounds(options: List[str], clients: int, rounds: int) -> List[int]:
    """
    C{rounds} times: stall C{clients} connections, then reset them all
    (SO_LINGER 0); the server's VmRSS (KiB) after each round.  Memory a
    stalled connection held must be reused, not pile up.
    """
    server = start_incproto(*options)
    after = []
    for _ in range(rounds):
        stalled = [stall(server.port) for _ in range(clients)]
        for sock, _sent in stalled:
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
            sock.close()
        after.append(memory_kib(server.process.pid) or 0)
    server.stop()
    return after


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--clients", type=int, default=16, help="stalled at once")
    parser.add_argument(
        "--reset-rounds",
        type=int,
        default=0,
        help="instead: stall --clients, reset them, N times; VmRSS each round",
    )
    pool = parser.add_mutually_exclusive_group()
    pool.add_argument("--threads", type=int, help="run the handler in N threads")
    pool.add_argument("--processes", type=int, help="run it in N processes")
    args = parser.parse_args()
    options = []
    for name in ("threads", "processes"):
        if getattr(args, name):
            options += [f"--{name}", str(getattr(args, name))]
    if args.reset_rounds:
        rss = reset_rounds(options, args.clients, args.reset_rounds)
        print(f"VmRSS after each round (KiB, {' '.join(options) or 'inline'}): {rss}")
        return
    runs = [one_run(options, args.clients) for _ in range(args.runs)]
    second = args.clients - args.clients // 2
    for sent, half, stalled in runs:
        print(
            f"{args.clients} stalled after {sent / MiB:.1f} MiB each; server VmRSS "
            f"{half} KiB after {args.clients // 2}, {stalled} KiB after all: "
            f"{(stalled - half) / second:.0f} KiB a connection"
        )
    growth = statistics.median((stalled - half) / second for _, half, stalled in runs)
    print(
        f"median growth a stalled connection ({' '.join(options) or 'inline'}): "
        f"{growth:.0f} KiB"
    )


if __name__ == "__main__":
    main()
