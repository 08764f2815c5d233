# -*- test-case-name: tests.unit.test_pools,tests.integration.test_pools -*-
"""Handler pools: running payload handlers off the reactor thread.

L{ThreadHandlerPool} and L{ProcessHandlerPool} are services: they start
their threads or processes in C{startService} (twistd calls C{makeService}
before it daemonizes), accept at most C{backlog} jobs at a time (the rest
wait in FIFO order, on the reactor thread, one per connection at most), and
on stop wait for work in flight, for at most C{drainTimeout} seconds, before
they stop.  A job that runs longer than C{handlerTimeout} fails with
L{HandlerTimeoutError}; a job whose process died fails with
L{PoolProcessLostError}; either way only that job's connection is affected.
("Worker" in incproto always means a serving process of C{--workers}, see
L{incproto.workers.supervisor}; these are handler pools, of threads or of
pool processes.)  Each connection keeps its replies in order through
L{incproto.ordered.OrderedWork}.
"""

from incproto.pools._base import (
    DEFAULT_DRAIN_TIMEOUT,
    HandlerPool,
    HandlerTimeoutError,
    Job,
    PoolProcessLostError,
)
from incproto.pools._processes import STOP_GRACE, ProcessHandlerPool
from incproto.pools._threads import ThreadHandlerPool

__all__ = [
    "DEFAULT_DRAIN_TIMEOUT",
    "STOP_GRACE",
    "HandlerPool",
    "HandlerTimeoutError",
    "Job",
    "PoolProcessLostError",
    "ProcessHandlerPool",
    "ThreadHandlerPool",
]
