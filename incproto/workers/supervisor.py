# -*- test-case-name: tests.unit.test_supervisor,tests.integration.test_supervisor -*-
"""C{--workers N}: N processes serve one listening socket, and this one,
their supervisor, keeps them running.

The parent binds the socket once (L{incproto.workers.sharing}) and passes it to
each worker as descriptor 3.  All workers accept from the one kernel queue,
so a connection waits for whichever worker is free, a worker's death loses
no queued connection, and any socket the parent can get works: one it bound
(TCP, TLS, UNIX, under PROXY or not) or one that systemd passed it.
SO_REUSEPORT would give each worker a queue of its own, filled by a hash of
the client's address whether that worker is busy or dead, and cannot carry a
UNIX or systemd socket.

A worker runs C{python -m incproto.workers.worker} (L{incproto.workers.worker}) with the
socket's family and the parent's L{ServerConfig} (less C{workers} and
C{metrics}), as JSON.  It writes its log events as
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
from string import Formatter
from typing import (
    Any,
    Deque,
    Dict,
    List,
    Optional,
    Set,
    Union,
)

from twisted.application.service import Service
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Factory, ProcessProtocol
from twisted.logger import Logger, eventFromJSON
from twisted.python.failure import Failure

from incproto._kernel.logpipe import dropped_lines
from incproto._kernel.reactors import global_reactor
from incproto.config import ServerConfig
from incproto.serving.health import supervisor_readiness
from incproto.serving.service import ListeningService
from incproto.serving.signals import SignalHandling
from incproto.serving.stack import IncprotoService
from incproto.serving.web import metrics_listener
from incproto.workers.metrics import WorkersCollector, workers_metrics_site
from incproto.workers.sharing import BoundSocket, SharedSocketEndpoint
from incproto.workers.worker import METRICS_REPLIES, METRICS_REQUESTS, WORKER_FD

METRICS_TIMEOUT = 5.0
# Seconds from SIGTERM to SIGKILL beyond the workers' own drain timeout.
KILL_GRACE = 5.0


def supervise(
    config: ServerConfig, reactor: Optional[IReactorTime] = None
) -> IncprotoService:
    """
    Build the service of C{--workers}: bind C{config.endpoint}, keep
    C{config.workers} workers serving it, serve their merged metrics on
    C{config.metrics}, and make SIGHUP a rolling restart.

    @param reactor: the global reactor by default.
    """
    if reactor is None:
        reactor = global_reactor()
    service = IncprotoService(config.drain_timeout, reactor)
    pool = WorkerPool(config, reactor)
    pool.setServiceParent(service)
    if config.metrics is not None:
        site = workers_metrics_site(pool.scrape, reactor, supervisor_readiness(pool))
        # Stopped last: /healthz answers 503 while the workers drain.
        service.addServiceStoppedLast(metrics_listener(reactor, config.metrics, site))
    SignalHandling(reactor, pool.reload, pool.reopen).setServiceParent(service)
    return service


class WorkerProcess(ProcessProtocol):
    """
    The parent's side of one worker: relays its log and reports its end.

    @ivar slot: the worker's number, from 1; a restarted worker keeps it.
    @ivar started: when it was spawned (reactor time).
    @ivar ended: fires when the process has exited.
    """

    def __init__(self, pool: WorkerPool, slot: int, started: float) -> None:
        self.pool = pool
        self.slot = slot
        self.started = started
        self.ended: Deferred[None] = Deferred()
        self._lines = {1: b"", 2: b"", METRICS_REPLIES: b""}
        self._asked: Deque[Deferred[Optional[str]]] = deque()
        # Whether it has logged (so handles SIGUSR1), and owes a reopen.
        self.heard = self.reopenOwed = False

    def _split(self, fd: int, data: bytes) -> List[bytes]:
        *lines, self._lines[fd] = (self._lines[fd] + data).split(b"\n")
        return [line for line in lines if line.strip()]

    def outReceived(self, data: bytes) -> None:
        self.heard = True
        if self.reopenOwed:
            self.reopenOwed = False
            self.signal(signal.SIGUSR1)
        for line in self._split(1, data):
            try:
                event = eventFromJSON(line.decode("utf-8"))
            except ValueError:
                self.pool.log.info("worker {slot}: {line}", slot=self.slot, line=line)
                continue
            _reapply_format_specs(event)
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

    name = "workers"
    log = Logger()
    threshold = 5.0
    minRestartDelay = 1.0
    maxRestartDelay = 60.0

    def __init__(
        self, config: ServerConfig, reactor: Any, executable: str = sys.executable
    ) -> None:
        """
        @param config: what to serve: C{config.endpoint} is bound here,
            C{config.workers} workers serve it, each with
            C{config.for_worker()}, and any left C{KILL_GRACE} seconds
            after its C{drain_timeout} is killed.
        @param reactor: spawns processes and keeps time.
        @param executable: the Python that runs the workers.
        """
        self.listener = ListeningService(
            SharedSocketEndpoint(config.endpoint),
            Factory(),
            config.port,
            clock=reactor,
        )
        self.config = config.for_worker()
        self.count = config.workers or 1
        self.reactor = reactor
        self.killTimeout = config.drain_timeout + KILL_GRACE
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
        # systemd's LISTEN_* variables name the parent's descriptors only.
        env = {k: v for k, v in os.environ.items() if not k.startswith("LISTEN_")}
        self.reactor.spawnProcess(
            worker,
            self.executable,
            [
                self.executable,
                "-m",
                "incproto.workers.worker",
                bound.family,
                self.config.to_json(),
            ],
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
            self.retired.add(worker)
            self.spawn(worker.slot)
            worker.signal(signal.SIGQUIT)

    def reopen(self) -> None:
        """
        Have every worker reopen its access log file (SIGUSR1); one that has
        not logged yet (so may not handle SIGUSR1 yet) gets it when it does.
        """
        for worker in [*self.workers.values(), *self.retired]:
            if worker.heard:
                worker.signal(signal.SIGUSR1)
            else:
                worker.reopenOwed = True

    def ended(self, worker: WorkerProcess, reason: Failure) -> None:
        """A worker exited: restart it, with back-off, unless stopping."""
        if self.workers.get(worker.slot) is worker:
            del self.workers[worker.slot]
        how = _how_it_ended(reason)
        if worker in self.retired:
            self.retired.remove(worker)
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
            return WorkersCollector(
                texts, len(self.workers), self.restarts, dropped_lines()
            )

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


def _reapply_format_specs(event: Dict[str, Any]) -> None:
    """
    Format again the number fields of C{event}'s format that have a format
    spec: Twisted's JSON form of an event keeps each field's C{str()} for
    formatting and drops the spec, so C{after {duration:.3f}s} would
    relay as C{after 0.0009124279022216797s}.
    """
    flattened = event.get("log_flattened")
    if not isinstance(flattened, dict):
        return
    for _, field, spec, conversion in Formatter().parse(event.get("log_format") or ""):
        value = event.get(field) if field else None
        if spec and not conversion and isinstance(value, (int, float)):
            flattened[f"{field}!s:{spec}"] = format(value, spec)


def _how_it_ended(reason: Failure) -> str:
    value: Any = reason.value
    if getattr(value, "signal", None):
        return f"was killed by signal {value.signal}"
    if getattr(value, "exitCode", 0):
        return f"exited with status {value.exitCode}"
    return "exited"
