"""A handler that leaks 1 MiB per call, with and without
``--max-jobs-per-process`` (issue 22).

Starts ``twistd -n incproto --processes 2 --handler
tests.support.amplifying:leaky`` on 127.0.0.1 and makes ``--calls`` calls
(one job each: a round trip of ``^a$``), then reports how much the pool
processes grew (VmRSS from /proc, summed), without recycling and with
``--max-jobs-per-process N``.

    python benchmarks/leak_recycling.py [--runs 3] [--calls 300] [--max-jobs 50]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Dict, List, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.processes import (
    connect,
    descendants,
    memory_kib,
    receive_exactly,
    start_incproto,
)


def pool_kib(pid: int) -> int:
    return sum(memory_kib(child) or 0 for child in descendants(pid))


def one_run(options: Sequence[str], calls: int) -> float:
    """MiB the pool processes grew by over C{calls} calls."""
    server = start_incproto(
        "--processes", "2", "--handler", "tests.support.amplifying:leaky",
        *options, cwd=Path(__file__).resolve().parent.parent,
    )  # fmt: skip
    try:
        sock = connect(server.port)
        assert receive_exactly(sock, 1) == b"*"
        sock.sendall(b"^a$")
        assert receive_exactly(sock, 1) == b"b"
        before = pool_kib(server.process.pid)
        for _ in range(calls):
            sock.sendall(b"^a$")
            assert receive_exactly(sock, 1) == b"b"
        grown = pool_kib(server.process.pid) - before
        sock.close()
    finally:
        server.stop()
    return grown / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--max-jobs", type=int, default=50)
    args = parser.parse_args()
    cases = {
        "never recycled": [],
        f"--max-jobs-per-process {args.max_jobs}": [
            "--max-jobs-per-process", str(args.max_jobs)
        ],
    }  # fmt: skip
    results: Dict[str, List[float]] = {name: [] for name in cases}
    for run in range(args.runs):
        for name, options in cases.items():
            grown = one_run(options, args.calls)
            results[name].append(grown)
            print(f"run {run + 1}, {name}: the pool grew {grown:.0f} MiB", flush=True)
    print(f"medians, after {args.calls} calls:")
    for name, values in results.items():
        print(f"  {name}: +{statistics.median(values):.0f} MiB")


if __name__ == "__main__":
    main()
