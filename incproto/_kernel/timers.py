# -*- test-case-name: tests.unit.test_closing,tests.unit.test_service -*-
"""Timers and deadlines: cancelling a timer that may have fired, and what is
left of a stopping service's deadline."""

from __future__ import annotations

from typing import Any, Optional, Protocol

from twisted.internet.interfaces import IReactorTime


class Timer(Protocol):
    """What L{cancel} needs: an C{IDelayedCall}, or anything that acts as one."""

    def active(self) -> bool: ...

    def cancel(self) -> None: ...


def cancel(timer: Optional[Timer]) -> None:
    """
    Cancel C{timer} if it is still pending.
    """
    if timer is not None and timer.active():
        timer.cancel()


def time_left(service: Any, timeout: float, clock: IReactorTime) -> float:
    """
    How long a stopping C{service} may wait: C{timeout} seconds, or, if its
    parent has a stop deadline (a C{stopDeadline} attribute, as
    L{incproto.serving.service.SequentialMultiService} has), what is left of
    it, so that one timeout bounds the whole stop.
    """
    deadline: Optional[float] = getattr(
        getattr(service, "parent", None), "stopDeadline", None
    )
    if deadline is None or not IReactorTime.providedBy(clock):
        return timeout
    return max(0.0, min(timeout, deadline - clock.seconds()))
