"""What clients that kill pool processes cost everyone else (issue 21).

Starts ``twistd -n incproto --processes 2 --handler tests.support.faulty:faulty``
and runs 4 well-behaved clients, each a loop of round trips of a 1 KiB
message on its own connection, for S seconds, with 0 and then with K
killer clients: each, once a second (``--interval``), connects, sends
``^!$`` (the handler kills its own process with SIGKILL) and waits for the
close.  Reports the
well-behaved clients' round trips per second and p99 latency, and the
processes killed, for each.

    python benchmarks/pool_respawn.py [--runs 3] [--seconds 5]
        [--killers 5] [--interval 1]
        [-- extra twistd incproto options]

With ``--replacement``, measures instead the time to replacement: with
``--processes 1``, a client kills the pool's one process, and another
times its round trip sent right after (the new process's start), 10 times
a run.

    python benchmarks/pool_respawn.py --replacement [--runs 3]

Clients are threads in this process; the server is a separate process.
Medians of the runs are printed last.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.processes import connect, receive_exactly, start_incproto

MESSAGE = b"^" + b"a" * 1024 + b"$"
REPLY = b"b" * 1024


def good_client(port: int, deadline: float, latencies: List[float]) -> None:
    sock = connect(port)
    assert receive_exactly(sock, 1) == b"*"
    while time.monotonic() < deadline:
        started = time.monotonic()
        sock.sendall(MESSAGE)
        reply = receive_exactly(sock, len(REPLY))
        if reply != REPLY:  # its connection was lost: open another
            sock.close()
            sock = connect(port)
            receive_exactly(sock, 1)
            continue
        latencies.append(time.monotonic() - started)
    sock.close()


def killer(port: int, deadline: float, kills: List[int], interval: float) -> None:
    while time.monotonic() < deadline:
        time.sleep(interval)
        try:
            sock = connect(port)
            sock.sendall(b"^!$")
            while sock.recv(65536):
                pass
            sock.close()
            kills.append(1)
        except OSError:
            time.sleep(0.01)


def one_run(
    options: Sequence[str], killers: int, seconds: float, interval: float
) -> Tuple[float, float, int]:
    server = start_incproto(
        "--processes", "2", "--handler", "tests.support.faulty:faulty", *options,
        cwd=Path(__file__).resolve().parent.parent,
    )  # fmt: skip
    try:
        # Let the pool's processes start before measuring.
        sock = connect(server.port)
        receive_exactly(sock, 1)
        sock.sendall(MESSAGE)
        assert receive_exactly(sock, len(REPLY)) == REPLY
        sock.close()
        deadline = time.monotonic() + seconds
        latencies: List[float] = []
        kills: List[int] = []
        threads = [
            threading.Thread(
                target=good_client, args=(server.port, deadline, latencies)
            )
            for _ in range(4)
        ] + [
            threading.Thread(
                target=killer, args=(server.port, deadline, kills, interval)
            )
            for _ in range(killers)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(seconds + 60)
    finally:
        server.stop()
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99)] if latencies else float("inf")
    return len(latencies) / seconds, p99, len(kills)


def replacement_times(options: Sequence[str], count: int = 10) -> List[float]:
    """Seconds from a kill of the one pool process to a served round trip."""
    server = start_incproto(
        "--processes", "1", "--handler", "tests.support.faulty:faulty", *options,
        cwd=Path(__file__).resolve().parent.parent,
    )  # fmt: skip
    times = []
    try:
        for _ in range(count):
            sock = connect(server.port)
            receive_exactly(sock, 1)
            sock.sendall(MESSAGE)  # the process is up
            assert receive_exactly(sock, len(REPLY)) == REPLY
            killer = connect(server.port)
            killer.sendall(b"^!$")
            while killer.recv(65536):
                pass
            killer.close()
            started = time.monotonic()
            sock.sendall(MESSAGE)
            assert receive_exactly(sock, len(REPLY)) == REPLY
            times.append(time.monotonic() - started)
            sock.close()
    finally:
        server.stop()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--killers", type=int, default=5)
    parser.add_argument("--interval", type=float, default=1.0, help="between kills")
    parser.add_argument("--replacement", action="store_true")
    parser.add_argument("options", nargs="*", help="extra twistd incproto options")
    args = parser.parse_args()
    if args.replacement:
        medians = []
        for run in range(args.runs):
            times = sorted(replacement_times(args.options))
            medians.append(statistics.median(times))
            print(
                f"run {run + 1}: time to replacement median "
                f"{medians[-1] * 1000:.0f} ms, max {times[-1] * 1000:.0f} ms",
                flush=True,
            )
        print(f"median: {statistics.median(medians) * 1000:.0f} ms")
        return
    results: Dict[int, List[Tuple[float, float, int]]] = {0: [], args.killers: []}
    for run in range(args.runs):
        for killers in results:
            rate, p99, kills = one_run(
                args.options, killers, args.seconds, args.interval
            )
            results[killers].append((rate, p99, kills))
            print(
                f"run {run + 1}, {killers} killers: {rate:.0f} round trips/s, "
                f"p99 {p99 * 1000:.1f} ms, {kills} processes killed",
                flush=True,
            )
    print("medians:")
    for killers, rows in results.items():
        rate = statistics.median(r for r, _, _ in rows)
        p99 = statistics.median(p for _, p, _ in rows)
        kills = statistics.median(k for _, _, k in rows)
        print(
            f"  {killers} killers: {rate:.0f} round trips/s, p99 {p99 * 1000:.1f} ms, "
            f"{kills:.0f} killed"
        )


if __name__ == "__main__":
    main()
