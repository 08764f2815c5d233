# -*- test-case-name: tests.unit.test_closing,tests.unit.test_protocol -*-
"""Closing a connection with a FIN, never a reset, and never waiting forever.

Closing a socket that still has unread input makes Linux send a reset (RST),
and a reset destroys whatever the peer has not read yet, replies included.
So a server that closes before the client is done sending must shut down its
sending side after the flush, read on and discard input until the client
closes too, and only then close; a client that never closes is aborted after
a timeout.  The timeout measures progress: a client still reading the last
of its replies, however slowly, is not cut off.
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.internet.abstract import FileDescriptor
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import connectionDone
from twisted.internet.tcp import Connection

from incproto._kernel.sockets import unacknowledged


class CloseDeadline:
    """
    Abort a closing connection that makes no progress for C{timeout}
    seconds.  Progress is the peer acknowledging bytes sent to it (see
    L{unacknowledged}); once nothing is left to send, the deadline is final.

    It can be cancelled like an C{IDelayedCall} (see L{incproto._kernel.timers.cancel}).

    @ivar expired: whether the deadline passed and the connection was
        aborted.
    """

    def __init__(self, transport: Any, clock: IReactorTime, timeout: float) -> None:
        self.transport = transport
        self.clock = clock
        self.timeout = timeout
        self.expired = False
        self._left = unacknowledged(transport)
        self._timer = clock.callLater(timeout, self._check)

    def active(self) -> bool:
        """Whether the connection may still be aborted."""
        return self._timer.active()

    def cancel(self) -> None:
        """The connection closed: never abort it."""
        self._timer.cancel()

    def _check(self) -> None:
        left = unacknowledged(self.transport)
        if left and self._left is not None and left < self._left:
            self._left = left
            self._timer = self.clock.callLater(self.timeout, self._check)
        else:
            self.expired = True
            self.transport.abortConnection()


def close_politely(
    transport: Any, clock: IReactorTime, timeout: float
) -> CloseDeadline:
    """
    Start closing C{transport}: FIN after everything written is flushed.

    The caller must have unregistered any producer first (C{loseConnection()}
    never completes while a paused producer is registered), must discard
    input from now on, must call C{transport.loseConnection()} when the peer's
    end of input arrives (C{readConnectionLost}), and must cancel the returned
    deadline when the connection is lost.  A transport that cannot shut down
    only its sending side (TLS) is closed outright.

    @param transport: a connected transport.
    @param clock: the time source for the timeout.
    @param timeout: seconds without progress (see L{CloseDeadline}) to wait
        for the peer to read its replies and close before aborting.
    @return: the abort deadline.
    """
    shut_down_writing = getattr(transport, "loseWriteConnection", None)
    if shut_down_writing is None:
        transport.loseConnection()
    else:
        shut_down_writing()
        transport.resumeProducing()
    return CloseDeadline(transport, clock, timeout)


def close_ended(
    transport: Any, clock: IReactorTime, timeout: float, endOfInput: Any = None
) -> Optional[CloseDeadline]:
    """
    Close C{transport}, whose peer has ended its input, after everything
    written is flushed.  A reactor's own transport (TCP, UNIX) that holds
    nothing unsent closes on the reactor's next turn whatever the peer does,
    so it gets no deadline (no timer, no socket query: the common close of a
    short connection costs nothing more); anything else gets one.

    @param transport: a connected transport whose peer's input ended.
    @param clock: the time source for the timeout.
    @param timeout: seconds without progress to wait for the flush.
    @param endOfInput: the protocol, where the caller is its
        C{readConnectionLost}: a reactor's own transport that delivers to
        that protocol directly, with nothing unsent and no producer, is
        then closed within the reactor's event for the end of input
        (L{close_flushed_now}), not on the next turn.
    @return: the abort deadline, or C{None} where none is needed.
    """
    if endOfInput is not None and close_flushed_now(transport, endOfInput):
        return None
    transport.loseConnection()
    if (
        isinstance(transport, FileDescriptor)
        and not transport.dataBuffer
        and not transport._tempDataLen
    ):
        return None
    return CloseDeadline(transport, clock, timeout)


def close_flushed_now(transport: Any, protocol: Any) -> bool:
    """
    Close C{transport} at once if it is a reactor's own TCP or UNIX
    connection (not TLS) that delivers to C{protocol} itself, with nothing
    unsent and no producer; return whether it did.

    Twisted's C{loseConnection()} closes on the reactor's next turn, when
    the descriptor it registers for writing is found writable: one more
    reactor event and two C{epoll_ctl} calls per connection, even when
    nothing is left to write.  This closes as Twisted's own
    C{loseConnection()} closes a connection whose sending side is already
    shut: it stops reading and writing and calls the transport's
    C{connectionLost} with a clean close, so the protocol's
    C{connectionLost} runs before this returns.  Call it only where that is
    safe: from C{protocol}'s C{readConnectionLost}, which the transport
    calls in the reactor's event for the end of input, with nothing of the
    connection's on the stack above it.  Where a wrapper delivers to
    C{protocol} (a L{incproto.limit.ConnectionLimit}, which may also replay
    a held client's end of input when it admits it), the wrapper's code is
    above it: that transport delivers to the wrapper, so this leaves it to
    C{loseConnection()}.
    """
    if not (
        isinstance(transport, Connection)
        and getattr(transport, "protocol", None) is protocol
        and transport.connected
        and not transport.disconnecting
        and not transport.TLS
        and not transport.dataBuffer
        and not transport._tempDataLen
        and transport.producer is None
    ):
        return False
    transport.disconnecting = True
    transport.stopReading()
    transport.stopWriting()
    transport.connectionLost(connectionDone)
    return True
