# -*- test-case-name: tests.unit.test_signals,tests.e2e.test_signals -*-
"""How an incproto process answers signals once its reactor runs.

By the conventions of nginx and gunicorn, so that no signal an operator
sends by habit kills the server:

  - SIGTERM and SIGINT: the reactor's graceful stop (a drain); a second one
    during the drain is logged in one line (the reactor would call
    C{reactor.stop()} again and log a C{ReactorNotRunning} traceback).
  - SIGQUIT: the same graceful stop (nginx's and gunicorn's "quit"); the
    process exits 0, not by re-raising it (which would dump core).  A
    worker of C{--workers} keeps its own meaning: retire (see
    L{incproto.workers.worker.retire_gracefully}).
  - SIGHUP: in one process, the same graceful stop (the terminal or the
    session went away); twistd then exits by re-raising SIGHUP, which
    systemd, like SIGTERM, counts as a clean stop.  In a C{--workers}
    supervisor, a rolling restart of the workers; in a worker, nothing (the
    supervisor decides).  A SIGHUP ignored at start (C{nohup}) stays
    ignored.
  - SIGUSR1: reopen the access log file (after logrotate renamed it); a
    supervisor forwards it to every worker.
  - SIGUSR2, SIGALRM, SIGTTIN, SIGTTOU, SIGWINCH: ignored, with one log line
    (at most one a second of each), where their action was the default
    (end or freeze the process).

Each handler only hands the signal to the reactor thread
(C{callFromThread}): nothing is logged or written from inside a signal
handler, which could interrupt the very log write it would make.
"""

from __future__ import annotations

import signal
from typing import Any, Callable, Dict, Optional

from twisted.application.service import Service
from twisted.logger import Logger

# What SIGHUP or SIGQUIT does: stop gracefully (this), call a function, or
# nothing.
STOP = "stop"
# Signals whose default action ends or freezes the process, and which an
# incproto process ignores, with a log line.
IGNORED = tuple(
    getattr(signal, name)
    for name in ("SIGUSR2", "SIGALRM", "SIGTTIN", "SIGTTOU", "SIGWINCH")
    if hasattr(signal, name)
)
# At most one log line a second for each ignored signal.
IGNORED_LOG_INTERVAL = 1.0


class SignalHandling(Service):
    """
    Install incproto's signal handling when the reactor runs.

    @ivar hangup: C{STOP} to stop gracefully on SIGHUP, a callable to call
        on it, or C{None} to ignore it.
    @ivar quit: C{STOP} to stop gracefully on SIGQUIT, or C{None} to leave
        SIGQUIT as it is (a worker handles it itself).
    @ivar reopen: what SIGUSR1 calls (reopen the access log, or tell the
        workers to), or C{None} if there is nothing to reopen.
    @ivar stopping: whether a stop was asked for (by a signal, or by the
        reactor shutting down); later stop signals are only logged.
    """

    log = Logger()

    name = "signals"

    def __init__(
        self,
        reactor: Any,
        hangup: Any = STOP,
        reopen: Optional[Callable[[], Any]] = None,
        quit: Any = STOP,
    ) -> None:
        self.reactor = reactor
        self.hangup = hangup
        self.reopen = reopen
        self.quit = quit
        self.stopping = False
        self._ignoredLogged: Dict[int, float] = {}

    def stop(self) -> None:
        """Stop the reactor, unless a stop was asked for already."""
        if not self.stopping:
            self.stopping = True
            self.reactor.stop()

    def startService(self) -> None:
        """
        Handle SIGHUP, SIGQUIT, SIGUSR1 and the ignored signals now (what
        they do waits for the reactor to run), and wrap the reactor's
        SIGTERM and SIGINT handlers once it runs (it installs them as it
        starts).
        """
        super().startService()
        self.install()
        if hasattr(self.reactor, "callWhenRunning"):
            self.reactor.callWhenRunning(self.wrapStops)
        if hasattr(self.reactor, "addSystemEventTrigger"):
            self.reactor.addSystemEventTrigger("before", "shutdown", self._shutdown)
            self.reactor.addSystemEventTrigger("after", "shutdown", self.quieten)

    def wrapStops(self) -> None:
        """
        Wrap the reactor's SIGTERM and SIGINT handlers: a second one is only
        logged.
        """
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous = signal.getsignal(signum)
            if callable(previous):
                self._handle(signum, self._stopper(previous))

    def install(self) -> None:
        """
        Handle SIGHUP, SIGQUIT and SIGUSR1; ignore the rest of the habitual
        signals.
        """
        if self.quit == STOP:
            self._handle(signal.SIGQUIT, self._gracefully)
        self._handle(signal.SIGUSR1, self._reopen)
        for signum in IGNORED:
            if signal.getsignal(signum) == signal.SIG_DFL:
                self._handle(signum, self._ignore)
        if signal.getsignal(signal.SIGHUP) == signal.SIG_IGN:
            return  # nohup: the operator asked for SIGHUP to be ignored
        if self.hangup == STOP:
            self._handle(signal.SIGHUP, self._gracefully)
        elif callable(self.hangup):
            self._handle(signal.SIGHUP, self._hangup)
        else:
            signal.signal(signal.SIGHUP, signal.SIG_IGN)

    def _handle(self, signum: int, handler: Callable[[int], None]) -> None:
        """Call C{handler(signum)} in the reactor thread on C{signum}."""

        def handle(number: int, frame: Any) -> None:
            self.reactor.callFromThread(handler, number)

        signal.signal(signum, handle)

    def _stopper(self, previous: Callable[[int, Any], Any]) -> Callable[[int], None]:
        def stop(signum: int) -> None:
            if self._already(signum):
                return
            self.stopping = True
            previous(signum, None)

        return stop

    def _already(self, signum: int) -> bool:
        if self.stopping:
            self.log.info(
                "received {signal} while stopping; already stopping",
                signal=signal.Signals(signum).name,
            )
        return self.stopping

    def _gracefully(self, signum: int) -> None:
        """SIGHUP or SIGQUIT in one process: a graceful stop."""
        if self._already(signum):
            return
        self.stopping = True
        name = signal.Signals(signum).name
        self.log.info(
            "received {signal}: stopping gracefully, as for SIGTERM", signal=name
        )
        if signum == signal.SIGHUP:
            # twistd exits by re-raising it, as it does SIGTERM.
            self.reactor._exitSignal = signum
        self.reactor.stop()

    def _hangup(self, signum: int) -> None:
        if self.stopping:
            return
        self.log.info("received SIGHUP")
        self.hangup()

    def _reopen(self, signum: int) -> None:
        if self.reopen is None:
            self.log.info("received SIGUSR1: no access log file to reopen")
            return
        if self.reopen() is False:
            return  # why is logged
        self.log.info("received SIGUSR1: reopened the access log")

    def _ignore(self, signum: int) -> None:
        now = self.reactor.seconds()
        if now < self._ignoredLogged.get(signum, -IGNORED_LOG_INTERVAL) + (
            IGNORED_LOG_INTERVAL
        ):
            return
        self._ignoredLogged[signum] = now
        self.log.info("received {signal}: ignored", signal=signal.Signals(signum).name)

    def quieten(self) -> None:
        """
        Once the reactor has stopped, ignore SIGQUIT, SIGUSR1 and the
        habitual signals: nothing is left to handle them, and as the
        interpreter exits it gives them back their default actions (SIGQUIT's
        dumps core; the others end the process), so a second signal sent a
        moment after the first would end a clean exit.
        """
        for signum in (signal.SIGQUIT, signal.SIGUSR1, *IGNORED):
            signal.signal(signum, signal.SIG_IGN)

    def _shutdown(self) -> None:
        self.stopping = True
