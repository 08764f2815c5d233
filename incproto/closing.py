# -*- test-case-name: tests.test_protocol,tests.test_limit -*-
"""Closing a connection with a FIN, never a reset, and never waiting forever.

Closing a socket that still has unread input makes Linux send a reset (RST),
and a reset destroys whatever the peer has not read yet, replies included.
So a server that closes before the client is done sending must shut down its
sending side after the flush, read on and discard input until the client
closes too, and only then close; a client that never closes is aborted after
a timeout.
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.internet.interfaces import IDelayedCall, IReactorTime


def close_politely(
    transport: Any, clock: IReactorTime, timeout: float
) -> Optional[IDelayedCall]:
    """
    Start closing C{transport}: FIN after everything written is flushed.

    The caller must have unregistered any producer first (C{loseConnection()}
    never completes while a paused producer is registered), must discard
    input from now on, must call C{transport.loseConnection()} when the peer's
    end of input arrives (C{readConnectionLost}), and must cancel the returned
    timer when the connection is lost.

    @param transport: a connected transport.
    @param clock: the time source for the timeout.
    @param timeout: seconds to wait for the peer to close before aborting.
    @return: the abort timer, or C{None} if the transport cannot shut down
        only its sending side (TLS) and was closed outright.
    """
    shut_down_writing = getattr(transport, "loseWriteConnection", None)
    if shut_down_writing is None:
        transport.loseConnection()
        return None
    shut_down_writing()
    transport.resumeProducing()
    return clock.callLater(timeout, transport.abortConnection)


def cancel(timer: Optional[IDelayedCall]) -> None:
    """
    Cancel C{timer} if it is still pending.
    """
    if timer is not None and timer.active():
        timer.cancel()
