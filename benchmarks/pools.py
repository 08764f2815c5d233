"""Thread and process pools against inline handling, on a real twistd.

latency:    16 clients stream heavy messages (``incproto.handlers:hashing``)
            while a prober opens a new connection every 50 ms and times its
            greeting; inline against ``--threads 4``.  Reports p50/p99.
throughput: 4 clients stream messages for S seconds; payload MB/s for
            ``--threads 1`` against ``--threads 2`` (hashing, which releases
            the GIL) and inline against ``--processes 2`` (pure_python, which
            holds it).

executors:  the process pools alone, without a server: jobs per second
            through ``multiprocessing.Pool``, ``ProcessPoolExecutor`` and
            ``pebble.ProcessPool`` (2 forkserver workers, 4 jobs in flight,
            completions handed to the main thread as the reactor would get
            them), for the increment (pool overhead) and pure_python (64 KiB
            of work); the runs of the three are interleaved.

    python benchmarks/pools.py latency [--runs 3]
    python benchmarks/pools.py throughput [--runs 3] [--seconds 5] [--size 65536]
    python benchmarks/pools.py executors [--runs 5] [--jobs 400] [--size 65536]

Clients are asyncio in this process; the server is a separate process.
Medians of the runs are printed last.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.processes import ServerProcess, start_incproto

MESSAGE = 64 * 1024


def start(options: Sequence[str]) -> ServerProcess:
    return start_incproto(*options)


async def streamer(port: int, deadline: float, size: int = MESSAGE) -> int:
    """Send one message of C{size} bytes at a time, read its reply; bytes done."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await reader.readexactly(1)
    payload = b"a" * size
    done = 0
    while time.perf_counter() < deadline:
        writer.write(b"^" + payload + b"$")
        reply = await reader.readexactly(size)
        assert reply[:1] == b"b"
        done += size
    writer.close()
    return done


async def greeting_latency(port: int) -> float:
    start = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await reader.readexactly(1)
    elapsed = time.perf_counter() - start
    writer.close()
    return elapsed


async def latency_run(port: int, probes: int = 40) -> List[float]:
    deadline = time.perf_counter() + 3600
    load = [asyncio.ensure_future(streamer(port, deadline)) for _ in range(16)]
    await asyncio.sleep(1.0)  # let the load build up (benchmark pacing)
    samples = []
    for _ in range(probes):
        samples.append(await greeting_latency(port))
        await asyncio.sleep(0.05)
    for task in load:
        task.cancel()
    await asyncio.gather(*load, return_exceptions=True)
    return samples


def percentile(samples: List[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def throughput_run(port: int, clients: int, seconds: float, size: int) -> float:
    deadline = time.perf_counter() + seconds
    done = await asyncio.gather(
        *(streamer(port, deadline, size) for _ in range(clients))
    )
    return sum(done) / seconds / 1e6


def latency(runs: int) -> None:
    results = {}
    for name, options in [
        ("inline", ["--handler", "incproto.handlers:hashing"]),
        ("--threads 4", ["--handler", "incproto.handlers:hashing", "--threads", "4"]),
    ]:
        p50s, p99s = [], []
        for _ in range(runs):
            server = start(options)
            samples = asyncio.run(latency_run(server.port))
            server.stop()
            p50s.append(percentile(samples, 0.5) * 1000)
            p99s.append(percentile(samples, 0.99) * 1000)
            print(f"{name:12} greeting p50 {p50s[-1]:8.1f} ms  p99 {p99s[-1]:8.1f} ms")
        results[name] = (statistics.median(p50s), statistics.median(p99s))
    for name, (p50, p99) in results.items():
        print(f"median {name:12} p50 {p50:8.1f} ms  p99 {p99:8.1f} ms")


def throughput(runs: int, seconds: float, size: int) -> None:
    pairs = [
        ("hashing", ["--threads", "1"], ["--threads", "2"]),
        ("pure_python", [], ["--processes", "2"]),
    ]
    for handler, base, pooled in pairs:
        ratios = []
        for _ in range(runs):
            rates = []
            for options in (base, pooled):
                server = start(["--handler", f"incproto.handlers:{handler}", *options])
                rates.append(asyncio.run(throughput_run(server.port, 4, seconds, size)))
                server.stop()
            ratios.append(rates[1] / rates[0])
            print(
                f"{handler:12} {' '.join(base) or 'inline':12} {rates[0]:7.1f} MB/s   "
                f"{' '.join(pooled):14} {rates[1]:7.1f} MB/s   ratio {ratios[-1]:.2f}"
            )
        print(f"median ratio {handler}: {statistics.median(ratios):.2f}")


def _submitter(
    kind: str, workers: int
) -> Tuple[Callable[..., None], Callable[[], None]]:
    """C{submit(fn, args, done)} and C{close()} for one kind of process pool."""
    import concurrent.futures
    import multiprocessing

    context = multiprocessing.get_context("forkserver")
    if kind == "multiprocessing.Pool":
        pool = context.Pool(workers)

        def submit(fn: Any, args: Any, done: Any) -> None:
            pool.apply_async(fn, args, callback=done, error_callback=done)

        def close() -> None:
            pool.close()
            pool.join()

        return submit, close
    if kind == "ProcessPoolExecutor":
        executor = concurrent.futures.ProcessPoolExecutor(workers, mp_context=context)

        def submit(fn: Any, args: Any, done: Any) -> None:
            executor.submit(fn, *args).add_done_callback(lambda f: done(f.result()))

        return submit, lambda: executor.shutdown(wait=True)
    import pebble

    ppool = pebble.ProcessPool(workers, context=context)

    def psubmit(fn: Any, args: Any, done: Any) -> None:
        ppool.schedule(fn, args).add_done_callback(lambda f: done(f.result()))

    def pclose() -> None:
        ppool.close()
        ppool.join()

    return psubmit, pclose


EXECUTORS = ["multiprocessing.Pool", "ProcessPoolExecutor", "pebble.ProcessPool"]


def executor_rate(kind: str, handler: Any, jobs: int, size: int) -> float:
    """Jobs per second through one pool, 4 in flight, results handed over a
    queue to this thread (as C{callFromThread} hands them to the reactor)."""
    import queue
    from operator import methodcaller

    submit, close = _submitter(kind, 2)
    results: queue.Queue[Any] = queue.Queue()
    payload = b"a" * size
    try:
        for _ in range(8):  # warm up: every worker started and imported
            submit(methodcaller("transform", b"a"), (handler,), results.put)
        for _ in range(8):
            results.get(timeout=60)
        start = time.perf_counter()
        submitted = 0
        for _ in range(4):
            submit(methodcaller("transform", payload), (handler,), results.put)
            submitted += 1
        for _ in range(jobs):
            assert results.get(timeout=60)[:1] == b"b"
            if submitted < jobs:
                submit(methodcaller("transform", payload), (handler,), results.put)
                submitted += 1
        return jobs / (time.perf_counter() - start)
    finally:
        close()


def executors(runs: int, jobs: int, size: int) -> None:
    from incproto.handlers import IncrementHandler, PurePythonHandler

    for handler in (IncrementHandler(), PurePythonHandler()):
        name = type(handler).__name__
        rates: Dict[str, List[float]] = {kind: [] for kind in EXECUTORS}
        for _ in range(runs):
            for kind in EXECUTORS:
                try:
                    rates[kind].append(executor_rate(kind, handler, jobs, size))
                except Exception as e:  # PyPy 3.9's ProcessPoolExecutor
                    print(f"{name:18} {kind:22} failed: {e!r}")
                    continue
                print(f"{name:18} {kind:22} {rates[kind][-1]:8.0f} jobs/s")
        base = statistics.median(rates[EXECUTORS[0]])
        for kind in EXECUTORS:
            if not rates[kind]:
                continue
            rate = statistics.median(rates[kind])
            print(
                f"median {name:18} {kind:22} {rate:8.0f} jobs/s  "
                f"ratio to multiprocessing.Pool {rate / base:.2f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["latency", "throughput", "executors"])
    parser.add_argument("--jobs", type=int, default=400, help="executors: jobs per run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--size", type=int, default=MESSAGE, help="message bytes")
    args = parser.parse_args()
    if args.mode == "latency":
        latency(args.runs)
    elif args.mode == "executors":
        executors(args.runs, args.jobs, args.size)
    else:
        throughput(args.runs, args.seconds, args.size)


if __name__ == "__main__":
    main()
