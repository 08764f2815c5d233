# -*- test-case-name: tests.unit.test_pools -*-
"""What a pool process of L{incproto.pools.ProcessHandlerPool} runs: its
start hook and the job function.

Kept light on purpose: a new pool process imports this module, pebble and
the handler's own module, and nothing of Twisted's reactor side (importing
C{incproto.pools} in a spawned process took 0.54 s), so that a process that
replaces a dead one is ready fast.
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
from contextlib import suppress
from typing import Any, Optional

from incproto._kernel.parentdeath import die_with_parent

POOL_NICENESS = 10


def started(parent: int, handler: Optional[bytes] = None) -> None:
    """
    Run in each pool process as it starts.

    Lower its scheduling priority: every job crosses a few threads of the
    reactor's process (hand-off, results, the reactor itself); when pool
    processes keep every core busy, those latency-bound threads would
    otherwise wait a time slice for each job.  (Only now: a process that
    replaces a dead one starts at full priority, so that it is ready
    sooner on a busy machine.)

    Then make sure it cannot outlive the server (pid C{parent}).  A process
    forked by a forkserver (see L{incproto._kernel.spawning}) closes its
    copy of the forkserver's "alive" pipe, so that the forkserver exits as
    soon as the server does.  On Linux the kernel kills the process when its
    parent (the server, or the forkserver) goes (C{PR_SET_PDEATHSIG}); if
    that parent went before this was set, it exits now.  (A process blocked
    on its task pipe also sees end of file when the server dies; one busy in
    a handler would not.)

    Last, unpickle the handler once (C{handler}, pickled, if given), so
    that its modules are imported before the process takes its first job,
    not while a client waits.
    """
    os.nice(POOL_NICENESS)
    _close_forkserver_alive_pipe()
    if die_with_parent(signal.SIGKILL):
        ppid = os.getppid()
        if parent not in (ppid, _parent_of(ppid)):
            os._exit(1)
    if handler is not None:
        pickle.loads(handler)


def _close_forkserver_alive_pipe() -> None:
    """
    In a process forked by a forkserver, close its copy of the pipe whose
    end of file tells the forkserver that its clients are gone (every child
    of a forkserver is handed one, for forkservers of its own).
    """
    forkserver = getattr(
        sys.modules.get("multiprocessing.forkserver"), "_forkserver", None
    )
    fd = getattr(forkserver, "_forkserver_alive_fd", None)
    if forkserver is not None and fd is not None:
        forkserver._forkserver_alive_fd = None
        with suppress(OSError):
            os.close(fd)


def _parent_of(pid: int) -> Optional[int]:
    """The parent of process C{pid}, from C{/proc}; C{None} if unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        # "pid (command) state ppid ...": the command may hold anything.
        return int(stat[stat.rindex(b")") + 2 :].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def transform(handler: Any, payload: bytes) -> bytes:
    """
    The job: run the handler (it arrives pickled) on C{payload}, and check
    its reply here (L{incproto.handlers.checked_reply}), so that a wrong
    reply comes back as the handler's error, named.
    """
    reply = handler.transform(payload)
    if isinstance(reply, bytes):
        return reply
    from incproto.handlers import checked_reply

    return checked_reply(handler, reply)
