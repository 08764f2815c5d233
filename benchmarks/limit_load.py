"""ConnectionLimit under load, against a real ``twistd -n incproto``.

queue:  N clients (default 5,000) connect at once to a server with
        ``--max-connections 100 --queue N``; each waits for ``*``, sends
        ``^abc$``, checks ``bcd`` and closes.  Reports the time until all are
        served, the server's peak and final memory, and any wrong reply.
reject: 100 clients hold admitted connections and run round trips for S
        seconds against ``--max-connections 100 --queue 0``, once unloaded and
        once while another process opens 20,000 connections that are
        rejected.  Reports both round-trip rates and their ratio.

The clients are asyncio (stdlib) in processes of their own, so that the load
generator does not share the server's process.

    python benchmarks/limit_load.py queue [--clients 5000] [--runs 3]
    python benchmarks/limit_load.py reject [--seconds 5] [--connects 20000]
        [--rate CONNECTS_PER_SECOND] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import resource
import selectors
import socket
import statistics
import sys
import time
from pathlib import Path
from typing import Any, List, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.processes import ServerProcess, memory_kib, start_incproto


def raise_fd_limit() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def start_server(*options: str) -> ServerProcess:
    raise_fd_limit()  # inherited by twistd
    return start_incproto(*options)


# queue mode


async def one_client(port: int) -> bool:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        if await reader.readexactly(1) != b"*":
            return False
        writer.write(b"^abc$")
        return await reader.readexactly(3) == b"bcd"
    finally:
        writer.close()


async def many_clients(port: int, count: int) -> Tuple[int, float]:
    start = time.perf_counter()
    results = await asyncio.gather(
        *(one_client(port) for _ in range(count)), return_exceptions=True
    )
    return sum(r is True for r in results), time.perf_counter() - start


def queue_run(clients: int) -> Tuple[int, float, int, int, int]:
    server = start_server("--max-connections", "100", "--queue", str(clients))
    pid = server.process.pid
    before = memory_kib(pid) or 0
    raise_fd_limit()
    correct, seconds = asyncio.run(many_clients(server.port, clients))
    after, peak = memory_kib(pid) or 0, memory_kib(pid, "VmHWM") or 0
    server.stop()
    return correct, seconds, before, peak, after


# reject mode


async def pinger(
    port: int, greeted: asyncio.Queue[None], go: asyncio.Event, seconds: float
) -> int:
    while True:  # until admitted: the last run's clients may still hold slots
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            await reader.readexactly(1)
            break
        except asyncio.IncompleteReadError:
            writer.close()
            await asyncio.sleep(0.05)
    greeted.put_nowait(None)
    await go.wait()
    deadline = time.perf_counter() + seconds
    trips = 0
    while time.perf_counter() < deadline:
        writer.write(b"^abcdefg$")
        if await reader.readexactly(7) != b"bcdefgh":
            raise AssertionError("wrong reply")
        trips += 1
    writer.close()
    return trips


def ping_process(
    port: int, seconds: float, connected: Any, go: Any, out: Any, count: int = 100
) -> None:
    """C{count} admitted clients: set C{connected} once all are greeted, start
    round trips when C{go} is set, and put the number done in C{out}."""

    async def run() -> int:
        greeted: asyncio.Queue[None] = asyncio.Queue()
        start = asyncio.Event()
        tasks = [
            asyncio.ensure_future(pinger(port, greeted, start, seconds))
            for _ in range(count)
        ]
        for _ in tasks:
            await greeted.get()
        connected.set()
        await asyncio.get_running_loop().run_in_executor(None, go.wait)
        start.set()
        return sum(await asyncio.gather(*tasks))

    out.put(asyncio.run(run()))


def flood(
    port: int, connects: int, rate: float = 0.0, concurrency: int = 200
) -> Tuple[int, int]:
    """
    Open C{connects} connections, C{concurrency} at a time and at most
    C{rate} per second (0: as fast as possible), each read until the server
    closes it; count those closed with no data (rejected with a FIN) and the
    rest.  Plain non-blocking sockets: a lean load generator.
    """
    selector = selectors.DefaultSelector()
    started = rejected = other = 0

    begin = time.monotonic()

    def open_one() -> None:
        nonlocal started
        if rate:
            ahead = begin + started / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)  # pacing the load generator
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", port))
        selector.register(sock, selectors.EVENT_READ)
        started += 1

    for _ in range(min(concurrency, connects)):
        open_one()
    deadline = time.monotonic() + 120
    while selector.get_map() and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=1.0):
            sock = key.fileobj
            try:
                data = sock.recv(1024)  # type: ignore[union-attr]
            except OSError:
                data = b"error"
            selector.unregister(sock)
            sock.close()  # type: ignore[union-attr]
            if data == b"":
                rejected += 1
            else:
                other += 1
            if started < connects:
                open_one()
    other += len(selector.get_map())
    return rejected, other


def flood_process(port: int, connects: int, rate: float, go: Any, out: Any) -> None:
    raise_fd_limit()
    go.wait()
    start = time.perf_counter()
    rejected, other = flood(port, connects, rate)
    out.put((rejected, other, time.perf_counter() - start))


def reject_run(
    seconds: float, connects: int, rate: float
) -> Tuple[float, float, Tuple[int, int, float]]:
    server = start_server("--max-connections", "100", "--queue", "0")
    rates = []
    flooded: Tuple[int, int, float] = (0, 0, 0.0)
    for with_flood in (False, True):
        connected, go = multiprocessing.Event(), multiprocessing.Event()
        out: Any = multiprocessing.Queue()
        pings = multiprocessing.Process(
            target=ping_process, args=(server.port, seconds, connected, go, out)
        )
        pings.start()
        connected.wait()  # the pingers hold all 100 slots
        if with_flood:
            flood_out: Any = multiprocessing.Queue()
            flooder = multiprocessing.Process(
                target=flood_process, args=(server.port, connects, rate, go, flood_out)
            )
            flooder.start()
        go.set()
        rates.append(out.get() / seconds)
        pings.join()
        if with_flood:
            flooded = flood_out.get()
            flooder.join()
    server.stop()
    return rates[0], rates[1], flooded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["queue", "reject"])
    parser.add_argument("--clients", type=int, default=5000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connects", type=int, default=20000)
    parser.add_argument("--rate", type=float, default=0.0, help="connects/s, 0: max")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if args.mode == "queue":
        results = [queue_run(args.clients) for _ in range(args.runs)]
        for correct, seconds, before, peak, after in results:
            print(
                f"{correct}/{args.clients} served correctly in {seconds:.2f} s; server "
                f"VmRSS {before} -> {after} KiB, peak {peak} KiB "
                f"({(peak - before) / args.clients:.2f} KiB per client)"
            )
        print(f"median time {statistics.median(r[1] for r in results):.2f} s")
    else:
        ratios: List[float] = []
        for _ in range(args.runs):
            unloaded, loaded, (rejected, other, flood_seconds) = reject_run(
                args.seconds, args.connects, args.rate
            )
            ratios.append(loaded / unloaded)
            print(
                f"round trips/s: unloaded {unloaded:.0f}, during flood {loaded:.0f} "
                f"(ratio {loaded / unloaded:.2f}); flood: {rejected} rejected (FIN), "
                f"{other} other, in {flood_seconds:.1f} s"
            )
        print(f"median loaded/unloaded ratio {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main()
