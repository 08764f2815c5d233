# -*- test-case-name: tests.e2e.test_workers -*-
"""One worker of C{--workers}: C{python -m incproto.workers.worker FAMILY CONFIG}.

Its supervisor (L{incproto.workers.supervisor}) starts it with the shared listening
socket as descriptor C{WORKER_FD}, C{FAMILY} naming the socket's address
family (C{inet}, C{inet6} or C{unix}) and C{CONFIG} the supervisor's
L{ServerConfig} as JSON.  The worker serves the socket with
L{incproto.serving.stack.serving_stack}, writes its log events as JSON lines on
standard output (the supervisor relays them), answers metrics requests
(one line in on C{METRICS_REQUESTS}, one JSON line out on
C{METRICS_REPLIES}), takes its share of the connections and says when it
accepts (L{incproto.workers.balance}), and exits when told to, or when its
supervisor is gone.  Asked to be watched (C{WATCH_REQUEST}), it says that
it serves (C{{"ready": true}}) and sends its reactor's heartbeat
(C{{"beat": true}}, L{incproto.serving.watchdog.Heartbeat}) on the same
channel; a supervisor of an older version never asks, and gets no line it
cannot read.
"""

from __future__ import annotations

import json
import signal
import sys
from typing import TYPE_CHECKING, Any, Callable, List, Optional, Sequence, cast

from twisted.internet.defer import Deferred, TimeoutError, maybeDeferred
from twisted.internet.protocol import connectionDone
from twisted.protocols.basic import LineOnlyReceiver
from twisted.python.failure import Failure

from incproto.config import ServerConfig

if TYPE_CHECKING:
    from incproto.serving.stack import IncprotoService

# The descriptor a worker finds the listening socket on, and those it
# reads metrics requests from and writes its answers to.
WORKER_FD = 3
METRICS_REQUESTS = 4
METRICS_REPLIES = 5
# The request that asks a worker to say it serves and to send its beats.
WATCH_REQUEST = b"watch"
USAGE = "usage: python -m incproto.workers.worker inet|inet6|unix CONFIG-JSON"


class MetricsAnswers(LineOnlyReceiver):
    """
    A worker's side of its channel to the supervisor: each metrics request
    line gets one JSON line; C{WATCH_REQUEST} gets C{ready} now and a
    C{beat} line on every beat of C{heartbeat}.  Its input is a pipe from
    the supervisor, so its end means the supervisor is gone: C{orphaned} is
    called.
    """

    delimiter = b"\n"

    def __init__(
        self, registry: Any, orphaned: Callable[[], None], heartbeat: Any = None
    ) -> None:
        self.registry = registry
        self.orphaned = orphaned
        self.heartbeat = heartbeat

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """The supervisor is gone."""
        self.orphaned()

    def lineReceived(self, line: bytes) -> None:
        """Answer a request: the metrics, as of now, or being watched."""
        if line == WATCH_REQUEST:
            # Read on the reactor's first turns, once the worker listens.
            self.sendLine(b'{"ready": true}')
            if self.heartbeat is not None:
                self.heartbeat.listeners.append(self.beat)
            return
        from prometheus_client import generate_latest

        text = generate_latest(self.registry).decode("utf-8")
        self.sendLine(json.dumps({"text": text}).encode("utf-8"))

    def beat(self) -> None:
        """The reactor turned: tell the supervisor."""
        self.sendLine(b'{"beat": true}')


def parse_arguments(argv: Sequence[str]) -> tuple[int, ServerConfig]:
    """
    The socket's family (a C{socket.AF_*} number) and the configuration
    from a worker's command line.

    @raise SystemExit: with a one-line usage error for anything else.
    """
    from incproto.workers.sharing import FAMILIES

    if len(argv) != 2 or argv[0] not in FAMILIES:
        sys.exit(USAGE)
    try:
        return FAMILIES[argv[0]], ServerConfig.from_json(argv[1])
    except (ValueError, TypeError) as e:
        sys.exit(f"incproto worker: bad configuration: {e}")


def main(argv: Optional[List[str]] = None) -> None:
    """
    Run one worker until it is told to stop (or its supervisor dies).

    @param argv: the arguments after the program's name; C{sys.argv}'s by
        default.
    """
    family, config = parse_arguments(sys.argv[1:] if argv is None else argv)
    from twisted.internet import reactor
    from twisted.internet.stdio import StandardIO
    from twisted.logger import globalLogBeginner, jsonFileLogObserver

    from incproto._kernel.logpipe import protect
    from incproto._kernel.parentdeath import die_with_parent
    from incproto.serving.metrics import registry_of
    from incproto.serving.stack import serving_stack
    from incproto.workers import balance
    from incproto.workers.sharing import adopted_endpoint

    # The supervisor decides when workers stop: a terminal's Ctrl-C and
    # hangup reach the whole process group, and the supervisor turns them
    # into SIGTERM for each (or a reload).  If it dies, Linux sends SIGTERM
    # (PR_SET_PDEATHSIG), and the pipe from it ends (see orphaned below).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    # SIGUSR1 (reopen the access log) is forwarded by the supervisor, maybe
    # before this worker's reactor runs: it must not end the worker.
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    # A SIGTERM before the reactor runs (and installs its own handler) must
    # not kill the worker at once: it listens before then, and may have
    # accepted connections.  Stop as soon as the reactor runs instead.
    signal.signal(
        signal.SIGTERM, lambda signum, frame: reactor.callWhenRunning(reactor.stop)
    )
    die_with_parent(signal.SIGTERM)
    # Non-blocking: a supervisor that stops reading (SIGSTOP) costs log
    # lines, counted, never this worker's sessions.
    out = protect(sys.stdout, reactor)
    globalLogBeginner.beginLoggingTo(
        [jsonFileLogObserver(out, recordSeparator="")],
        redirectStandardIO=False,
    )
    endpoint = adopted_endpoint(reactor, config.endpoint, WORKER_FD, family)
    # A worker's SIGHUP is its supervisor's business, and so is a stall: it
    # is killed and replaced, and does not abort itself.
    service = serving_stack(config, reactor, endpoint=endpoint, hangup=None, abort=None)
    service.config = None  # its settings are the supervisor's to log, once
    signals = service.signals
    signals.quit = None  # SIGQUIT retires a worker: see below
    # Before anything is logged: the supervisor sends SIGUSR1 (reopen the
    # access log) only to a worker it has heard from.
    signals.install()
    stop = signals.stop

    def orphaned() -> None:
        if not signals.stopping:
            signals.log.warn("the supervisor is gone: draining and exiting")
            stop()

    # (mypy reads the Windows signature of StandardIO.)
    cast(Any, StandardIO)(
        MetricsAnswers(registry_of(service.collector), orphaned, service.heartbeat),
        stdin=METRICS_REQUESTS,
        stdout=METRICS_REPLIES,
        reactor=reactor,
    )
    signal.signal(
        signal.SIGQUIT,
        lambda signum, frame: cast(Any, reactor).callFromThread(
            retire_gracefully, service, config.drain_timeout, reactor, stop
        ),
    )
    service.privilegedStartService()
    service.startService()
    # Once the reactor runs (and accepts): take a share of the connections,
    # and tell the supervisor.
    reactor.callWhenRunning(balance.join, service, reactor)
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    reactor.run()


def retire_gracefully(
    service: IncprotoService, timeout: float, clock: Any, stop: Callable[[], None]
) -> Deferred[None]:
    """
    Retire a worker replaced by a reload (SIGQUIT from the supervisor, as
    nginx's workers take it): stop accepting, let every client finish its
    session and close (for at most C{timeout} seconds), then C{stop} as
    usual, which drains whatever is left.  A SIGTERM meanwhile stops at once.

    @param service: the worker's service, from
        L{incproto.serving.stack.serving_stack}.
    """
    d: Deferred[Any] = maybeDeferred(service.listener.stopService)
    d.addCallback(lambda _: service.factory.whenEmpty())
    d.addTimeout(timeout, clock)
    d.addErrback(lambda failure: failure.trap(TimeoutError))
    d.addCallback(lambda _: stop())
    return d


if __name__ == "__main__":
    main()
