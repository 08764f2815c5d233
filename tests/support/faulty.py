"""A payload handler with faults on demand, for tests of what a fault costs.

Payload answers as the increment does, except that a payload holding
C{!} kills the process running the handler with SIGKILL (a worker that
dies mid-job, as C{kill -9}, a segfault or the OOM killer would), and one
holding C{~} never returns (a stuck handler; it says so on standard
error as it starts).  Importable by name from
twistd: C{--handler tests.support.faulty:faulty}.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any

from incproto.handlers import IncrementHandler

# Set by tests that run the handler in threads, to let stuck calls return.
RELEASE = threading.Event()
# Written to standard error as a call that never returns starts.
NEVER_RETURNS = "faulty: a call that never returns, in process {pid}"


class Faulty(IncrementHandler):
    """Increment, die on C{!}, hang on C{~}."""

    def transform(self, payload: bytes) -> bytes:
        if b"!" in payload:
            os.kill(os.getpid(), signal.SIGKILL)
        if b"~" in payload:
            # Said, so that a test can wait for the call to have started.
            print(NEVER_RETURNS.format(pid=os.getpid()), file=sys.stderr, flush=True)
            RELEASE.wait()
        return super().transform(payload)

    def __repr__(self) -> str:
        return "Faulty()"


faulty = Faulty()


def die_holding(lock: Any) -> None:
    """Take C{lock} and die with it held (SIGKILL), as a process killed at
    the wrong instant would: run as a process of its own."""
    lock.acquire()
    os.kill(os.getpid(), signal.SIGKILL)
