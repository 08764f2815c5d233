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
    transport: Any, clock: IReactorTime, timeout: float
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
    @return: the abort deadline, or C{None} where none is needed.
    """
    transport.loseConnection()
    if (
        isinstance(transport, FileDescriptor)
        and not transport.dataBuffer
        and not transport._tempDataLen
    ):
        return None
    return CloseDeadline(transport, clock, timeout)
