# -*- test-case-name: tests.test_workers -*-
"""C{--workers N}: N processes serve one listening socket, and the parent
supervises them.

The parent binds the socket once (L{incproto.sharing}) and passes it to
each worker as descriptor 3.  All workers accept from the one kernel queue,
so a connection waits for whichever worker is free, a worker's death loses
no queued connection, and any socket the parent can get works: one it bound
(TCP, TLS, UNIX, under PROXY or not) or one that systemd passed it.
SO_REUSEPORT would give each worker a queue of its own, filled by a hash of
the client's address whether that worker is busy or dead, and cannot carry a
UNIX or systemd socket.

A worker runs L{worker_main} with the socket's family and the same options
as the parent, without C{--workers}.  It writes its log events as
JSON lines on its standard output; the parent publishes them into its own
log, marked with the worker's number, so one log (text or JSON) tells all.
A worker that dies is restarted: at once if it had run for C{threshold}
seconds, otherwise after a delay that doubles from C{minRestartDelay} up
to C{maxRestartDelay}.  Stopping the parent closes its copy of the socket,
sends each worker SIGTERM (each drains, as one process would), waits for
them all, and kills any still alive C{killTimeout} seconds later.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections import deque
from pathlib import Path
from typing import (
    Any,
    Callable,
    Deque,
    Dict,
    List,
    Optional,
    Sequence,
    Set,
    Union,
    cast,
)

from twisted.application.service import Service
from twisted.internet.defer import (
    Deferred,
    TimeoutError,
    gatherResults,
    maybeDeferred,
    succeed,
)
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import Factory, ProcessProtocol, connectionDone
from twisted.logger import Logger, eventFromJSON
from twisted.protocols.basic import LineOnlyReceiver
from twisted.python.failure import Failure

from incproto.metrics import WorkersCollector
from incproto.service import ListeningService
from incproto.sharing import BoundSocket, SharedSocketEndpoint
from incproto.signals import SignalHandling, die_with_parent

# The descriptor a worker finds the listening socket on, and those it
# reads metrics requests from and writes its answers to.
WORKER_FD = 3
METRICS_REQUESTS = 4
METRICS_REPLIES = 5
METRICS_TIMEOUT = 5.0
# A worker's program: its arguments are the socket's family, then options.
_WORKER = (
    "import sys; from incproto.workers import worker_main; worker_main(sys.argv[1:])"
)


class WorkerProcess(ProcessProtocol):
    """
    The parent's side of one worker: relays its log and reports its end.

    @ivar slot: the worker's number, from 1; a restarted worker keeps it.
    @ivar started: when it was spawned (reactor time).
    @ivar ended: fires when the process has exited.
    @ivar retired: replaced by a reload, and draining; not restarted.
    """

    def __init__(self, pool: WorkerPool, slot: int, started: float) -> None:
        self.pool = pool
        self.slot = slot
        self.started = started
        self.retired = False
        self.ended: Deferred[None] = Deferred()
        self._lines = {1: b"", 2: b"", METRICS_REPLIES: b""}
        self._asked: Deque[Deferred[Optional[str]]] = deque()

    def _split(self, fd: int, data: bytes) -> List[bytes]:
        *lines, self._lines[fd] = (self._lines[fd] + data).split(b"\n")
        return [line for line in lines if line.strip()]

    def outReceived(self, data: bytes) -> None:
        for line in self._split(1, data):
            try:
                event = eventFromJSON(line.decode("utf-8"))
            except ValueError:
                self.pool.log.info("worker {slot}: {line}", slot=self.slot, line=line)
                continue
            event.update(
                log_system=f"worker {self.slot}",
                worker=self.slot,
                worker_pid=self.pid,
            )
            self.pool.log.observer(event)

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if childFD != METRICS_REPLIES:
            super().childDataReceived(childFD, data)
            return
        for line in self._split(METRICS_REPLIES, data):
            if self._asked:
                self._asked.popleft().callback(json.loads(line)["text"])

    def ask_metrics(self) -> Deferred[Optional[str]]:
        """
        Ask the worker for its metrics; fires with them in Prometheus's text
        format, or C{None} if it exits first.
        """
        asked: Deferred[Optional[str]] = Deferred()
        self._asked.append(asked)
        assert self.transport is not None
        self.transport.writeToChild(METRICS_REQUESTS, b"metrics\n")
        return asked

    def errReceived(self, data: bytes) -> None:
        for line in self._split(2, data):
            self.pool.log.error(
                "worker {slot}: {line}",
                slot=self.slot,
                line=line.decode("utf-8", "replace"),
            )

    @property
    def pid(self) -> Optional[int]:
        """The worker's process id, while it runs."""
        return getattr(self.transport, "pid", None)

    def signal(self, name: Union[str, int]) -> None:
        """
        Send the worker a signal, unless it has exited.

        @param name: C{"TERM"}, C{"KILL"} or C{"INT"} (the names Twisted
            knows), or a signal number.
        """
        if self.transport is not None:
            try:
                self.transport.signalProcess(name)
            except ProcessExitedAlready:
                pass

    def processEnded(self, reason: Failure) -> None:
        while self._asked:
            self._asked.popleft().callback(None)
        self.pool.ended(self, reason)
        self.ended.callback(None)


class WorkerPool(Service):
    """
    Bind the C{--port} socket and keep C{count} worker processes serving it.

    @ivar workers: the running workers, by slot.
    @ivar retired: workers replaced by L{reload}, still draining.
    @ivar restarts: how many times a worker was restarted.
    @ivar socket: the shared listening socket, while the pool runs.
    """

    log = Logger()
    threshold = 5.0
    minRestartDelay = 1.0
    maxRestartDelay = 60.0

    def __init__(
        self,
        description: str,
        name: str,
        options: Sequence[str],
        count: int,
        reactor: Any,
        killTimeout: float,
        executable: str = sys.executable,
    ) -> None:
        """
        @param description: the C{--port} endpoint description to bind.
        @param name: how the port was given, for messages.
        @param options: the workers' command line options.
        @param count: how many workers to keep running.
        @param reactor: spawns processes and keeps time.
        @param killTimeout: seconds from SIGTERM to SIGKILL on stop.
        """
        self.listener = ListeningService(
            SharedSocketEndpoint(description), Factory(), name, clock=reactor
        )
        self.options = list(options)
        self.count = count
        self.reactor = reactor
        self.killTimeout = killTimeout
        self.executable = executable
        self.workers: Dict[int, WorkerProcess] = {}
        self.retired: Set[WorkerProcess] = set()
        self.restarts = 0
        self._delays: Dict[int, float] = {}
        self._pending: Dict[int, IDelayedCall] = {}

    @property
    def socket(self) -> Optional[BoundSocket]:
        port = self.listener.port
        return port if isinstance(port, BoundSocket) else None

    def privilegedStartService(self) -> None:
        """Bind (before twistd drops privileges); raise ListenError if not."""
        self.listener.privilegedStartService()
        super().privilegedStartService()

    def startService(self) -> None:
        """Bind if not yet bound, then spawn the workers."""
        if self.listener.port is None:
            self.listener.privilegedStartService()
        super().startService()
        self.log.info("starting {count} workers", count=self.count)
        for slot in range(1, self.count + 1):
            self.spawn(slot)

    def spawn(self, slot: int) -> None:
        """Start the worker for C{slot}."""
        self._pending.pop(slot, None)
        bound = self.socket
        assert bound is not None
        worker = WorkerProcess(self, slot, self.reactor.seconds())
        self.workers[slot] = worker
        package_root = str(Path(__file__).resolve().parent.parent)
        path = os.environ.get("PYTHONPATH")
        # systemd's LISTEN_* variables name the parent's descriptors only.
        env = {k: v for k, v in os.environ.items() if not k.startswith("LISTEN_")}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, path]))
        self.reactor.spawnProcess(
            worker,
            self.executable,
            [self.executable, "-c", _WORKER, bound.family, *self.options],
            env=env,
            childFDs={
                0: "w",
                1: "r",
                2: "r",
                WORKER_FD: bound.fileno(),
                METRICS_REQUESTS: "w",
                METRICS_REPLIES: "r",
            },
        )
        self.log.info("worker {slot} started (pid {pid})", slot=slot, pid=worker.pid)

    def reload(self) -> None:
        """
        A rolling restart (SIGHUP, as gunicorn does it): start a new worker
        in every slot, then SIGQUIT the old ones, which stop accepting and
        let their clients finish (see L{retire_gracefully}).  The supervisor
        keeps the socket open throughout, so no connection is refused or
        reset, and no session is cut short; the new workers run the code
        installed now.
        """
        if not self.running:
            return
        old = list(self.workers.values())
        self.log.info(
            "reloading: starting {count} new workers, then draining the old ones",
            count=len(old),
        )
        for worker in old:
            worker.retired = True
            self.retired.add(worker)
            self.spawn(worker.slot)
            worker.signal(signal.SIGQUIT)

    def ended(self, worker: WorkerProcess, reason: Failure) -> None:
        """A worker exited: restart it, with back-off, unless stopping."""
        if self.workers.get(worker.slot) is worker:
            del self.workers[worker.slot]
        how = _how_it_ended(reason)
        if worker.retired:
            self.retired.discard(worker)
            self.log.info("old worker {slot} {how}", slot=worker.slot, how=how)
            return
        if not self.running:
            self.log.info("worker {slot} {how}", slot=worker.slot, how=how)
            return
        lived = self.reactor.seconds() - worker.started
        delay = 0.0
        if lived < self.threshold:
            delay = self._delays.get(worker.slot, self.minRestartDelay)
            self._delays[worker.slot] = min(delay * 2, self.maxRestartDelay)
        else:
            self._delays.pop(worker.slot, None)
        self.restarts += 1
        self.log.warn(
            "worker {slot} {how} after {lived:.1f} s; restarting it in {delay:g} s",
            slot=worker.slot,
            how=how,
            lived=lived,
            delay=delay,
        )
        self._pending[worker.slot] = self.reactor.callLater(
            delay, self.spawn, worker.slot
        )

    def scrape(self) -> Deferred[WorkersCollector]:
        """
        Ask every running worker for its metrics (waiting at most
        C{METRICS_TIMEOUT} seconds for each) and merge them.
        """
        slots = sorted(self.workers)
        asked = [
            self.workers[slot]
            .ask_metrics()
            .addTimeout(METRICS_TIMEOUT, self.reactor)
            .addErrback(lambda _: None)
            for slot in slots
        ]

        def merge(answers: List[Optional[str]]) -> WorkersCollector:
            texts = {s: text for s, text in zip(slots, answers) if text is not None}
            return WorkersCollector(texts, len(self.workers), self.restarts)

        return gatherResults(asked).addCallback(merge)

    def stopService(self) -> Deferred[None]:
        """
        Stop accepting, then SIGTERM every worker (each drains) and wait for
        them all; SIGKILL any left after C{killTimeout} seconds.
        """
        super().stopService()
        for pending in self._pending.values():
            pending.cancel()
        self._pending.clear()
        self.listener.stopService()
        workers = [*self.workers.values(), *self.retired]
        if not workers:
            return succeed(None)
        self.log.info("stopping {count} workers", count=len(workers))
        for worker in workers:
            worker.signal("TERM")
        kill = self.reactor.callLater(self.killTimeout, self._kill)
        done = gatherResults([w.ended for w in workers])

        def stopped(_: Any) -> None:
            if kill.active():
                kill.cancel()

        return done.addCallback(stopped)

    def _kill(self) -> None:
        for worker in [*self.workers.values(), *self.retired]:
            self.log.warn(
                "worker {slot} still running {timeout:g} s after SIGTERM; killing it",
                slot=worker.slot,
                timeout=self.killTimeout,
            )
            worker.signal("KILL")


class MetricsAnswers(LineOnlyReceiver):
    """
    A worker's side of metrics: each request line gets one JSON line.  Its
    input is a pipe from the supervisor, so its end means the supervisor is
    gone: C{orphaned} is called.
    """

    delimiter = b"\n"

    def __init__(self, registry: Any, orphaned: Callable[[], None]) -> None:
        self.registry = registry
        self.orphaned = orphaned

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.orphaned()

    def lineReceived(self, line: bytes) -> None:
        from prometheus_client import generate_latest

        text = generate_latest(self.registry).decode("utf-8")
        self.sendLine(json.dumps({"text": text}).encode("utf-8"))


def _how_it_ended(reason: Failure) -> str:
    value: Any = reason.value
    if getattr(value, "signal", None):
        return f"was killed by signal {value.signal}"
    if getattr(value, "exitCode", 0):
        return f"exited with status {value.exitCode}"
    return "exited"


def worker_main(argv: Sequence[str]) -> None:
    """
    Run one worker: C{argv} is the socket's family name, then the options.
    """
    from twisted.internet import reactor
    from twisted.internet.stdio import StandardIO
    from twisted.logger import globalLogBeginner, jsonFileLogObserver
    from twisted.python import usage

    from incproto.metrics import registry_of
    from incproto.sharing import FAMILIES, adopted_endpoint
    from incproto.tap import Options, makeService

    # The parent decides when workers stop: a terminal's Ctrl-C and hangup
    # reach the whole process group, and the parent turns them into SIGTERM
    # for each (or a reload).  If the parent dies, Linux sends SIGTERM
    # (PR_SET_PDEATHSIG), and the pipe from it ends (see orphaned below).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    # A SIGTERM before the reactor runs (and installs its own handler) must
    # not kill the worker at once: it listens before then, and may have
    # accepted connections.  Stop as soon as the reactor runs instead.
    signal.signal(
        signal.SIGTERM, lambda signum, frame: reactor.callWhenRunning(reactor.stop)
    )
    die_with_parent(signal.SIGTERM)
    globalLogBeginner.beginLoggingTo(
        [jsonFileLogObserver(sys.stdout, recordSeparator="")],
        redirectStandardIO=False,
    )

    class WorkerOptions(Options):
        checkPort = False  # systemd's descriptors were the parent's

    try:
        options = WorkerOptions.parse(argv[1:])
    except usage.UsageError as e:
        sys.exit(f"incproto worker: {e}")
    endpoint = adopted_endpoint(
        reactor, options["endpoint"], WORKER_FD, FAMILIES[argv[0]]
    )
    service = makeService(options, reactor, endpoint=endpoint)
    signals = cast(SignalHandling, service.getServiceNamed("signals"))

    def orphaned() -> None:
        if not signals.stopping:
            signals.log.warn("the supervisor is gone: draining and exiting")
            stop()

    # (mypy reads the Windows signature of StandardIO.)
    cast(Any, StandardIO)(
        MetricsAnswers(registry_of(service.collector), orphaned),
        stdin=METRICS_REQUESTS,
        stdout=METRICS_REPLIES,
        reactor=reactor,
    )

    def stop() -> None:
        if not signals.stopping:
            signals.stopping = True
            reactor.stop()

    signal.signal(
        signal.SIGQUIT,
        lambda signum, frame: cast(Any, reactor).callFromThread(
            retire_gracefully, service, options["drain-timeout"], reactor, stop
        ),
    )
    service.privilegedStartService()
    service.startService()
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    reactor.run()


def retire_gracefully(
    service: Any, timeout: float, clock: Any, stop: Callable[[], None]
) -> Deferred[None]:
    """
    Retire a worker replaced by a reload (SIGQUIT from the supervisor, as
    nginx's workers take it): stop accepting, let every client finish its
    session and close (for at most C{timeout} seconds), then C{stop} as
    usual, which drains whatever is left.  A SIGTERM meanwhile stops at once.

    @param service: the worker's service, from L{incproto.tap.makeService}.
    """
    listener = service.getServiceNamed("incproto")
    d = maybeDeferred(listener.stopService)
    d.addCallback(lambda _: service.collector.factory.whenEmpty())
    d.addTimeout(timeout, clock)
    d.addErrback(lambda failure: failure.trap(TimeoutError))
    d.addCallback(lambda _: stop())
    return d
