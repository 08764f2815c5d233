"""Admitted clients under a connection flood, against a real ``twistd -n incproto``.

50 clients hold admitted connections of ``--max-connections 100`` and run
round trips for S seconds, once calm and once while a C load generator
(benchmarks/flood/flood.c, built with ``cc`` on first use) opens and closes
connections as fast as it can.  Reports both round-trip rates and their
ratio, per mode:

reject: ``--queue 0``: every connection beyond the limit is refused.
queue:  ``--queue 100`` with the queue already full of 100 idle clients.

    python benchmarks/flood.py [--modes reject,queue] [--seconds 5] [--runs 5]
"""

from __future__ import annotations

import argparse
import multiprocessing
import shutil
import socket
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Tuple

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from limit_load import ping_process, start_server  # noqa: E402

from tests.support.processes import ServerProcess  # noqa: E402

PINGERS = 50
LIMIT = 100
FULL_QUEUE = 100
CONCURRENCY = 5000


def flood_binary() -> str:
    """Build the C flood generator (once) and return its path."""
    source = HERE / "flood" / "flood.c"
    binary = HERE / "flood" / "flood"
    if not binary.exists() or binary.stat().st_mtime < source.stat().st_mtime:
        compiler = shutil.which("cc") or shutil.which("gcc")
        if compiler is None:
            sys.exit("flood.py needs a C compiler (cc) to build flood.c")
        subprocess.run([compiler, "-O2", "-o", str(binary), str(source)], check=True)
    return str(binary)


def rates(server: ServerProcess, seconds: float, fill: int) -> Tuple[float, float, str]:
    """
    Round trips/s of the pingers calm, then under the flood; once the
    pingers are admitted, C{fill} idle clients take the other slots and
    the queue.
    """
    found: List[float] = []
    flooded = ""
    for with_flood in (False, True):
        connected, go = multiprocessing.Event(), multiprocessing.Event()
        out: Any = multiprocessing.Queue()
        pings = multiprocessing.Process(
            target=ping_process,
            args=(server.port, seconds, connected, go, out, PINGERS),
        )
        pings.start()
        connected.wait()
        idle = [
            socket.create_connection(("127.0.0.1", server.port)) for _ in range(fill)
        ]
        flood = None
        if with_flood:
            flood = subprocess.Popen(
                [flood_binary(), str(server.port), str(seconds + 1), str(CONCURRENCY)],
                stdout=subprocess.PIPE,
                text=True,
            )
        go.set()
        found.append(out.get() / seconds)
        pings.join()
        if flood is not None:
            flooded = flood.communicate()[0].strip()
        for sock in idle:
            sock.close()
    return found[0], found[1], flooded


def run(mode: str, seconds: float) -> Tuple[float, float, str]:
    queue = "0" if mode == "reject" else str(FULL_QUEUE)
    # A flood leaves some connections whose client closed while the kernel
    # was dropping its ACK (the listen queue was full): they look
    # established but nothing is acknowledged, so the drain waits for them
    # until --drain-timeout; the benchmark does not measure the stop.
    server = start_server(
        "--max-connections", str(LIMIT), "--queue", queue, "--drain-timeout", "1"
    )
    # Reject: the pingers and the flood share the slots; queue: idle clients
    # take the slots the pingers leave and fill the queue.
    fill = LIMIT - PINGERS + FULL_QUEUE if mode == "queue" else 0
    try:
        return rates(server, seconds, fill)
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", default="reject,queue")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    modes = args.modes.split(",")
    ratios: Dict[str, List[float]] = {mode: [] for mode in modes}
    for _ in range(args.runs):
        for mode in modes:  # interleaved
            calm, flooded, flood = run(mode, args.seconds)
            ratios[mode].append(flooded / calm)
            print(
                f"{mode}: round trips/s calm {calm:.0f}, flooded {flooded:.0f} "
                f"(ratio {flooded / calm:.2f}); flood connects/failed: {flood}",
                flush=True,
            )
    for mode in modes:
        median = statistics.median(ratios[mode])
        print(f"{mode}: median flooded/calm ratio {median:.2f}")


if __name__ == "__main__":
    main()
