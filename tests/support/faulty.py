"""A payload handler with faults on demand, for tests of what a fault costs.

Payload answers as the increment does, except that a payload holding
C{!} kills the process running the handler with SIGKILL (a worker that
dies mid-job, as C{kill -9}, a segfault or the OOM killer would), and one
holding C{~} never returns (a stuck handler).  Importable by name from
twistd: C{--handler tests.support.faulty:faulty}.
"""

from __future__ import annotations

import os
import signal
import threading

from incproto.handlers import IncrementHandler

# Set by tests that run the handler in threads, to let stuck calls return.
RELEASE = threading.Event()


class Faulty(IncrementHandler):
    """Increment, die on C{!}, hang on C{~}."""

    def transform(self, payload: bytes) -> bytes:
        if b"!" in payload:
            os.kill(os.getpid(), signal.SIGKILL)
        if b"~" in payload:
            RELEASE.wait()
        return super().transform(payload)

    def __repr__(self) -> str:
        return "Faulty()"


faulty = Faulty()
