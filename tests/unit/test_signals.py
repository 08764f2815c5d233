"""SignalHandling on the real signal module, with a fake reactor: one stop
however many stop signals arrive, and SIGHUP's three meanings."""

from __future__ import annotations

import signal
from typing import Any, Callable, List

from twisted.trial.unittest import SynchronousTestCase

from incproto.serving.signals import STOP, SignalHandling

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class FakeReactor:
    """Runs callWhenRunning and callFromThread calls at once."""

    def __init__(self) -> None:
        self.triggers: List[Any] = []

    def callWhenRunning(self, f: Callable[[], None]) -> None:
        f()

    def callFromThread(self, f: Callable[[], None]) -> None:
        f()

    def addSystemEventTrigger(self, *args: Any) -> None:
        self.triggers.append(args)


class SignalHandlingTests(SynchronousTestCase):
    def setUp(self) -> None:
        saved = {signum: signal.getsignal(signum) for signum in SIGNALS}
        for signum, handler in saved.items():
            self.addCleanup(signal.signal, signum, handler)
        self.stops: List[int] = []
        for signum in (signal.SIGTERM, signal.SIGINT):
            # What the reactor installs as it starts.
            signal.signal(signum, lambda n, frame: self.stops.append(n))
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        self.reactor = FakeReactor()

    def deliver(self, signum: int) -> None:
        handler = signal.getsignal(signum)
        assert callable(handler)
        handler(signum, None)

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
        [(phase, event, shutdown)] = self.reactor.triggers
        self.assertEqual((phase, event), ("before", "shutdown"))
        shutdown()
        self.deliver(signal.SIGTERM)
        self.assertEqual(self.stops, [])

    def test_sighup_stops_like_sigterm(self) -> None:
        SignalHandling(self.reactor, STOP).startService()
        self.deliver(signal.SIGHUP)
        self.deliver(signal.SIGTERM)
        self.assertEqual(self.stops, [signal.SIGHUP])  # twistd re-raises it

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
