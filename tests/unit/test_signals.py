"""SignalHandling on the real signal module, with a fake reactor: one stop
however many stop signals arrive, SIGHUP's three meanings, SIGQUIT's graceful
stop, SIGUSR1's reopen, and the habitual signals ignored with a log line."""

from __future__ import annotations

import signal
from typing import Any, Callable, Dict, List, Optional

from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from incproto.serving.signals import IGNORED, STOP, SignalHandling

STOPS = (signal.SIGTERM, signal.SIGINT)
SIGNALS = (*STOPS, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, *IGNORED)


class FakeReactor(Clock):
    """Runs callWhenRunning and callFromThread calls at once; counts stops."""

    def __init__(self) -> None:
        super().__init__()
        self.triggers: List[Any] = []
        self.stopped = 0
        self._exitSignal: Optional[int] = None

    def callWhenRunning(self, f: Callable[[], None]) -> None:
        f()

    def callFromThread(self, f: Callable[..., None], *args: Any) -> None:
        f(*args)

    def addSystemEventTrigger(self, *args: Any) -> None:
        self.triggers.append(args)

    def stop(self) -> None:
        self.stopped += 1


class SignalHandlingTests(SynchronousTestCase):
    def setUp(self) -> None:
        saved = {signum: signal.getsignal(signum) for signum in SIGNALS}
        for signum, handler in saved.items():
            self.addCleanup(signal.signal, signum, handler)
        self.stops: List[int] = []
        for signum in (signal.SIGTERM, signal.SIGINT):
            # What the reactor installs as it starts.
            signal.signal(signum, lambda n, frame: self.stops.append(n))
        for signum in SIGNALS[2:]:
            signal.signal(signum, signal.SIG_DFL)
        self.reactor = FakeReactor()
        self.events: List[Dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def deliver(self, signum: int) -> None:
        handler = signal.getsignal(signum)
        assert callable(handler)
        handler(signum, None)

    def messages(self) -> List[str]:
        from twisted.logger import formatEvent

        return [formatEvent(e) for e in self.events]

    def test_a_second_stop_signal_is_only_logged(self) -> None:
        handling = SignalHandling(self.reactor)
        handling.startService()
        self.deliver(signal.SIGTERM)
        self.deliver(signal.SIGTERM)
        self.deliver(signal.SIGINT)
        self.assertEqual(self.stops, [signal.SIGTERM])
        self.assertTrue(handling.stopping)

    def test_a_stop_signal_during_shutdown_is_only_logged(self) -> None:
        """The reactor stopping for another reason counts as stopping."""
        handling = SignalHandling(self.reactor)
        handling.startService()
        [(_, _, shutdown)] = [
            t for t in self.reactor.triggers if t[:2] == ("before", "shutdown")
        ]
        shutdown()
        self.deliver(signal.SIGTERM)
        self.assertEqual(self.stops, [])

    def test_sighup_stops_gracefully_and_says_so(self) -> None:
        """
        SIGHUP stops the reactor once, twistd re-raises SIGHUP at exit, and
        the log names SIGHUP (it said "Received SIGTERM", issue 25).
        """
        SignalHandling(self.reactor, STOP).startService()
        self.deliver(signal.SIGHUP)
        self.deliver(signal.SIGTERM)
        self.assertEqual((self.reactor.stopped, self.stops), (1, []))
        self.assertEqual(self.reactor._exitSignal, signal.SIGHUP)
        self.assertEqual(
            self.messages()[0],
            "received SIGHUP: stopping gracefully, as for SIGTERM",
        )
        self.assertNotIn("SIGTERM, shutting down", " ".join(self.messages()))

    def test_sigquit_stops_gracefully_exiting_zero(self) -> None:
        """SIGQUIT is a graceful stop (nginx, gunicorn), not re-raised."""
        SignalHandling(self.reactor).startService()
        self.deliver(signal.SIGQUIT)
        self.deliver(signal.SIGQUIT)
        self.assertEqual(self.reactor.stopped, 1)
        self.assertIsNone(self.reactor._exitSignal)
        self.assertIn(
            "received SIGQUIT: stopping gracefully, as for SIGTERM", self.messages()
        )

    def test_once_stopped_the_habitual_signals_are_ignored(self) -> None:
        """After the reactor stops, the interpreter gives SIGQUIT, SIGUSR1
        and the rest their default actions back as it exits (a second
        SIGQUIT then dumped core): they are ignored instead."""
        SignalHandling(self.reactor).startService()
        [quieten] = [t for t in self.reactor.triggers if t[:2] == ("after", "shutdown")]
        quieten[2]()
        for signum in SIGNALS[2:]:
            if signum != signal.SIGHUP:  # twistd re-raises it to exit
                self.assertEqual(signal.getsignal(signum), signal.SIG_IGN, signum)

    def test_sigquit_can_be_left_alone(self) -> None:
        """A worker handles SIGQUIT itself (retire)."""
        signal.signal(signal.SIGQUIT, signal.SIG_IGN)
        SignalHandling(self.reactor, None, quit=None).startService()
        self.assertEqual(signal.getsignal(signal.SIGQUIT), signal.SIG_IGN)

    def test_sigusr1_reopens(self) -> None:
        reopened: List[None] = []
        SignalHandling(
            self.reactor, reopen=lambda: reopened.append(None)
        ).startService()
        self.deliver(signal.SIGUSR1)
        self.assertEqual((len(reopened), self.reactor.stopped), (1, 0))
        self.assertEqual(self.messages(), ["received SIGUSR1: reopened the access log"])

    def test_a_failed_reopen_is_not_logged_as_done(self) -> None:
        """The reopener logs why it failed; the signal's line does not then
        say it was reopened (it said both)."""
        SignalHandling(self.reactor, reopen=lambda: False).startService()
        self.deliver(signal.SIGUSR1)
        self.assertEqual(self.messages(), [])

    def test_sigusr1_with_nothing_to_reopen(self) -> None:
        SignalHandling(self.reactor).startService()
        self.deliver(signal.SIGUSR1)
        self.assertEqual(self.reactor.stopped, 0)
        self.assertEqual(
            self.messages(), ["received SIGUSR1: no access log file to reopen"]
        )

    def test_habitual_signals_are_ignored_with_a_log_line(self) -> None:
        """
        SIGUSR2, SIGALRM, SIGTTIN, SIGTTOU and SIGWINCH neither end nor
        freeze the process: one log line each, at most one a second.
        """
        SignalHandling(self.reactor).startService()
        for signum in IGNORED:
            self.deliver(signum)
            self.deliver(signum)
        names = [signal.Signals(s).name for s in IGNORED]
        self.assertEqual(self.messages(), [f"received {n}: ignored" for n in names])
        self.reactor.advance(1)
        self.deliver(IGNORED[0])
        self.assertEqual(len(self.events), len(IGNORED) + 1)
        self.assertEqual((self.reactor.stopped, self.stops), (0, []))

    def test_a_handler_set_by_someone_else_is_kept(self) -> None:
        """twistd --debug's SIGUSR2 (pdb), an embedder's SIGALRM: left."""
        mine = lambda n, frame: None  # noqa: E731
        signal.signal(signal.SIGUSR2, mine)
        SignalHandling(self.reactor).startService()
        self.assertIs(signal.getsignal(signal.SIGUSR2), mine)

    def test_handlers_only_hand_over_to_the_reactor(self) -> None:
        """Nothing is logged inside a signal handler: it could interrupt a
        log write."""
        calls: List[Any] = []
        self.reactor.callFromThread = lambda f, *a: calls.append(f)  # type: ignore
        SignalHandling(self.reactor).startService()
        for signum in (signal.SIGTERM, signal.SIGQUIT, signal.SIGUSR1, IGNORED[0]):
            self.deliver(signum)
        self.assertEqual((len(calls), self.events, self.stops), (4, [], []))

    def test_sighup_can_call_a_function(self) -> None:
        reloads: List[None] = []
        SignalHandling(self.reactor, lambda: reloads.append(None)).startService()
        self.deliver(signal.SIGHUP)
        self.deliver(signal.SIGHUP)
        self.assertEqual((len(reloads), self.stops), (2, []))

    def test_sighup_can_be_ignored(self) -> None:
        SignalHandling(self.reactor, None).startService()
        self.assertEqual(signal.getsignal(signal.SIGHUP), signal.SIG_IGN)

    def test_nohup_is_respected(self) -> None:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        SignalHandling(self.reactor, STOP).startService()
        self.assertEqual(signal.getsignal(signal.SIGHUP), signal.SIG_IGN)
