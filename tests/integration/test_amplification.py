"""A handler that replies 100 times its input, to a client that does not
read, over real sockets: what the server holds for that connection is
bounded by reply bytes, inline and in either pool (issue 22 item 7)."""

from __future__ import annotations

from typing import Any, Generator

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred

from incproto.handlers import FunctionHandler
from incproto.pools import ProcessHandlerPool, ThreadHandlerPool
from tests.support.amplifying import hundredfold
from tests.support.helpers import RecordingFactory, connect, listen, within

MiB = 1024 * 1024
# What the server may hold for the stalled connection: the transport's
# buffer past its pause point (64 KiB) and one job's reply (about
# workBuffer / 2), with room to spare.  Before the bound it held 2.6 MB
# of each reply of 6.4 MB inline (one 64 KiB read, times 100) or 12.8 MB
# in a pool (one 128 KiB job), the rest in the kernel's buffers.
BOUND = 1 * MiB


def held(protocol: Any) -> int:
    """Reply bytes the server holds in user space for C{protocol}."""
    transport = protocol.transport
    buffered = len(transport.dataBuffer) - transport.offset + transport._tempDataLen
    work = protocol._work
    reply = work._held if work is not None else None
    return int(buffered + (len(reply) if reply is not None else 0))


@pytest.mark.parametrize("runner", ["inline", "threads", "processes"])
@pytest_twisted.inlineCallbacks
def test_a_client_that_does_not_read_holds_a_bounded_reply(
    runner: str,
) -> Generator[Deferred[Any], Any, None]:
    handler = FunctionHandler(hundredfold)
    pool: Any = None
    factory = RecordingFactory()
    if runner == "inline":
        factory.handler = handler
    else:
        make = ThreadHandlerPool if runner == "threads" else ProcessHandlerPool
        pool = make(handler, 1, reactor=reactor)
        pool.startService()
        factory.pool, factory.handler = pool, handler
    port = listen(factory)
    try:
        client = yield connect(port)
        client.transport.pauseProducing()  # it never reads
        protocol = yield within(factory.connected)
        client.transport.write(b"^" + b"a" * (4 * MiB))
        yield within(protocol.paused)  # the server's writes are blocked
        if pool is not None:
            yield within(pool.whenIdle())  # the job in flight came back
        assert held(protocol) <= BOUND
        # It sent (into the kernel's buffers) and holds a few MiB at most,
        # of the 400 MiB its 4 MiB of input is owed.
        assert protocol.bytesSent < 16 * MiB
        client.transport.abortConnection()
        yield within(protocol.lost)
    finally:
        yield port.stopListening()
        if pool is not None:
            yield pool.stopService()
        factory.doStop()
