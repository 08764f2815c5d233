"""Parser throughput: MB/s of IncrementParser.feed on a long message.

Feeds a 64 MiB message (and a mixed stream of many short messages) in
64 KiB chunks, as Twisted's TCP transport delivers them, and compares it in
the same run with the ceiling of a bare C{bytes.translate} over the same
chunks.  Prints the median of several runs.

    python benchmarks/parser_throughput.py [--size-mib 64] [--runs 7]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from typing import Callable, List

from incproto.parser import IncrementParser

CHUNK = 64 * 1024
PLUS_ONE = bytes((b + 1) % 256 for b in range(256))


def chunks_of(stream: bytes) -> List[bytes]:
    return [stream[i : i + CHUNK] for i in range(0, len(stream), CHUNK)]


def parse(chunks: List[bytes]) -> None:
    feed = IncrementParser().feed
    for chunk in chunks:
        feed(chunk)


def translate_only(chunks: List[bytes]) -> None:
    for chunk in chunks:
        chunk.translate(PLUS_ONE)


def median_mbps(
    run: Callable[[List[bytes]], None], chunks: List[bytes], runs: int
) -> float:
    size = sum(map(len, chunks))
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run(chunks)
        times.append(time.perf_counter() - start)
    return size / statistics.median(times) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=64)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    size = args.size_mib * 1024 * 1024
    long_message = b"^" + b"a" * (size - 1)
    short = b"^ab$^kl$^80$50xyz^123$" * (size // 22)
    print(
        f"{platform.python_implementation()} {platform.python_version()}, "
        f"{args.size_mib} MiB in {CHUNK // 1024} KiB chunks, median of {args.runs}"
    )
    for name, stream in (("one long message", long_message), ("short messages", short)):
        chunks = chunks_of(stream)
        ours = median_mbps(parse, chunks, args.runs)
        ceiling = median_mbps(translate_only, chunks, args.runs)
        print(
            f"  {name:18} parser {ours:8.0f} MB/s   bytes.translate {ceiling:8.0f} MB/s"
            f"   ratio {ours / ceiling:.2f}"
        )


if __name__ == "__main__":
    main()
