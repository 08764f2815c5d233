"""DroppingWriter on a real pipe (os.pipe: no socket, no process) and a fake
reactor: a reader that stops costs whole lines, counted, never a blocked
write; once it is back, one warning says how many."""

from __future__ import annotations

import fcntl
import os
import tempfile
from typing import Any, Callable, Dict, List

from twisted.internet.interfaces import IReactorFDSet
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from incproto._kernel import logpipe
from incproto._kernel.logpipe import DroppingWriter, LogStream, stream_for

F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
PIPE_SIZE = 4096
LIMIT = 1024


class FakeReactor:
    """Records the writers the reactor would watch; runs calls at once."""

    def __init__(self) -> None:
        self.writers: List[Any] = []

    def addWriter(self, writer: Any) -> None:
        if writer not in self.writers:
            self.writers.append(writer)

    def removeWriter(self, writer: Any) -> None:
        if writer in self.writers:
            self.writers.remove(writer)

    def callFromThread(self, f: Callable[..., Any], *args: Any) -> None:
        f(*args)


class DroppingWriterTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.r, self.w = os.pipe()
        self.addCleanup(os.close, self.r)
        self.addCleanup(self._close_write)
        fcntl.fcntl(self.w, F_SETPIPE_SZ, PIPE_SIZE)
        self.reactor = FakeReactor()
        self.writer = DroppingWriter(self.w, self.reactor, limit=LIMIT)
        self.events: List[Dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def _close_write(self) -> None:
        try:
            os.close(self.w)
        except OSError:
            pass

    def read_all(self) -> bytes:
        fcntl.fcntl(self.r, fcntl.F_SETFL, os.O_NONBLOCK)
        chunks = []
        while True:
            try:
                chunk = os.read(self.r, 65536)
            except BlockingIOError:
                return b"".join(chunks)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)

    def fill(self, count: int) -> List[bytes]:
        """Write C{count} numbered 100-byte lines; return them."""
        lines = [b"line %05d " % i + b"x" * 88 + b"\n" for i in range(count)]
        for line in lines:
            self.writer.write(line)
        return lines

    def test_reader_keeping_up_gets_everything_at_once(self) -> None:
        """
        While the pipe has room, each write goes straight through: nothing
        is buffered and the reactor watches nothing.
        """
        lines = self.fill(20)
        self.assertEqual(self.read_all(), b"".join(lines))
        self.assertEqual(self.reactor.writers, [])
        self.assertEqual(self.writer.dropped, 0)

    def test_stopped_reader_costs_whole_lines_counted(self) -> None:
        """
        With the reader stopped, writes never block: the pipe fills, then
        the buffer (up to its limit), then whole lines are dropped and
        counted; the reactor watches the descriptor.
        """
        lines = self.fill(200)  # 20 000 bytes: pipe 4 KiB + buffer 1 KiB
        self.assertEqual(self.reactor.writers, [self.writer])
        self.assertGreater(self.writer.dropped, 140)
        got = self.read_all()
        kept = len(got) // 100 + len(self.writer._buffer) // 100
        self.assertEqual(kept + self.writer.dropped, 200)
        self.assertTrue(got.startswith(lines[0]))

    def test_reader_back_gets_whole_lines_and_one_summary(self) -> None:
        """
        Once the reader is back, the reactor's flush writes what was kept,
        stops watching, and one warning counts the lines dropped.  Every
        line that arrives is whole.
        """
        lines = set(self.fill(200))
        dropped = self.writer.dropped
        got = self.read_all()
        self.writer.doWrite()
        got += self.read_all()
        self.assertEqual(self.reactor.writers, [])
        summaries = [e for e in self.events if e.get("count") is not None]
        self.assertEqual([e["count"] for e in summaries], [dropped])
        self.assertEqual(summaries[0]["log_level"].name, "warn")
        received = got.split(b"\n")
        self.assertEqual(received.pop(), b"")
        for line in received:
            self.assertIn(line + b"\n", lines)
        self.assertEqual(len(received) + dropped, 200)
        # And writing goes straight through again, with no new summary.
        self.writer.write(b"after\n")
        self.assertEqual(self.read_all(), b"after\n")
        self.assertEqual(len(self.events), 1)

    def test_reader_still_stopped_keeps_the_buffer(self) -> None:
        """A flush while the pipe is still full writes nothing and waits."""
        self.fill(200)
        self.writer.doWrite()
        self.assertEqual(self.reactor.writers, [self.writer])
        self.assertEqual(self.events, [])

    def test_long_line_partly_written_is_ended(self) -> None:
        """
        A line longer than the pipe and the buffer: what fits is written,
        ended with a newline, and the rest of the line is dropped, its
        continuation in later writes included.
        """
        self.writer.write(b"a" * 10000)
        self.writer.write(b"b" * 100)
        self.writer.write(b"c\nnext\n")
        self.assertEqual(self.writer.dropped, 2)  # the long one, and next
        got = self.read_all()
        self.writer.doWrite()
        got += self.read_all()
        self.assertEqual(got, b"a" * (PIPE_SIZE + LIMIT) + b"\n")
        self.writer.write(b"more\n")
        self.assertEqual(self.read_all(), b"more\n")

    def test_reader_gone_drops_everything(self) -> None:
        """A closed reader (EPIPE) costs every line from then on, counted."""
        os.close(self.r)
        self.r = os.open(os.devnull, os.O_RDONLY)
        self.fill(3)
        self.assertTrue(self.writer.broken)
        self.assertEqual(self.writer.dropped, 3)

    def test_descriptor_made_non_blocking(self) -> None:
        self.assertTrue(fcntl.fcntl(self.w, fcntl.F_GETFL) & os.O_NONBLOCK)

    def test_text_stream(self) -> None:
        """L{LogStream} writes text as UTF-8 and is never a terminal."""
        stream = LogStream(self.writer)
        stream.write("é\n")
        stream.flush()
        self.assertEqual(self.read_all(), "é\n".encode())
        self.assertEqual(stream.fileno(), self.w)
        self.assertFalse(stream.isatty())


class StreamForTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.patch(logpipe, "_streams", {})

    def test_file_is_written_as_it_is(self) -> None:
        """A regular file never blocks on a reader: no stream for it."""
        with tempfile.TemporaryFile() as f:
            self.assertIsNone(stream_for(f.fileno(), FakeReactorFD()))
            self.assertFalse(fcntl.fcntl(f.fileno(), fcntl.F_GETFL) & os.O_NONBLOCK)

    def test_pipe_gets_one_stream(self) -> None:
        """A pipe gets a non-blocking stream, the same one each time."""
        r, w = os.pipe()
        self.addCleanup(os.close, r)
        self.addCleanup(os.close, w)
        reactor = FakeReactorFD()
        stream = stream_for(w, reactor)
        self.assertIsInstance(stream, LogStream)
        self.assertIs(stream_for(w, reactor), stream)
        self.assertEqual(reactor.triggers[0][:2], ("after", "shutdown"))

    def test_reactor_without_descriptors(self) -> None:
        """A reactor that cannot watch descriptors (a Clock) gets none."""
        from twisted.internet.task import Clock

        r, w = os.pipe()
        self.addCleanup(os.close, r)
        self.addCleanup(os.close, w)
        self.assertIsNone(stream_for(w, Clock()))

    def test_dropped_lines_sums_the_streams(self) -> None:
        r, w = os.pipe()
        self.addCleanup(os.close, r)
        self.addCleanup(os.close, w)
        stream = stream_for(w, FakeReactorFD())
        assert stream is not None
        stream.writer.dropped = 7
        self.assertEqual(logpipe.dropped_lines(), 7)


@implementer(IReactorFDSet)
class FakeReactorFD(FakeReactor):
    """A fake reactor that provides IReactorFDSet."""

    def __init__(self) -> None:
        super().__init__()
        self.triggers: List[Any] = []

    def addSystemEventTrigger(self, *args: Any) -> None:
        self.triggers.append(args)
