"""Tests for incproto.accesslog: the buffered access log, on task.Clock and
in-memory files, and how --access-log picks one."""

from __future__ import annotations

import io
import shutil
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Dict, List

from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.logger import (
    LogLevel,
    formatEventAsClassicLogText,
    globalLogPublisher,
    jsonFileLogObserver,
)
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from incproto import IncrementFactory
from incproto.accesslog import (
    CLOSE_FORMAT,
    NAMESPACE,
    SALVAGE_FLUSH,
    EventAccessLog,
    FileAccessLog,
    choose,
)
from incproto.tap import Options, makeService
from tests.support.fakes import connect_to

# 2026-11-23 11:35:02.250 UTC
WHEN = 1795433702.25


def a_log(
    out: Any = None, clock: Any = None, **kwargs: Any
) -> tuple[FileAccessLog, io.StringIO, Clock]:
    out = io.StringIO() if out is None else out
    clock = Clock() if clock is None else clock
    return FileAccessLog(out, clock, **kwargs), out, clock


class LineTests(SynchronousTestCase):
    def test_line_is_the_text_log_line_of_the_close_event(self) -> None:
        """
        The line says what Twisted's text log says for the close event,
        byte for byte: timestamp, system, peer, reason, duration, bytes.
        """
        clock = Clock()
        clock.advance(WHEN)
        log, out, _ = a_log(clock=clock)
        log.record("127.0.0.1:4321", "client closed", 0.00125, 5, 4)
        log.flush()
        event = {
            "log_format": CLOSE_FORMAT,
            "log_namespace": NAMESPACE,
            "log_level": LogLevel.info,
            "log_time": WHEN,
            "peer": "127.0.0.1:4321",
            "why": "client closed",
            "duration": 0.00125,
            "bytesIn": 5,
            "bytesOut": 4,
            "received": "5 bytes",
            "sent": "4 bytes",
        }
        self.assertEqual(out.getvalue(), formatEventAsClassicLogText(event))
        self.assertIn(
            "connection from 127.0.0.1:4321 closed (client closed) after "
            "0.001s: 5 bytes in, 4 bytes out\n",
            out.getvalue(),
        )

    def test_one_byte_is_a_byte_in_both_logs(self) -> None:
        """The event's text and the file's line say the same, in the
        singular for one byte (a connection that only got the greeting)."""
        events: List[Dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        try:
            for received, sent in ((0, 1), (1, 2), (5, 4)):
                clock = Clock()
                clock.advance(WHEN)
                log, out, _ = a_log(clock=clock)
                log.record("127.0.0.1:1", "client closed", 0.5, received, sent)
                log.flush()
                EventAccessLog().record(
                    "127.0.0.1:1", "client closed", 0.5, received, sent
                )
                event = dict(events[-1], log_time=WHEN)
                self.assertEqual(out.getvalue(), formatEventAsClassicLogText(event))
        finally:
            globalLogPublisher.removeObserver(events.append)
        lines = [formatEventAsClassicLogText(e).split(": ")[-1] for e in events]
        self.assertEqual(
            lines,
            [
                "0 bytes in, 1 byte out\n",
                "1 byte in, 2 bytes out\n",
                "5 bytes in, 4 bytes out\n",
            ],
        )

    def test_timestamp_is_formatted_once_per_second(self) -> None:
        seconds: List[float] = []

        def stamp(second: float) -> str:
            seconds.append(second)
            return f"T{second:.0f}"

        log, out, clock = a_log(timeFormatter=stamp)
        clock.advance(10.1)
        for _ in range(3):
            log.record("p", "shutdown", 0.0, 0, 1)
            clock.advance(0.2)
        clock.advance(1.0)
        log.record("p", "shutdown", 0.0, 0, 1)
        log.flush()
        self.assertEqual(seconds, [10, 11])
        stamps = [line.split(" ")[0] for line in out.getvalue().splitlines()]
        self.assertEqual(stamps, ["T10", "T10", "T10", "T11"])


class BufferTests(SynchronousTestCase):
    def test_lines_wait_for_the_flush_interval(self) -> None:
        log, out, clock = a_log(flushInterval=1.0)
        log.record("p", "client closed", 0.0, 0, 1)
        clock.advance(0.5)
        log.record("q", "client closed", 0.0, 0, 1)
        self.assertEqual(out.getvalue(), "")
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        clock.advance(0.5)
        self.assertEqual(len(out.getvalue().splitlines()), 2)

    def test_nothing_is_scheduled_while_no_line_waits(self) -> None:
        log, out, clock = a_log()
        self.assertEqual(clock.getDelayedCalls(), [])
        log.record("p", "client closed", 0.0, 0, 1)
        clock.advance(1.0)
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertEqual(len(out.getvalue().splitlines()), 1)

    def test_a_full_buffer_is_written_at_once(self) -> None:
        log, out, clock = a_log(maxLines=3)
        for _ in range(3):
            log.record("p", "client closed", 0.0, 0, 1)
        self.assertEqual(len(out.getvalue().splitlines()), 3)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_stop_writes_what_waits_and_closes_its_own_file(self) -> None:
        log, out, clock = a_log(closeOnStop=True)
        written: List[str] = []
        out.close = lambda: written.append(out.getvalue())  # type: ignore[method-assign]
        log.startService()
        log.record("p", "shutdown", 0.0, 0, 1)
        log.stopService()
        self.assertEqual(len(written), 1)
        self.assertIn("closed (shutdown)", written[0])
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_stop_leaves_a_borrowed_file_open(self) -> None:
        log, out, _ = a_log()
        log.startService()
        log.stopService()
        self.assertFalse(out.closed)

    def test_a_failed_write_is_counted_and_logged_once(self) -> None:
        class Full(io.StringIO):
            def write(self, text: str) -> int:
                raise OSError(28, "No space left on device")

        events: List[Dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        log, _, clock = a_log(out=Full())
        for _ in range(2):
            log.record("p", "client closed", 0.0, 0, 1)
            clock.advance(1.0)
        self.assertEqual(log.errors, 2)
        warnings = [e for e in events if e.get("log_namespace", "").endswith("Log")]
        self.assertEqual(len(warnings), 1)
        self.assertIn("No space left", str(warnings[0]["error"]))

    def test_salvage_writes_what_waits_without_the_reactor(self) -> None:
        log, out, clock = a_log()
        log.salvage()  # nothing waits: nothing written
        self.assertEqual(out.getvalue(), "")
        log.record("p", "client closed", 0.0, 0, 1)
        log.salvage()
        self.assertIn("connection from p closed (client closed)", out.getvalue())
        self.assertEqual(len(clock.getDelayedCalls()), 1)  # left as it was
        clock.advance(1.0)  # the reactor turns again: nothing twice
        self.assertEqual(out.getvalue().count("closed (client closed)"), 1)

    def test_salvage_gives_a_pipes_reader_a_moment(self) -> None:
        flushed: List[float] = []
        out = io.StringIO()
        out.writer = SimpleNamespace(flushBeforeExit=flushed.append)  # type: ignore[attr-defined]
        log, _, _ = a_log(out=out)
        log.record("p", "client closed", 0.0, 0, 1)
        log.salvage()
        self.assertEqual(flushed, [SALVAGE_FLUSH])

    def test_a_failed_salvage_raises_nothing(self) -> None:
        out = io.StringIO()
        log, _, _ = a_log(out=out)
        log.record("p", "client closed", 0.0, 0, 1)
        out.close()
        log.salvage()
        self.assertEqual(log.errors, 0)


class FactoryTests(SynchronousTestCase):
    def test_factory_logs_each_close_to_its_access_log(self) -> None:
        clock = Clock()
        log, out, _ = a_log(clock=clock)
        factory = IncrementFactory(clock=clock, accessLog=log)
        protocol, _ = connect_to(factory)
        protocol.dataReceived(b"^abc$")
        clock.advance(2.5)
        protocol.readConnectionLost()
        protocol.connectionLost(Failure(ConnectionDone()))
        clock.advance(1.0)
        self.assertTrue(
            out.getvalue().endswith(
                "connection from 192.168.1.1:54321 closed (client closed) after "
                "2.500s: 5 bytes in, 4 bytes out\n"
            ),
            out.getvalue(),
        )

    def test_no_connection_log_writes_nothing(self) -> None:
        clock = Clock()
        log, out, _ = a_log(clock=clock)
        factory = IncrementFactory(clock=clock, accessLog=log, logConnections=False)
        protocol, _ = connect_to(factory)
        protocol.connectionLost(Failure(ConnectionDone()))
        clock.advance(1.0)
        self.assertEqual(out.getvalue(), "")
        self.assertEqual(factory.closedBy, {"client closed": 1})


def temporary_path(case: SynchronousTestCase) -> Path:
    directory = tempfile.mkdtemp()
    case.addCleanup(shutil.rmtree, directory)
    return Path(directory) / "access.log"


def twistd_options(*argv: str) -> usage.Options:
    from twisted.scripts.twistd import ServerOptions

    options = ServerOptions()
    options.parseOptions([*argv, "incproto", "--port", "tcp:0"])
    return options


def twist_options(*argv: str) -> usage.Options:
    from twisted.application.twist._options import TwistOptions

    options = TwistOptions()
    options.parseOptions([*argv, "incproto", "--port", "tcp:0"])
    return options


class ChooseTests(SynchronousTestCase):
    """
    By default the lines go where the rest of the log goes: fast to standard
    output where twistd or twist writes text there, as events otherwise.
    """

    def test_twistd_nodaemon_logs_to_stdout(self) -> None:
        log = choose(None, twistd_options("-n"), Clock())
        assert isinstance(log, FileAccessLog)
        self.assertIs(log.out, sys.stdout)

    def test_twistd_with_a_log_file_or_daemonized_logs_events(self) -> None:
        for argv in (["-n", "--logfile", "x.log"], [], ["-n", "--syslog"]):
            log = choose(None, twistd_options(*argv), Clock())
            self.assertIsInstance(log, EventAccessLog, argv)

    def test_twist_text_to_stdout_logs_to_stdout(self) -> None:
        log = choose(None, twist_options("--log-format", "text"), Clock())
        self.assertIsInstance(log, FileAccessLog)

    def test_twist_json_logs_events(self) -> None:
        """
        C{twist --log-format json} keeps one JSON event per close, with its
        fields.
        """
        log = choose(None, twist_options("--log-format", "json"), Clock())
        self.assertIsInstance(log, EventAccessLog)
        out = io.StringIO()
        observer = jsonFileLogObserver(out)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        log.record("127.0.0.1:1", "client closed", 0.5, 5, 4)
        self.assertIn('"bytesOut": 4', out.getvalue())
        self.assertIn('"why": "client closed"', out.getvalue())

    def test_code_without_a_command_line_logs_events(self) -> None:
        self.assertIsInstance(choose(None, None, Clock()), EventAccessLog)

    def test_explicit_choices(self) -> None:
        parent = twistd_options("-n")
        self.assertIsInstance(choose("log", parent, Clock()), EventAccessLog)
        stdout = choose("-", None, Clock())
        assert isinstance(stdout, FileAccessLog)
        self.assertIs(stdout.out, sys.stdout)

    def test_a_path_is_appended_to(self) -> None:
        path = temporary_path(self)
        path.write_text("before\n")
        log = choose(str(path), None, Clock())
        assert isinstance(log, FileAccessLog)
        log.record("p", "client closed", 0.0, 0, 1)
        log.stopService()
        lines = path.read_text().splitlines()
        self.assertEqual(lines[0], "before")
        self.assertIn("closed (client closed)", lines[1])
        self.assertTrue(log.out.closed)

    def test_reopen_after_a_rename_writes_a_new_file(self) -> None:
        """
        SIGUSR1's reopen (logrotate renamed the file): what was waiting
        goes to the renamed file, new lines to a new file of the name.
        """
        path = temporary_path(self)
        log = choose(str(path), None, Clock())
        assert isinstance(log, FileAccessLog)
        log.record("old", "client closed", 0.0, 0, 1)
        rotated = path.with_name(path.name + ".1")
        path.rename(rotated)
        self.assertTrue(log.reopen())
        log.record("new", "client closed", 0.0, 0, 1)
        log.stopService()
        self.assertIn("from old closed", rotated.read_text())
        self.assertNotIn("from new", rotated.read_text())
        self.assertIn("from new closed", path.read_text())

    def test_reopen_that_fails_keeps_the_old_file(self) -> None:
        path = temporary_path(self)
        log = choose(str(path), None, Clock())
        assert isinstance(log, FileAccessLog)
        log.path = str(path.parent / "missing" / "access.log")
        self.assertFalse(log.reopen())
        log.record("still", "client closed", 0.0, 0, 1)
        log.stopService()
        self.assertIn("from still closed", path.read_text())

    def test_reopen_of_a_stream_only_flushes(self) -> None:
        out = io.StringIO()
        log = FileAccessLog(out, Clock())
        log.record("p", "client closed", 0.0, 0, 1)
        self.assertFalse(log.reopen())
        self.assertIn("from p closed", out.getvalue())
        self.assertFalse(out.closed)


class OptionTests(SynchronousTestCase):
    def test_unwritable_path_is_a_usage_error(self) -> None:
        with self.assertRaises(usage.UsageError) as raised:
            Options.parse(["--access-log", "/nonexistent/dir/access.log"])
        self.assertIn("--access-log /nonexistent/dir/access.log", str(raised.exception))

    def test_file_access_log_is_stopped_last(self) -> None:
        """
        After the drain, so that the closes of a shutdown are written.
        """
        path = str(temporary_path(self))
        service = makeService(Options.parse(["--access-log", path]), Clock())
        first = next(iter(service))
        self.assertIsInstance(first, FileAccessLog)

    def test_no_connection_log_makes_no_access_log(self) -> None:
        options = Options.parse(["--access-log", "-", "--no-connection-log"])
        service = makeService(options, Clock())
        self.assertFalse(any(isinstance(s, FileAccessLog) for s in service))

    def test_workers_are_given_the_option(self) -> None:
        options = Options.parse(["--access-log", "log", "--workers", "2"])
        self.assertEqual(options.config.for_worker().access_log, "log")
