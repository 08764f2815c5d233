# -*- test-case-name: tests.unit.test_signals -*-
"""How an incproto process answers signals once its reactor runs.

Twisted's reactor stops on SIGTERM and SIGINT, but a second one during the
drain makes it call C{reactor.stop()} again, which logs a
C{ReactorNotRunning} traceback; and it leaves SIGHUP at its default, which
kills the process at once and resets every client.  L{SignalHandling}
wraps the reactor's handlers so that the first SIGTERM or SIGINT stops the
reactor as before and any later one is logged in one line, and gives
SIGHUP a meaning:

  - in one process, the same graceful stop as SIGTERM (POSIX's SIGHUP
    means the controlling terminal or the supervising session went away:
    end, but cleanly); twistd then exits by re-raising SIGHUP, which
    systemd, like SIGTERM, counts as a clean stop;
  - in a C{--workers} supervisor, a rolling restart of the workers
    (gunicorn's convention: start new workers, drain the old ones);
  - in a worker, nothing: the supervisor decides.

A SIGHUP that was ignored when the process started (C{nohup}) stays
ignored.
"""

from __future__ import annotations

import signal
from typing import Any, Callable

from twisted.application.service import Service
from twisted.logger import Logger

# What SIGHUP does: stop like SIGTERM (this), call a function, or nothing.
STOP = "stop"


# <linux/prctl.h>
class SignalHandling(Service):
    """
    Install incproto's signal handling when the reactor runs.

    @ivar hangup: C{STOP} to stop gracefully on SIGHUP, a callable to call
        on it, or C{None} to ignore it.
    @ivar stopping: whether a stop was asked for (by a signal, or by the
        reactor shutting down); later stop signals are only logged.
    """

    log = Logger()

    name = "signals"

    def __init__(self, reactor: Any, hangup: Any = STOP) -> None:
        self.reactor = reactor
        self.hangup = hangup
        self.stopping = False

    def stop(self) -> None:
        """Stop the reactor, unless a stop was asked for already."""
        if not self.stopping:
            self.stopping = True
            self.reactor.stop()

    def startService(self) -> None:
        """
        Install the handlers once the reactor runs (it installs its own as it
        starts, which these wrap).
        """
        super().startService()
        if hasattr(self.reactor, "callWhenRunning"):
            self.reactor.callWhenRunning(self.install)
        if hasattr(self.reactor, "addSystemEventTrigger"):
            self.reactor.addSystemEventTrigger("before", "shutdown", self._shutdown)

    def install(self) -> None:
        """
        Wrap the reactor's SIGTERM and SIGINT handlers; handle SIGHUP.
        """
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous = signal.getsignal(signum)
            if callable(previous):
                signal.signal(signum, self._stopper(previous))
        if signal.getsignal(signal.SIGHUP) == signal.SIG_IGN:
            return  # nohup: the operator asked for SIGHUP to be ignored
        terminate = signal.getsignal(signal.SIGTERM)
        if self.hangup == STOP and callable(terminate):
            signal.signal(signal.SIGHUP, terminate)
        elif callable(self.hangup):
            signal.signal(signal.SIGHUP, self._hangup)
        else:
            signal.signal(signal.SIGHUP, signal.SIG_IGN)

    def _stopper(
        self, previous: Callable[[int, Any], Any]
    ) -> Callable[[int, Any], None]:
        def stop(signum: int, frame: Any) -> None:
            name = signal.Signals(signum).name
            if self.stopping:
                self.log.info(
                    "received {signal} while stopping; already stopping", signal=name
                )
                return
            self.stopping = True
            if signum == signal.SIGHUP:
                self.log.info("received SIGHUP: stopping gracefully, as for SIGTERM")
            previous(signum, frame)

        return stop

    def _hangup(self, signum: int, frame: Any) -> None:
        if self.stopping:
            return
        self.log.info("received SIGHUP")
        self.reactor.callFromThread(self.hangup)

    def _shutdown(self) -> None:
        self.stopping = True
