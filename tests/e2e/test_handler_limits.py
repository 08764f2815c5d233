"""A handler's faults and leaks on a real twistd (issue 22 items 6 and 7):
under --processes a handler's exception is logged once with its own frames
(then only counted), and --max-jobs-per-process recycles a pool process
that a leaking handler grows."""

from __future__ import annotations

import re
import socket

from tests.support.processes import (
    connect,
    descendants,
    memory_kib,
    receive_all,
    receive_exactly,
    start_incproto,
)

MiB = 1024 * 1024


def pool_kib(pid: int) -> int:
    return sum(memory_kib(child) or 0 for child in descendants(pid))


def test_a_leaking_handler_is_recycled() -> None:
    """
    A handler that keeps 1 MiB per call, 100 calls: with
    --max-jobs-per-process 20 its process is replaced every 20 calls, so
    the pool grows by about 20 MiB at most, not 100.
    """
    server = start_incproto(
        "--processes", "1", "--max-jobs-per-process", "20",
        "--handler", "tests.support.amplifying:leaky",
    )  # fmt: skip
    try:
        with connect(server.port) as sock:
            assert receive_exactly(sock, 1) == b"*"
            sock.sendall(b"^a$")
            assert receive_exactly(sock, 1) == b"b"
            before = pool_kib(server.process.pid)
            first = descendants(server.process.pid)
            for _ in range(99):
                sock.sendall(b"^a$")  # one job each: the reply comes before the next
                assert receive_exactly(sock, 1) == b"b"
            grown = (pool_kib(server.process.pid) - before) * 1024
            last = descendants(server.process.pid)
    finally:
        server.stop()
    assert grown < 40 * MiB, f"the pool grew by {grown / MiB:.0f} MiB"
    assert set(first) != set(last)  # its process was replaced


def test_a_pool_process_fault_is_logged_once_with_the_handlers_frames() -> None:
    server = start_incproto(
        "--processes", "1", "--handler", "tests.support.badhandlers:bad_instance"
    )
    try:
        for _ in range(5):
            with connect(server.port) as sock:
                sock.sendall(b"^x$")
                sock.shutdown(socket.SHUT_WR)
                assert receive_all(sock) == b"*"
        server.wait_for(re.compile(r"closed \((handler error)\)"), 5)
    finally:
        server.stop()
    output = server.output
    assert output.count("handler tests.support.badhandlers.BadClass failed") == 1
    assert output.count("Traceback") == 1
    assert 'badhandlers.py", line' in output  # the handler's own frame
    assert "the handler broke on purpose" in output


def test_a_pool_process_starts_light() -> None:
    """
    A pool process imports neither twistd's main script nor Twisted's
    reactor side (they were most of its 1.3 s start, on the path of every
    replacement of a dead process: issue 21).
    """
    server = start_incproto(
        "--processes", "1", "--handler", "tests.support.probe:heavy"
    )
    try:
        with connect(server.port) as sock:
            sock.sendall(b"^?$")
            sock.shutdown(socket.SHUT_WR)
            assert receive_all(sock) == b"*n"
    finally:
        server.stop()
