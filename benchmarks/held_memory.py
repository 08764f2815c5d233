"""What Python allocates per held connection: by line on CPython
(tracemalloc), in all on PyPy (its collector's live bytes).

    python benchmarks/held_memory.py [--servers incproto,twisted] [-n 10000]
        [--runs 3] [--top 12]

For each server and run, a fresh process serves on 127.0.0.1: incproto as
twistd would build it (``makeService``, access log to standard output), or
the shortest Twisted server (benchmarks/servers/twisted_server.py). It is
warmed up by ``load ping -c 10 -d 1``; then it starts tracemalloc, and
``load burst -n N`` opens N connections at once, each answered once and
held. Once the server holds N connections it takes a snapshot: the bytes
still allocated since tracing began, over N, are the bytes per held
connection, and the lines that allocated them are printed with theirs.

On PyPy (run it with PyPy's python: ``.venv-pypy/bin/python
benchmarks/held_memory.py``), which has no tracemalloc, the figure is the
growth of what its garbage collector holds (its arenas and the objects it
allocated outside them) between two full collections, one before the
burst and one once the connections are held: the live bytes per held
connection, without the garbage a collector keeps between collections
(which resident memory includes). No lines.

``PYTHONPATH=TREE`` measures the incproto of another tree (an A/B).
Resident memory (what compare.py's burst reports) adds the allocators' own
overhead to this, the same for every CPython server: see docs/performance.md.
"""

from __future__ import annotations

import argparse
import atexit
import gc
import json
import platform
import socket
import statistics
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Dict, List

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.append(str(ROOT))  # after PYTHONPATH: PYTHONPATH=TREE measures TREE's

RESULT = "held:"  # before the result's line; the access log shares stdout
TRACING = "tracing:"  # tracing started: the burst may begin
PROTOCOL_CLASS = {"incproto": "IncrementProtocol", "twisted": "Increment"}


PYPY = platform.python_implementation() == "PyPy"


def live_bytes() -> int:
    """PyPy: what its collector holds for live objects, after a full
    collection (the arenas and the objects allocated outside them)."""
    gc.collect()
    stats = gc.get_stats()._s  # type: ignore[attr-defined]  # PyPy's numbers
    return int(stats.total_arena_memory + stats.total_rawmalloced_memory)


def traced(count: int, top: int) -> Dict[str, Any]:
    """CPython: the bytes tracemalloc traced, per held connection, and the
    C{top} lines that allocated the most of them."""
    import tracemalloc

    snapshot = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(False, tracemalloc.__file__)]
    )
    stats = snapshot.statistics("lineno")
    total = sum(s.size for s in stats)
    lines = [
        (f"{Path(s.traceback[0].filename).name}:{s.traceback[0].lineno}",
         s.size / count)
        for s in stats[:top]
    ]  # fmt: skip
    return {"per_connection": total / count, "top": lines}


def serve(kind: str, port: int, count: int, top: int) -> None:
    """Serve on C{port}; on a line on stdin, trace; print once C{count} held."""
    from twisted.internet import reactor
    from twisted.internet.task import LoopingCall

    if kind == "incproto":
        from incproto.tap import Options, makeService

        options = Options()
        listen = f"tcp:{port}:interface=127.0.0.1"
        options.parseOptions(
            ["--port", listen, "--backlog", "16384", "--access-log", "-"]
        )
        service = makeService(options)
        service.privilegedStartService()
        service.startService()
    else:
        from servers.twisted_server import Increment
        from twisted.internet.protocol import Factory

        reactor.listenTCP(  # type: ignore[attr-defined]
            port, Factory.forProtocol(Increment), 16384, "127.0.0.1"
        )
    name = PROTOCOL_CLASS[kind]

    def held() -> int:
        return sum(1 for o in gc.get_objects() if type(o).__name__ == name)

    def check() -> None:
        if held() < count:
            return
        polling.stop()
        if PYPY:
            grown = live_bytes() - baseline[0]
            result = {"per_connection": grown / count, "top": []}
        else:
            result = traced(count, top)
        print(RESULT, json.dumps(result), flush=True)
        reactor.stop()  # type: ignore[attr-defined]

    polling = LoopingCall(check)
    baseline: List[int] = []

    def start() -> None:
        if PYPY:
            baseline.append(live_bytes())
        else:
            import tracemalloc  # CPython's only

            tracemalloc.start()
        print(TRACING, flush=True)
        polling.start(0.25)

    def wait() -> None:
        sys.stdin.readline()
        reactor.callFromThread(start)  # type: ignore[attr-defined]

    threading.Thread(target=wait, daemon=True).start()
    print("listening", flush=True)
    reactor.run()  # type: ignore[attr-defined]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def measure(kind: str, count: int, top: int, load: str) -> Dict[str, Any]:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", kind, "--port", str(port),
         "-n", str(count), "--top", str(top)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert server.stdin is not None and server.stdout is not None
    try:
        while "listening" not in server.stdout.readline():
            if server.poll() is not None:
                sys.exit(f"{kind} did not start")
        address = ["127.0.0.1", str(port)]
        subprocess.run([load, "ping", "-c", "10", "-d", "1", *address],
                       check=True, capture_output=True)  # fmt: skip
        server.stdin.write("trace\n")
        server.stdin.flush()
        # Not before tracing started: connections made earlier would be
        # counted as held without their bytes (seen under load).
        for line in server.stdout:
            if line.startswith(TRACING):
                break
        else:
            sys.exit(f"{kind} exited before it started tracing")
        burst = subprocess.Popen(
            [load, "burst", "-n", str(count), "-H", "60", "-T", "120", *address],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            for line in server.stdout:
                if line.startswith(RESULT):
                    return dict(json.loads(line[len(RESULT) :]))
            sys.exit(f"{kind} exited before it held {count} connections")
        finally:
            burst.kill()
            burst.wait()
    finally:
        server.kill()
        server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", default="incproto,twisted")
    parser.add_argument("-n", type=int, default=10000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port, args.n, args.top)
        return
    from compare import LOAD_SOURCE, built, raise_kernel_backlogs

    if args.n > 128:  # a burst beyond the usual listen backlogs
        atexit.register(raise_kernel_backlogs())
    load = built(LOAD_SOURCE, "-pthread")
    for kind in args.servers.split(","):
        if kind not in PROTOCOL_CLASS:
            sys.exit(
                f"unknown server {kind!r}: choose from {', '.join(PROTOCOL_CLASS)}"
            )
        results: List[Dict[str, Any]] = [
            measure(kind, args.n, args.top, load) for _ in range(args.runs)
        ]
        figures = [r["per_connection"] for r in results]
        print(f"{kind}: {statistics.median(figures):,.0f} bytes per held connection "
              f"(runs: {', '.join(f'{f:,.0f}' for f in figures)})")  # fmt: skip
        for where, size in results[-1]["top"]:
            print(f"  {size:8.1f}  {where}")


if __name__ == "__main__":
    main()
