"""incproto on a real, impaired network: inside a network namespace the test
creates, with loss (and delay and reordering where the kernel has netem) on
its loopback: random streams, randomly chunked and half-closed, come back
byte for byte; the idle timeout, the queue timeout and the drain behave."""

from __future__ import annotations

import random
import re
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest

from tests.support.formats import reference
from tests.support.netns import Namespace, impaired_namespace
from tests.support.processes import (
    TIMEOUT,
    ServerProcess,
    receive_all,
    receive_exactly,
    script,
    send_while_reading,
)

STREAMS = 8
STREAM_BYTES = (32 * 1024, 192 * 1024)
IDLE, QUEUE_TIMEOUT, LIMIT = 3.0, 1.0, 10
# What a close may take beyond its timeout here: a lost FIN is resent after
# a retransmission timeout (200 ms at least, doubling).
SLACK = 2.5
# How late this process may see a connect return (thread hand-offs).
EARLY = 0.1


@pytest.fixture(scope="module")
def namespace() -> Iterator[Namespace]:
    made, reason = impaired_namespace()
    if made is None:
        pytest.skip(f"no impaired network namespace here: {reason}")
    try:
        yield made
    finally:
        made.delete()


def random_stream(rng: random.Random, size: int) -> bytes:
    """Random bytes with enough delimiters that messages occur."""
    alphabet = bytes(range(256)) + b"^" * 12 + b"$" * 12
    return bytes(rng.choice(alphabet) for _ in range(size))


def round_trip(sock: socket.socket, data: bytes, rng: random.Random) -> bytes:
    """Send C{data} in random chunks while reading, half-close, and return
    all that came back until the server closed."""
    view = memoryview(data)
    chunks = []
    while view:
        size = rng.randint(1, 8192)
        chunks.append(view[:size])
        view = view[size:]
    return send_while_reading(sock, chunks)


def test_impaired_network(namespace: Namespace, tmp_path: Path) -> None:
    server = ServerProcess(
        [*namespace.exec_prefix, script("twistd"), "-n", "--pidfile=", "incproto",
         "--port", "tcp:0:interface=127.0.0.1", "--idle-timeout", str(IDLE),
         "--max-connections", str(LIMIT), "--queue", "1",
         "--queue-timeout", str(QUEUE_TIMEOUT), "--drain-timeout", "20"],
        tmp_path,
    )  # fmt: skip
    port = server.port
    try:
        # Random streams, random chunks, half-closed, all at once.
        seed = random.randrange(1 << 30)
        rng = random.Random(seed)
        streams = [
            random_stream(rng, rng.randint(*STREAM_BYTES)) for _ in range(STREAMS)
        ]
        results: List[bytes] = [b""] * STREAMS
        started = time.monotonic()

        def client(index: int) -> None:
            sock = namespace.connect(port)
            sock.settimeout(TIMEOUT)
            results[index] = round_trip(sock, streams[index], random.Random(index))

        threads = [threading.Thread(target=client, args=(i,)) for i in range(STREAMS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(2 * TIMEOUT)
        elapsed = time.monotonic() - started
        sent, dropped = namespace.packets()
        checked = 0
        for data, got in zip(streams, results):
            assert got == b"*" + reference(data), f"seed {seed}"
            checked += len(data)
        # Real-network packets (MTU 1500), not 64 KiB loopback ones.
        assert sent >= checked // 1500, (sent, dropped)

        # Idle: every slot taken by a silent client, greeted (admitted)...
        # (Times run from each connect's return as the test thread sees it,
        # up to EARLY after the server's accept; the server's log has the
        # exact durations.)
        idle, connected_at = [], []
        for _ in range(LIMIT):
            idle.append(namespace.connect(port))
            connected_at.append(time.monotonic())
        for sock in idle:
            sock.settimeout(TIMEOUT)
            assert receive_exactly(sock, 1) == b"*"
        # ...then two more: one waits in the queue (--queue 1) ungreeted and
        # is closed after --queue-timeout, the other finds the queue full and
        # is closed at once. (Which is which depends on which the server
        # accepted first, which reordering or a lost SYN may change.)
        extra, extra_at = [], []
        for _ in range(2):
            extra.append(namespace.connect(port))
            extra_at.append(time.monotonic())
            extra[-1].settimeout(TIMEOUT)
        extra_closes = []
        for (data, at), since in zip(parallel_closes(extra), extra_at):
            assert data == b""
            extra_closes.append(at - since)
        rejected_after, queued_after = sorted(extra_closes)
        if rejected_after < QUEUE_TIMEOUT / 2:
            server.wait_for(re.compile(r"rejected 127\.0\.0\.1:\d+: (queue full)"))
        # (Otherwise a lost handshake ACK delayed one connection's accept
        # until the other had left the queue: both waited their turn.)
        assert QUEUE_TIMEOUT - EARLY <= queued_after <= QUEUE_TIMEOUT + SLACK, (
            extra_closes
        )
        # ...and each silent client is closed after --idle-timeout.
        idle_times = []
        for sock, since in zip(idle, connected_at):
            assert receive_all(sock) == b""
            idle_times.append(time.monotonic() - since)
            sock.close()
        assert IDLE - EARLY <= min(idle_times), idle_times
        assert max(idle_times) <= IDLE + SLACK, idle_times
        # The server's own durations: never early (they run on until the
        # client's FIN too, which this test reads late and loss may delay).
        durations = server.wait_for(
            re.compile(r"closed \(idle timeout\) after ([\d.]+)s"), LIMIT
        )
        assert all(IDLE <= float(d) <= IDLE + SLACK for (d,) in durations), durations

        # Drain: SIGTERM with a connection open; what was read is answered,
        # then the server closes it and exits cleanly.
        draining = namespace.connect(port)
        draining.settimeout(TIMEOUT)
        draining.sendall(b"^abc")
        assert receive_exactly(draining, 4) == b"*bcd"
        server.process.send_signal(signal.SIGTERM)
        assert receive_all(draining) == b""
        draining.close()
        status = server.process.wait(TIMEOUT)
        server.wait_for(re.compile(r"(Main loop terminated)"))
    finally:
        if server.process.poll() is None:
            server.stop()
    assert status in (-15, 143), server.output
    assert "draining 1 connection" in server.output
    assert "Traceback" not in server.output
    print(
        f"\nimpaired network ({namespace.impairment}): {checked} bytes in "
        f"{STREAMS} random streams checked in {elapsed:.1f} s (seed {seed}; "
        f"{dropped} of {sent} packets dropped); "
        f"queued closed after {queued_after:.2f} s, rejected after "
        f"{rejected_after:.2f} s; idle closes after "
        f"{min(idle_times):.2f}-{max(idle_times):.2f} s"
    )


def parallel_closes(socks: List[socket.socket]) -> List[Tuple[bytes, float]]:
    """Read each socket until the server closes it, all at once: what came
    and when (monotonic) each close was seen."""
    found: List[Tuple[bytes, float]] = [(b"", 0.0)] * len(socks)

    def read(index: int) -> None:
        data = receive_all(socks[index])
        found[index] = (data, time.monotonic())
        socks[index].close()

    threads = [threading.Thread(target=read, args=(i,)) for i in range(len(socks))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    assert all(at for _, at in found), "a connection was not closed"
    return found
