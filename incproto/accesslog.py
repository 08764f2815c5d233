# -*- test-case-name: tests.unit.test_accesslog,tests.e2e.test_accesslog -*-
"""The access log: one line per closed connection, at a cost that thousands
of connections a second can afford.

Twisted's logging formats every event on its own: it parses the format
string, formats the time, and writes and flushes the file.  That costs
about as much CPU as serving a short connection.  L{FileAccessLog} writes
the same line itself: the timestamp is formatted once per second, the line
with one f-string, and lines are buffered and written together at most
once per C{flushInterval} (and when the service stops).  L{EventAccessLog}
keeps Twisted's way, one structured event per close, for logs that need
the fields (C{twist --log-format json}, syslog, a daemon's log file).
"""

from __future__ import annotations

import os
import sys
from typing import IO, Any, Callable, List, Optional, Protocol

from twisted.application.service import Service
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger, formatTime

from incproto._kernel.logpipe import protect
from incproto._kernel.words import counted

# The namespace of the close event (and of the lines, which look the same).
NAMESPACE = "incproto.protocol.IncrementFactory"
CLOSE_FORMAT = (
    "connection from {peer} closed ({why}) after {duration:.3f}s: "
    "{received} in, {sent} out"
)
# --access-log's values other than a path.
STANDARD_OUTPUT = "-"
# Seconds a pipe's reader is given to take the lines salvaged before an
# abort (within the watchdog's LAST_WORDS_GRACE).
SALVAGE_FLUSH = 0.5
TWISTED_LOG = "log"


class AccessLog(Protocol):
    """
    Where L{incproto.protocol.IncrementFactory} reports each closed
    connection.
    """

    def record(
        self, peer: str, why: str, duration: float, bytesIn: int, bytesOut: int
    ) -> None:
        """
        Log one closed connection.

        @param peer: the client's address, as L{incproto._kernel.addresses.describe}
            writes it.
        @param why: why it closed (C{client closed}, C{shutdown}, ...).
        @param duration: how long it was open, in seconds.
        @param bytesIn: bytes received from the client.
        @param bytesOut: bytes sent to it, the greeting included.
        """


class EventAccessLog:
    """
    Log each close as a Twisted log event with the fields C{peer}, C{why},
    C{duration}, C{bytesIn} and C{bytesOut} (and C{received} and C{sent},
    those counts in words, for the text): what JSON logs and custom
    observers need, at Twisted's cost per event.
    """

    def __init__(self) -> None:
        # An instance's, not the class's: a Logger class attribute names its
        # events after the class, whatever namespace it was given.
        self.log = Logger(namespace=NAMESPACE)

    def record(
        self, peer: str, why: str, duration: float, bytesIn: int, bytesOut: int
    ) -> None:
        """
        Emit the close event; see L{AccessLog.record}.
        """
        self.log.info(
            CLOSE_FORMAT,
            peer=peer,
            why=why,
            duration=duration,
            bytesIn=bytesIn,
            bytesOut=bytesOut,
            received=counted(bytesIn, "byte"),
            sent=counted(bytesOut, "byte"),
        )


class FileAccessLog(Service):
    """
    Write each close as a line of text to a file, buffered: the same line
    Twisted's text log would write for the close event, at a fraction of
    the cost.

    Lines are written together C{flushInterval} seconds after the first
    one not yet written, or at once when C{maxLines} are waiting, and when
    the service stops.  Nothing is scheduled while no line waits.

    @ivar out: the text file lines are written to.
    @ivar clock: the time source for timestamps and the flush timer.
    @ivar flushInterval: at most how many seconds a line waits in memory.
    @ivar maxLines: how many lines may wait before they are written at once.
    @ivar closeOnStop: whether stopping the service closes C{out}.
    @ivar path: the file's path, for L{reopen}, if it is a file of ours.
    @ivar errors: how many writes failed (their lines are dropped).
    """

    log = Logger()

    def __init__(
        self,
        out: IO[str],
        clock: IReactorTime,
        flushInterval: float = 1.0,
        maxLines: int = 1000,
        closeOnStop: bool = False,
        timeFormatter: Callable[[float], str] = formatTime,
        path: Optional[str] = None,
    ) -> None:
        """
        @param timeFormatter: formats a whole second as the line's
            timestamp; Twisted's text log's format (local time) by default.
        """
        self.out = out
        self.path = path
        self.clock = clock
        self.flushInterval = flushInterval
        self.maxLines = maxLines
        self.closeOnStop = closeOnStop
        self.errors = 0
        self._formatTime = timeFormatter
        self._lines: List[str] = []
        self._flushing: Optional[IDelayedCall] = None
        self._second = -1
        self._prefix = ""

    def record(
        self, peer: str, why: str, duration: float, bytesIn: int, bytesOut: int
    ) -> None:
        """
        Buffer the close's line; see L{AccessLog.record}.
        """
        now = self.clock.seconds()
        if int(now) != self._second:
            self._second = int(now)
            stamp = self._formatTime(self._second)
            self._prefix = f"{stamp} [{NAMESPACE}#info] connection from "
        lines = self._lines
        lines.append(
            f"{self._prefix}{peer} closed ({why}) after {duration:.3f}s: "
            f"{bytesIn} byte{'' if bytesIn == 1 else 's'} in, "
            f"{bytesOut} byte{'' if bytesOut == 1 else 's'} out\n"
        )
        if len(lines) >= self.maxLines:
            self.flush()
        elif self._flushing is None:
            self._flushing = self.clock.callLater(self.flushInterval, self.flush)

    def flush(self) -> None:
        """
        Write every waiting line now.  A failed write is counted, logged
        once, and its lines dropped: the access log never stops the server.
        """
        if self._flushing is not None:
            if self._flushing.active():
                self._flushing.cancel()
            self._flushing = None
        if not self._lines:
            return
        text = "".join(self._lines)
        self._lines = []
        try:
            self.out.write(text)
            self.out.flush()
        except (OSError, ValueError) as e:
            self.errors += 1
            if self.errors == 1:
                self.log.warn(
                    "cannot write the access log: {error}; lines are dropped "
                    "until it can",
                    error=e,
                )

    def salvage(self) -> None:
        """
        Write the waiting lines now, from any thread, without the reactor:
        the process is about to end without a stop (the watchdog aborts it,
        see L{incproto.serving.watchdog.with_last_words}), and lines that
        waited for the next flush would be lost.  Best effort: a failed
        write costs the lines, and nothing is rescheduled.  On a pipe (a
        L{incproto._kernel.logpipe.LogStream}), its reader is given at most
        C{SALVAGE_FLUSH} seconds to take them.
        """
        lines, self._lines = self._lines, []  # never written twice
        if not lines:
            return
        try:
            self.out.write("".join(lines))
            self.out.flush()
            # A pipe's stream buffers what the pipe did not take, for the
            # reactor: give its reader a moment instead.
            flush = getattr(getattr(self.out, "writer", None), "flushBeforeExit", None)
            if flush is not None:
                flush(SALVAGE_FLUSH)
        except (OSError, ValueError):
            pass

    def reopen(self) -> bool:
        """
        Write what is waiting, then append to C{path} anew (SIGUSR1, after
        logrotate renamed the file): new lines go to a new file of that
        name.  If it cannot be opened, lines keep going to the old one.

        @return: whether the file was reopened (the reason why not is
            logged).
        """
        self.flush()
        if self.path is None:
            return False
        try:
            out = open(self.path, "a")
        except OSError as e:
            self.log.warn(
                "cannot reopen the access log {path}: {error}; still writing "
                "to the file it was",
                path=self.path,
                error=e.strerror,
            )
            return False
        old, self.out = self.out, out
        if self.closeOnStop:
            old.close()
        return True

    def stopService(self) -> None:
        """
        Write what is waiting (and close the file if it is ours).
        """
        super().stopService()
        self.flush()
        if self.closeOnStop:
            self.out.close()


def choose(destination: Optional[str], parent: Any, clock: IReactorTime) -> AccessLog:
    """
    The access log that C{--access-log} names.

    @param destination: C{-} for standard output, C{log} for Twisted log
        events, anything else a file to append to; C{None} picks standard
        output where twistd or twist logs there as text (C{twistd -n},
        C{twist} on a terminal), and log events otherwise (a daemon's log
        file, syslog, JSON logs, code without a command line), so that the
        lines go where the rest of the log goes.
    @param parent: the options of the command that ran the plugin (twistd's
        or twist's), or C{None}.
    @param clock: the time source of a file access log.
    @raise OSError: if the file cannot be opened.
    """
    if destination is None:
        destination = STANDARD_OUTPUT if _logs_text_to_stdout(parent) else TWISTED_LOG
    if destination == TWISTED_LOG:
        return EventAccessLog()
    if destination == STANDARD_OUTPUT:
        # The stream as it is now: twistd and twist replace sys.stdout with
        # a logging file after building the service, and log to this one.
        # On a pipe or socket it is made non-blocking: a reader that stops
        # costs lines, not sessions.
        return FileAccessLog(protect(sys.stdout, clock), clock)
    return FileAccessLog(
        open(destination, "a"),
        clock,
        closeOnStop=True,
        path=os.path.abspath(destination),
    )


def _logs_text_to_stdout(parent: Any) -> bool:
    """
    Whether C{parent}, twistd's or twist's options, logs text to standard
    output.
    """
    if parent is None:
        return False
    if "fileLogObserverFactory" in parent:  # twist
        from twisted.logger import textFileLogObserver

        return bool(
            parent.get("logFile") is sys.stdout
            and parent["fileLogObserverFactory"] is textFileLogObserver
        )
    if "nodaemon" in parent:  # twistd
        return bool(
            parent["nodaemon"]
            and parent.get("logfile") in (None, "", "-")
            and not parent.get("syslog")
            and parent.get("logger") is None
        )
    return False
