# -*- test-case-name: tests.integration.test_writethrough -*-
"""Writing to a TCP connection now, not on the reactor's next turn.

Twisted's C{transport.write()} only buffers: it appends to the transport's
buffer and registers the socket for writability, and the reactor sends on
its next round (one more C{epoll_ctl} and one more event per write, and the
reply waits a turn).  asyncio instead tries C{socket.send()} at once and
buffers only what the kernel did not take.  L{writer} gives a connection
that second behaviour where it is safe, and Twisted's own C{write} elsewhere.
A protocol keeps L{direct}'s answer and calls L{write_through} itself.

It is safe only on a plain Twisted TCP transport (C{twisted.internet.tcp}
C{Server} or C{Client}, sending through C{Connection.writeSomeData}, TLS not
started) and only while Twisted holds nothing unsent for it: then a direct
send cannot overtake buffered bytes.  Whatever the kernel does not take, and
everything on any send error, goes to C{transport.write()}, so that Twisted
buffers it, pauses a streaming producer when its buffer fills, and reports
errors the usual way.  While the connection is closing or half-closed, or a
producer is paused, every write goes through Twisted, whose state machine
owns those phases.  Bytes sent directly sit in the kernel's send queue, where
L{incproto._kernel.sockets.unacknowledged} counts them as it counts Twisted's own.

Every other transport (TLS, UNIX sockets, which may carry file descriptors,
a wrapper whose C{write} is not the TCP transport's own, a test's
C{StringTransport}) gets its own C{write}, unchanged.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable, Optional

from twisted.internet import tcp

_SEND_PATH = tcp.Connection.writeSomeData


def direct(transport: Any) -> Optional[tcp.Connection]:
    """
    The TCP connection that L{write_through} may send on for C{transport},
    or C{None} where writing through is not safe.

    Resolve it once, when the connection is made: the TCP transport is found
    as the object whose bound C{write} the C{transport} offers, so a wrapper
    that hands out the real transport's own C{write} (incproto's PROXY
    transport) gets the fast path too, and a wrapper that adds a layer (TLS)
    does not.  (A protocol keeps this one reference, not a closure: nothing
    is allocated per connection.)

    @param transport: the transport a protocol was connected to.
    """
    real = getattr(transport.write, "__self__", None)
    if not isinstance(real, tcp.Connection) or (
        type(real).writeSomeData is not _SEND_PATH
    ):
        return None
    return real


def write_through(real: tcp.Connection, data: bytes) -> None:
    """
    Write C{data} to C{real} (as L{direct} found it) as its C{write} would,
    sending at once when nothing else is waiting to be sent.
    """
    if (
        not real._tempDataLen
        and not real.dataBuffer
        and real.connected
        and not (
            real.disconnecting
            or real._writeDisconnecting
            or real._aborting
            or real.producerPaused
            or real.TLS
        )
        and (real.producer is None or real.streamingProducer)
    ):
        try:
            sent = real.socket.send(data)
        except OSError:
            pass  # EAGAIN, or an error Twisted will report
        else:
            if sent == len(data):
                return
            data = data[sent:]
    real.write(data)


def writer(transport: Any) -> Callable[[bytes], None]:
    """
    A function that writes bytes to C{transport} as its C{write} would,
    sending them at once when nothing else is waiting to be sent: see
    L{direct} and L{write_through}.

    @return: L{write_through} bound to the TCP transport, or
        C{transport.write} itself where writing through is not safe.
    """
    real = direct(transport)
    if real is None:
        write: Callable[[bytes], None] = transport.write
        return write
    return partial(write_through, real)
