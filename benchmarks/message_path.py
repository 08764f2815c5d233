"""incproto's own CPU per message, without sockets or the reactor.

    python benchmarks/message_path.py [--runs 5] [--messages 200000]

Feeds 8-byte messages (C{^abcdef$}, as incproto-client's ping sends them)
to an L{IncrementProtocol} on a transport that discards writes, and
reports microseconds per message: the part of a round trip that is
incproto's (parser, handler, counting, the write call), to set against
the server CPU per message that benchmarks/compare.py measures.  Run it
with each interpreter (.venv/bin/python, .venv-pypy/bin/python).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, List

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twisted.internet.task import Clock

from incproto.protocol import IncrementFactory, IncrementProtocol


class NullTransport:
    """Just enough transport for the protocol: writes go nowhere."""

    def write(self, data: bytes) -> None:
        pass

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        pass

    def getPeer(self) -> str:
        return "peer"


def one_run(messages: int, message: bytes) -> float:
    protocol = IncrementFactory(clock=Clock()).buildProtocol(None)
    assert isinstance(protocol, IncrementProtocol)
    protocol.makeConnection(NullTransport())  # type: ignore[arg-type]
    receive = protocol.dataReceived
    began = time.perf_counter()
    for _ in range(messages):
        receive(message)
    return (time.perf_counter() - began) / messages * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--messages", type=int, default=200_000)
    args = parser.parse_args()
    one_run(args.messages, b"^abcdef$")  # warm up (PyPy's JIT)
    times: List[float] = [one_run(args.messages, b"^abcdef$") for _ in range(args.runs)]
    runs = ", ".join(f"{t:.3f}" for t in times)
    print(
        f"{platform.python_implementation()} {platform.python_version()}: "
        f"{statistics.median(times):.3f} us per message (runs: {runs})"
    )


if __name__ == "__main__":
    main()
