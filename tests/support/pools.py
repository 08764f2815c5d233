"""Test doubles of incproto's handler pools: a pool whose jobs the test
finishes by hand, in any order (no threads, no reactor), and a handler that
always fails."""

from __future__ import annotations

from typing import Any, Callable, List, Optional, Tuple

from twisted.internet.task import Clock
from twisted.python.failure import Failure

from incproto.handlers import IncrementHandler, IPayloadHandler
from incproto.pools import (
    HandlerPool,
    Job,
)


class ImmediateReactor(Clock):
    """A Clock whose callFromThread runs the call at once."""

    def callFromThread(self, f: Callable[..., Any], *args: Any) -> None:
        f(*args)


class ManualPool(HandlerPool):
    """A pool whose jobs run when the test says so."""

    def __init__(
        self, handler: Optional[IPayloadHandler] = None, **kwargs: Any
    ) -> None:
        super().__init__(
            handler or IncrementHandler(), 2, reactor=ImmediateReactor(), **kwargs
        )
        self.jobs: List[Tuple[bytes, Callable[[bool, Any], None]]] = []
        self.submitted: List[Job] = []
        self.stopped: Optional[bool] = None

    def _call(self, job: Job, done: Callable[[bool, Any], None]) -> None:
        self.jobs.append((job.payload, done))
        self.submitted.append(job)

    def finish(self, index: int = 0) -> None:
        payload, done = self.jobs.pop(index)
        try:
            result = self.handler.transform(payload)
        except Exception:
            done(False, Failure())
        else:
            done(True, result)

    def _stopPool(self, idle: bool) -> None:
        self.stopped = idle


class Failing:
    def transform(self, payload: bytes) -> bytes:
        raise RuntimeError("handler broke")


class TextHandler:
    """Breaks the handler contract: replies with text, not bytes."""

    def transform(self, payload: bytes) -> str:
        return payload.decode()
