# -*- test-case-name: tests.unit.test_logpipe,tests.e2e.test_logpipe -*-
"""Log streams that never block the reactor: a full pipe costs log lines,
counted, never sessions.

A process that writes its log to a pipe or a socket (C{twistd -n | ...},
systemd's journal, a container runtime, a C{--workers} supervisor reading
its workers) blocks in C{write} once the reader stops reading and the
kernel's buffer is full: the reactor stops turning, no session is served,
and not even SIGTERM is acted on.  L{DroppingWriter} sets such a
descriptor non-blocking and writes through a bounded buffer (C{LIMIT}
bytes) that the reactor flushes when the descriptor is writable; when the
buffer is full, whole lines are dropped and counted
(L{dropped_lines}, the metric C{incproto_log_lines_dropped_total}), and once
the reader is back and the buffer has drained, one warning says how many.

Only pipes and sockets are made non-blocking: a terminal or a file is
written as before (a terminal's non-blocking flag would outlive the process
in the shell that shares it).  The flag is left set at exit: the pipe's
other end is the reader's alone.
"""

from __future__ import annotations

import fcntl
import io
import os
import select
import stat
import sys
import threading
import time
from typing import Any, Dict, Optional

from twisted.internet.interfaces import IReactorFDSet
from twisted.logger import Logger
from twisted.python import threadable
from twisted.python.failure import Failure

# Bytes a stream may hold while its reader does not read.
LIMIT = 64 * 1024
# Seconds the reactor's shutdown waits for a slow reader to take the rest.
EXIT_FLUSH = 0.5


class DroppingWriter:
    """
    Write to a non-blocking descriptor through a bounded buffer, dropping
    (and counting) whole lines that do not fit.  Any thread may write; the
    reactor flushes the buffer when the descriptor is writable (this is its
    C{IWriteDescriptor}).

    @ivar fd: the descriptor written to.
    @ivar limit: the most bytes buffered.
    @ivar dropped: how many lines were dropped, in all.
    @ivar broken: whether the reader has gone (every line is dropped).
    """

    log = Logger()

    def __init__(self, fd: int, reactor: Any, limit: int = LIMIT) -> None:
        """
        @param fd: a descriptor, which is made non-blocking.
        @param reactor: an C{IReactorFDSet} that flushes the buffer.
        """
        self.fd = fd
        self.reactor = reactor
        self.limit = limit
        self.dropped = 0
        self.broken = False
        self._unreported = 0
        self._buffer = bytearray()
        self._midline = False  # the last byte kept ends no line
        self._skipping = False  # dropping the rest of a line
        self._watched = False
        # Reentrant: a signal handler that logs may interrupt a write.
        self._lock = threading.RLock()
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_NONBLOCK)

    def write(self, data: bytes) -> None:
        """
        Write C{data} now as far as the descriptor takes it, buffer the
        rest, and drop the whole lines that do not fit.
        """
        with self._lock:
            if self._skipping:
                end = data.find(b"\n")
                if end < 0:
                    return
                data = data[end + 1 :]
                self._skipping = False
            if not data:
                return
            if self.broken:
                self._drop(data)
                return
            if not self._buffer:
                data = data[self._send(data) :]
                if not data:
                    return
            self._keep(data)
            watch = bool(self._buffer) and not self._watched
            self._watched = self._watched or watch
        if watch:
            self._watch()

    def _send(self, data: Any) -> int:
        """Write what the descriptor takes now; how many bytes it took."""
        try:
            written = os.write(self.fd, data)
        except BlockingIOError:
            return 0
        except OSError:
            self.broken = True  # EPIPE, EBADF: the reader is gone for good
            return 0
        if written:
            self._midline = data[written - 1 : written] != b"\n"
        return written

    def _keep(self, data: bytes) -> None:
        """Buffer the whole lines of C{data} that fit; drop the rest."""
        if self.broken:
            self._buffer.clear()
            self._drop(data)
            return
        room = max(self.limit - len(self._buffer), 0)
        if len(data) <= room:
            kept, rest = data, b""
        else:
            cut = data.rfind(b"\n", 0, room) + 1
            kept, rest = data[:cut], data[cut:]
            if not cut and self._midline:
                # A line already partly written: end it, drop the rest.
                kept, rest = data[:room] + b"\n", data[room:]
        if kept:
            self._buffer += kept
            self._midline = not kept.endswith(b"\n")
        if rest:
            self._drop(rest)

    def _drop(self, data: bytes) -> None:
        lines = data.count(b"\n")
        if not data.endswith(b"\n"):
            lines += 1
            self._skipping = True
        self.dropped += lines
        self._unreported += lines

    def _watch(self) -> None:
        if threadable.isInIOThread():
            self.reactor.addWriter(self)
        else:
            self.reactor.callFromThread(self.reactor.addWriter, self)

    def doWrite(self) -> None:
        """
        The descriptor is writable: write what the buffer holds; once it is
        empty, stop watching and say how many lines were dropped, if any.
        """
        with self._lock:
            written = self._send(bytes(self._buffer))
            if self.broken:
                self._drop(bytes(self._buffer))
            del self._buffer[:written]
            if self._buffer and not self.broken:
                return
            self._buffer.clear()
            self._watched = False
            self.reactor.removeWriter(self)
            unreported, self._unreported = self._unreported, 0
        if unreported and not self.broken:
            self.log.warn(
                "{count} log {lines} dropped: the log's reader did not keep up",
                count=unreported,
                lines="line was" if unreported == 1 else "lines were",
            )

    def flushBeforeExit(self, timeout: float = EXIT_FLUSH) -> None:
        """
        Give a slow reader at most C{timeout} seconds to take what is
        buffered (the reactor is stopping: nothing would flush it after).
        """
        poller = select.poll()
        poller.register(self.fd, select.POLLOUT)
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._buffer and not self.broken:
                left = deadline - time.monotonic()
                if left <= 0 or not poller.poll(left * 1000):
                    break
                del self._buffer[: self._send(bytes(self._buffer))]

    def fileno(self) -> int:
        """The descriptor, for the reactor."""
        return self.fd

    def logPrefix(self) -> str:
        """What the reactor's log calls this."""
        return "DroppingWriter"

    def connectionLost(self, reason: Failure) -> None:
        """The reactor gave up on the descriptor: drop from now on."""
        with self._lock:
            self.broken = True
            self._watched = False


class LogStream(io.TextIOBase):
    """
    A text stream over a L{DroppingWriter}: what Twisted's file log
    observers and the access log write to.  Writing never blocks and
    never fails.
    """

    def __init__(self, writer: DroppingWriter) -> None:
        super().__init__()
        self.writer = writer

    @property
    def encoding(self) -> str:  # type: ignore[override]
        """Text is written as UTF-8."""
        return "utf-8"

    def write(self, text: str) -> int:
        """Write C{text} (see L{DroppingWriter.write})."""
        self.writer.write(text.encode("utf-8", "replace"))
        return len(text)

    def writable(self) -> bool:
        """Always."""
        return True

    def flush(self) -> None:
        """Nothing to do: the reactor flushes the buffer."""

    def fileno(self) -> int:
        """The descriptor written to."""
        return self.writer.fd

    def isatty(self) -> bool:
        """Never: only pipes and sockets get a L{LogStream}."""
        return False


_streams: Dict[int, LogStream] = {}


def stream_for(fd: int, reactor: Any) -> Optional[LogStream]:
    """
    The non-blocking log stream of C{fd}, made once per process, or C{None}
    where C{fd} is not a pipe or a socket (a terminal, a file: written as
    they are) or C{reactor} cannot watch descriptors.
    """
    if fd in _streams:
        return _streams[fd]
    if not IReactorFDSet.providedBy(reactor):
        return None
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return None
    if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
        return None
    writer = DroppingWriter(fd, reactor)
    if hasattr(reactor, "addSystemEventTrigger"):
        reactor.addSystemEventTrigger("after", "shutdown", writer.flushBeforeExit)
    _streams[fd] = stream = LogStream(writer)
    return stream


def protect(stream: Any, reactor: Any) -> Any:
    """
    C{stream}, or the non-blocking L{LogStream} of its descriptor if it is
    standard output or standard error on a pipe or a socket (see
    L{stream_for}); C{sys.stdout} or C{sys.stderr} is replaced with it, so
    that everything this process prints goes the same way.
    """
    fd = _fileno(stream)
    if isinstance(stream, LogStream) or fd not in (1, 2):
        return stream
    try:
        stream.flush()
    except (OSError, ValueError):
        pass
    protected = stream_for(fd, reactor)
    if protected is None:
        return stream
    name = "stdout" if fd == 1 else "stderr"
    current = getattr(sys, name)
    if current is stream or _fileno(current) == fd:
        setattr(sys, name, protected)
    return protected


def _fileno(stream: Any) -> Optional[int]:
    try:
        return int(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return None


def protect_twisted_log(parent: Any, reactor: Any) -> None:
    """
    Make the log that twistd or twist (whose options are C{parent}) is
    about to start write through a L{LogStream} when it goes to standard
    output or standard error: twistd's C{-n} log reads C{sys.stdout} when
    it starts, twist's C{--log-file -} (its default) or C{+} was opened as
    C{parent["logFile"]}.  Call it before either starts its log (from
    C{makeService}).
    """
    if parent is None:
        return
    if "fileLogObserverFactory" in parent:  # twist
        parent["logFile"] = protect(parent.get("logFile"), reactor)
    elif parent.get("nodaemon"):  # twistd -n
        # Its log (and a --logger's observer, and print) reads sys.stdout.
        protect(sys.stdout, reactor)


def dropped_lines() -> int:
    """How many log lines this process dropped, in all its log streams."""
    return sum(stream.writer.dropped for stream in _streams.values())


__all__ = [
    "DroppingWriter",
    "LogStream",
    "dropped_lines",
    "protect",
    "protect_twisted_log",
    "stream_for",
]
