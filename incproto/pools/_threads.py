# -*- test-case-name: tests.unit.test_pools,tests.integration.test_pools -*-
"""L{ThreadHandlerPool}: a handler pool of threads, for handlers that release
the GIL, which replaces the threads a timed-out handler keeps busy."""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Optional

from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from incproto._kernel.words import counted
from incproto.handlers import IPayloadHandler, checked_reply
from incproto.pools._base import HandlerPool, HandlerTimeoutError, Job


class ThreadHandlerPool(HandlerPool):
    """
    A dedicated C{ThreadPool} of C{size} threads (not the reactor's shared
    pool), started by C{startService} and stopped by C{stopService}.

    Python cannot kill a thread.  A job past C{handlerTimeout} fails (its
    connection closes) and its slot is given back, but its thread stays busy
    until the handler returns: it is I{stuck}.  Each stuck thread is
    replaced by a new one, up to C{size} of them, so the pool keeps C{size}
    threads working while at most C{size} more are lost; beyond that an
    error is logged, the pool runs short, and jobs that cannot start within
    the timeout fail too.  A stuck thread that returns is retired.

    @ivar stuck: threads still running a handler that timed out.
    """

    def __init__(self, handler: IPayloadHandler, size: int, **kwargs: Any) -> None:
        super().__init__(handler, size, **kwargs)
        self.executor = ThreadPool(minthreads=size, maxthreads=size, name="incproto")
        # A thread stuck in a handler must not keep the process from exiting.
        self.executor.threadFactory = _daemon_thread  # type: ignore[assignment]
        self.stuck = 0

    def startService(self) -> None:
        """Start the threads."""
        super().startService()
        self.executor.start()

    def _call(self, job: Job, done: Callable[[bool, Any], None]) -> None:
        def run() -> bytes:
            if job.abandoned:
                return b""  # it timed out while waiting for a thread
            job.started = time.monotonic()
            return checked_reply(self.handler, self.handler.transform(job.payload))

        if self.handlerTimeout is not None:
            job.timer = self.reactor.callLater(self.handlerTimeout, self._check, job)
        self.executor.callInThreadWithCallback(done, run)

    def _check(self, job: Job) -> None:
        """C{handlerTimeout} seconds after submission, and then as needed."""
        timeout = self.handlerTimeout
        assert timeout is not None
        started = job.started
        if started is None and self.stuck < self.executor.max:
            # Waiting behind other jobs on a live thread: its clock has
            # not started yet.
            job.timer = self.reactor.callLater(timeout, self._check, job)
            return
        if started is not None:
            left = started + timeout - time.monotonic()
            if left > 0:
                job.timer = self.reactor.callLater(left, self._check, job)
                return
        job.timer = None
        job.abandoned = True
        if started is not None:
            job.stuck = True
            self.stuck += 1
            self._resize()
        self.log.warn(
            "{pool}: a handler call {what} {timeout}s; {threads} stuck",
            pool=self,
            what="ran longer than" if started is not None else "found no thread in",
            timeout=timeout,
            stuck=self.stuck,
            threads=counted(self.stuck, "thread"),
        )
        self._release()
        self.timeouts += 1
        job.deferred.errback(
            Failure(HandlerTimeoutError(f"the handler ran longer than {timeout}s"))
        )

    def unable(self) -> Optional[str]:
        """
        Every thread is stuck in a timed-out handler call, the replacements
        too: no call can run until one returns.
        """
        if self.running and self.stuck >= self.size + min(self.stuck, self.size):
            return f"every handler thread is stuck ({self.stuck} threads)"
        return None

    def _returned(self, job: Job) -> None:
        if job.stuck:
            self.stuck -= 1
            self._resize()

    def _resize(self) -> None:
        """Keep C{size} threads that are not stuck, within C{2 * size}."""
        threads = self.size + min(self.stuck, self.size)
        if self.stuck > self.size:
            self.log.error(
                "{pool}: {stuck} threads are stuck in the handler; only "
                "{replaced} are replaced",
                pool=self,
                stuck=self.stuck,
                replaced=self.size,
            )
        self.executor.adjustPoolsize(threads, threads)

    def _stopPool(self, idle: bool) -> None:
        if idle and not self.stuck:
            self.executor.stop()  # joins idle threads: immediate
        else:
            # A stuck handler would block the reactor in join(); let a
            # helper thread wait for it instead.
            threading.Thread(target=self.executor.stop, daemon=True).start()

    def __repr__(self) -> str:
        return f"ThreadHandlerPool({self.handler!r}, {self.size})"


def _daemon_thread(**kwargs: Any) -> threading.Thread:
    return threading.Thread(daemon=True, **kwargs)
