"""Hostile and unlucky clients over real TCP on 127.0.0.1 (pytest-twisted):
each costs only itself, and nothing it does holds a slot forever."""

from __future__ import annotations

import socket
import struct
from typing import Any, Generator, List

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall

from incproto import IncrementFactory
from incproto.protocol import CLOSE_TIMEOUT
from tests.support.helpers import Client, connect_port, listen, within

REPLY = 200_000


class SlowReader:
    """
    A raw client with a small receive buffer that sends C{request} and then
    reads at most C{chunk} bytes every C{interval} seconds, until the server
    closes (C{done} fires with what was read) or resets (C{done} fails).
    """

    def __init__(self, port: int, request: bytes, chunk: int, interval: float) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.connect(("127.0.0.1", port))
        self.sock.setblocking(False)
        self.unsent = request
        self.chunk = chunk
        self.received: List[bytes] = []
        self.done: Deferred[bytes] = Deferred()
        self.loop = LoopingCall(self._turn)
        self.loop.clock = reactor
        self.loop.start(interval)

    def _turn(self) -> None:
        try:
            if self.unsent:
                self.unsent = self.unsent[self.sock.send(self.unsent) :]
            data = self.sock.recv(self.chunk)
        except BlockingIOError:
            return
        except OSError as e:
            self._end()
            self.done.errback(e)
            return
        if data:
            self.received.append(data)
        else:
            self._end()
            self.done.callback(b"".join(self.received))

    def _end(self) -> None:
        self.loop.stop()
        self.sock.close()


@pytest_twisted.inlineCallbacks
def test_idle_timeout_spares_a_slow_but_steady_reader() -> Generator[
    Deferred[Any], Any, None
]:
    """
    Idle means no progress either way: a client still reading its replies
    (4 KiB every 20 ms, slower than the idle timeout lets the reply drain)
    gets all of them and a clean close.
    """
    factory = IncrementFactory(clock=reactor, idleTimeout=0.3, closeTimeout=0.3)
    port = listen(factory)
    try:
        reader = SlowReader(port.getHost().port, b"^" + b"a" * REPLY + b"$", 4096, 0.02)
        got = yield within(reader.done)
    finally:
        yield port.stopListening()
    assert got == b"*" + b"b" * REPLY
    assert factory.closedBy == {"idle timeout": 1}


@pytest_twisted.inlineCallbacks
def test_half_closed_client_that_never_reads_is_aborted() -> Generator[
    Deferred[Any], Any, None
]:
    """
    A client that half-closes owing replies and never reads does not hold
    its connection (or its slot) forever: with no progress for the close
    timeout, it is aborted.  (Small socket buffers keep most of the 60 KB
    reply in Twisted's buffer, under the 64 KiB at which reading pauses, so
    the server reads the half-close.)
    """
    factory = IncrementFactory(clock=reactor, closeTimeout=0.2)
    port = listen(factory)
    port.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)  # inherited
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        sock.connect(("127.0.0.1", port.getHost().port))
        sock.setblocking(False)
        request = b"^" + b"a" * 60_000 + b"$"
        sent = 0

        def send() -> None:
            nonlocal sent
            try:
                sent += sock.send(request[sent:])
            except BlockingIOError:
                pass
            if sent == len(request):
                sock.shutdown(socket.SHUT_WR)
                sending.stop()

        sending = LoopingCall(send)
        sending.clock = reactor
        yield within(sending.start(0.005))
        lost: Deferred[str] = Deferred()
        factory_closed = factory.closed

        def closed(p: Any, why: str, duration: float) -> None:
            factory_closed(p, why, duration)
            lost.callback(why)

        factory.closed = closed  # type: ignore[method-assign]
        why = yield within(lost)
    finally:
        sock.close()
        yield port.stopListening()
    assert why == CLOSE_TIMEOUT
    assert factory.closedBy == {CLOSE_TIMEOUT: 1}


@pytest_twisted.inlineCallbacks
def test_held_client_that_resets_after_filling_its_hold_buffer_leaves(
    limited: Any,
) -> Generator[Deferred[Any], Any, None]:
    """
    Reading from a held client pauses once its hold buffer is full, so no
    read sees its reset; the limit asks the kernel and drops it from the
    queue, freeing the place for a real client.
    """
    limit, port = limited(1, queueSize=1, holdBuffer=1000, probeInterval=0.05)
    first: Client = yield connect_port(port)
    yield first.wait_for(1)
    attacker = socket.socket()
    attacker.connect(("127.0.0.1", port))
    attacker.setblocking(False)
    assert attacker.send(b"x" * 200_000) > 1000
    yield limit.until(lambda: limit.readingPausedCount == 1)
    attacker.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    attacker.close()  # a reset
    yield limit.until(lambda: limit.held == 0)
    waiting: Client = yield connect_port(port)
    yield limit.until(lambda: limit.held == 1)
    first.transport.loseConnection()
    assert (yield waiting.wait_for(1)) == b"*"
    assert limit.abandoned == 1
    waiting.transport.loseConnection()
    yield within(waiting.closed)
