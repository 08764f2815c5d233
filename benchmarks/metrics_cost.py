"""What --metrics costs: ping round trips with and without it.

100 clients hold connections to a real ``twistd -n incproto`` and run round
trips of 8-byte messages for S seconds, while this process scrapes
/metrics every 0.5 s (when it is on).  Runs alternate between the two
servers; prints round trips/s and the median ratio.

    python benchmarks/metrics_cost.py [--runs 5] [--seconds 5]
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, List

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from limit_load import ping_process

from tests.support.processes import start_incproto


def one_run(metrics: bool, seconds: float) -> float:
    options = ["--metrics", "tcp:0:interface=127.0.0.1"] if metrics else []
    server = start_incproto(*options)
    metrics_url = None
    if metrics:
        port = server.output.split("metrics listening on 127.0.0.1:")[-1].split()[0]
        metrics_url = f"http://127.0.0.1:{int(port)}/metrics"
    connected, go = multiprocessing.Event(), multiprocessing.Event()
    out: Any = multiprocessing.Queue()
    pings = multiprocessing.Process(
        target=ping_process, args=(server.port, seconds, connected, go, out)
    )
    pings.start()
    connected.wait()
    go.set()
    deadline = time.monotonic() + seconds
    scrapes = 0
    while metrics_url and time.monotonic() < deadline:
        with urllib.request.urlopen(metrics_url, timeout=10) as response:
            assert b"incproto_connections_active 100.0" in response.read()
        scrapes += 1
        time.sleep(0.5)  # scrape interval (benchmark pacing)
    rate = out.get() / seconds
    pings.join()
    server.stop()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    ratios: List[float] = []
    for _ in range(args.runs):
        without = one_run(False, args.seconds)
        with_metrics = one_run(True, args.seconds)
        ratios.append(with_metrics / without)
        print(
            f"round trips/s: without {without:.0f}, with --metrics {with_metrics:.0f}"
            f" (ratio {ratios[-1]:.3f})"
        )
    print(f"median ratio {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
