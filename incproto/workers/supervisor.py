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
UNIX or systemd socket.  The workers of one generation share out the
connections themselves (L{incproto.workers.balance}): one holding more than
the least busy one leaves new connections to it.

A worker runs C{python -m incproto.workers.worker} (L{incproto.workers.worker}) with the
socket's family and the parent's L{ServerConfig} (less C{workers} and
C{metrics}), as JSON.  It writes its log events as
JSON lines on its standard output; the parent publishes them into its own
log, marked with the worker's generation and number (C{[worker 2.1]}: the
first worker of the second generation, started by the first reload), so
one log (text or JSON) tells all.
The supervisor asks each worker, on the metrics channel, to report when it
serves (C{ready}) and, under C{--watchdog}, to send a heartbeat from its
reactor (L{incproto.serving.watchdog.Heartbeat}); a worker whose last beat
is older than C{--watchdog} seconds (a handler that never returns on its
reactor, a SIGSTOP) is killed (SIGKILL) and replaced, in one log line, and
counted as I{stalled}.  A worker that dies is restarted: at once if it had
served (as gunicorn does), otherwise, a boot failure, after a delay that
doubles from C{minRestartDelay} up to C{maxRestartDelay}.  Stopping the
parent closes its copy of the socket,
sends each worker SIGTERM (each drains, as one process would), waits for
them all, and kills any still alive C{killTimeout} seconds later.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections import deque
from typing import (
    Any,
    Callable,
    Deque,
    Dict,
    List,
    Optional,
    Set,
)

from prometheus_client import ProcessCollector
from twisted.application.service import Service
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Factory
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from incproto._kernel.logpipe import dropped_lines
from incproto._kernel.reactors import global_reactor
from incproto._kernel.sdnotify import NOTIFY_VARIABLES, SystemdNotifier
from incproto._kernel.words import counted
from incproto.config import ServerConfig
from incproto.serving.health import supervisor_readiness
from incproto.serving.service import ListeningService
from incproto.serving.signals import SignalHandling
from incproto.serving.stack import IncprotoService
from incproto.serving.watchdog import Heartbeat, abort_stalled, beat_interval
from incproto.serving.web import metrics_listener
from incproto.workers.balance import READY_FD, TABLE_FD, WORKER_ENV, BalanceTable
from incproto.workers.metrics import WorkersCollector, workers_metrics_site
from incproto.workers.process import WorkerProcess
from incproto.workers.sharing import BoundSocket, SharedSocketEndpoint
from incproto.workers.worker import (
    METRICS_REPLIES,
    METRICS_REQUESTS,
    WORKER_FD,
)

# A scrape waits this long for the workers; one that has not answered by
# then is left out (incproto_worker_up 0).
METRICS_TIMEOUT = 2.0
# Seconds from SIGTERM to SIGKILL beyond the workers' own drain timeout.
KILL_GRACE = 5.0
# Under --watchdog, seconds a new worker may take to start serving (import,
# listen, turn its reactor once) before it counts as stalled.
BOOT_TIMEOUT = 60.0


def supervise(
    config: ServerConfig, reactor: Optional[IReactorTime] = None
) -> IncprotoService:
    """
    Build the service of C{--workers}: bind C{config.endpoint}, keep
    C{config.workers} workers serving it, serve their merged metrics on
    C{config.metrics}, and make SIGHUP a rolling restart.  Under
    C{--watchdog} the supervisor's own reactor is watched as one process's
    is (L{incproto.serving.watchdog}).

    @param reactor: the global reactor by default.
    """
    if reactor is None:
        reactor = global_reactor()
    service = IncprotoService(config.drain_timeout, reactor)
    if config.watchdog is not None:
        service.heartbeat = Heartbeat(config.watchdog, reactor, abort_stalled)
        service.heartbeat.setServiceParent(service)
    service.config = config
    pool = WorkerPool(config, reactor)
    pool.setServiceParent(service)
    if config.metrics is not None:
        site = workers_metrics_site(pool.scrape, reactor, supervisor_readiness(pool))
        # Stopped last: /healthz answers 503 while the workers drain.
        service.addServiceStoppedLast(metrics_listener(reactor, config.metrics, site))
    SignalHandling(reactor, pool.reload, pool.reopen).setServiceParent(service)
    SystemdNotifier(reactor).setServiceParent(service)  # ready once bound
    return service


class WorkerPool(Service):
    """
    Bind the C{--port} socket and keep C{count} worker processes serving it.

    @ivar workers: the running workers, by slot.
    @ivar replacing: workers of an older generation, by slot, that accept
        until the slot's new worker does.
    @ivar retired: workers replaced by L{reload}, still draining.
    @ivar generation: the running workers' generation: 1, and one more for
        each reload.
    @ivar table: the running generation's L{BalanceTable}, while running.
    @ivar restarts: how many times a worker was restarted.
    @ivar replaced: workers replaced, by reason: C{stalled} (killed for a
        stale heartbeat) or C{crashed} (any other death).
    @ivar watchdog: the seconds a worker's heartbeat may be late before it
        is killed, or C{None}.
    @ivar now: the monotonic clock heartbeats are timed by.
    @ivar socket: the shared listening socket, while the pool runs.
    @ivar processMetrics: the supervisor's own CPU, memory and open files,
        for its metrics.
    """

    name = "workers"
    log = Logger()
    # New workers a reload starts at once: each competes for the cores with
    # the workers serving meanwhile.
    startingAtOnce = max(1, (os.cpu_count() or 1) // 4)
    minRestartDelay = 1.0
    maxRestartDelay = 60.0

    def __init__(
        self,
        config: ServerConfig,
        reactor: Any,
        executable: str = sys.executable,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        """
        @param config: what to serve: C{config.endpoint} is bound here,
            C{config.workers} workers serve it, each with
            C{config.for_worker()}, and any left C{KILL_GRACE} seconds
            after its C{drain_timeout} is killed.
        @param reactor: spawns processes and keeps time.
        @param executable: the Python that runs the workers.
        @param now: a monotonic clock (a test's C{Clock.seconds}).
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
        self.replacing: Dict[int, List[WorkerProcess]] = {}
        self._toReplace: Deque[int] = deque()
        self.retired: Set[WorkerProcess] = set()
        self.generation = 1
        self.table: Optional[BalanceTable] = None
        self.restarts = 0
        self.replaced = {"crashed": 0, "stalled": 0}
        self.watchdog = config.watchdog
        self.now = now
        self.processMetrics = ProcessCollector(registry=None)
        self._delays: Dict[int, float] = {}
        self._pending: Dict[int, IDelayedCall] = {}
        self._watching: Optional[LoopingCall] = None
        self._lastCheck: Optional[float] = None

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
        self.table = BalanceTable.create(self.count)
        self.log.info(
            "starting {workers}",
            count=self.count,
            workers=counted(self.count, "worker"),
        )
        for slot in range(1, self.count + 1):
            self.spawn(slot)
        if self.watchdog is not None:
            self._watching = LoopingCall(self.check)
            self._watching.clock = self.reactor
            self._watching.start(beat_interval(self.watchdog), now=False)

    def spawn(self, slot: int) -> None:
        """Start the worker for C{slot}."""
        self._pending.pop(slot, None)
        bound = self.socket
        assert bound is not None
        assert self.table is not None
        worker = WorkerProcess(
            self, slot, self.reactor.seconds(), self.generation, self.table
        )
        self.workers[slot] = worker
        # systemd's LISTEN_* variables name the parent's descriptors only,
        # and only the parent notifies it (NotifyAccess=main).
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("LISTEN_") and k not in NOTIFY_VARIABLES
        }
        env[WORKER_ENV] = worker.label
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
                READY_FD: "r",
                TABLE_FD: self.table.fileno(),
            },
        )
        worker.watch()
        self.log.info("worker {w} started (pid {pid})", w=worker.label, pid=worker.pid)

    def reload(self) -> None:
        """
        A rolling restart (SIGHUP): start a new generation of workers, a
        few slots at a time (L{startingAtOnce}), and SIGQUIT each old worker
        once its slot's new one accepts (L{ready}), which then starts the
        next slot's; the old worker stops accepting and lets its clients
        finish (see L{retire_gracefully}).  The supervisor keeps the socket
        open throughout and some worker accepts at every moment, so no
        connection is refused, reset or kept waiting, and no session is
        cut short; the new workers run the code installed now.  A new
        worker that never accepts (it fails to start) leaves the old ones
        serving.
        """
        if not self.running:
            return
        old = [self.workers[slot] for slot in sorted(self.workers)]
        self.generation += 1
        if self.table is not None:
            self.table.closeFile()
        self.table = BalanceTable.create(self.count)
        self.log.info(
            "reloading: starting {workers} of generation {generation}, "
            "{step} at a time, each old one draining once its successor accepts",
            count=len(old),
            workers=counted(len(old), "worker"),
            generation=self.generation,
            step=self.startingAtOnce,
        )
        for worker in old:
            self.replacing.setdefault(worker.slot, []).append(worker)
        self._toReplace = deque(worker.slot for worker in old)
        for _ in range(self.startingAtOnce):
            self._replaceNext()

    def _replaceNext(self) -> None:
        if self._toReplace and self.running:
            self.spawn(self._toReplace.popleft())

    def ready(self, worker: WorkerProcess) -> None:
        """
        C{worker} accepts: retire the older workers of its slot, and
        start the next slot's new worker of a reload.
        """
        if self.workers.get(worker.slot) is not worker:
            return
        if worker.slot not in self.replacing:
            return  # not a reload's
        for old in self.replacing.pop(worker.slot):
            if old.table is not None:
                old.table.absent(old.slot)
            self.retired.add(old)
            # A worker that has not logged yet may not handle SIGQUIT yet,
            # whose default action dumps core; SIGTERM's only ends it.
            old.signal(signal.SIGQUIT if old.heard else signal.SIGTERM)
        self._replaceNext()

    def late(self, worker: WorkerProcess) -> Optional[float]:
        """
        Seconds since C{worker} was last heard from, if more than
        C{watchdog} (or, before it serves, since it was spawned, if more
        than C{BOOT_TIMEOUT}); C{None} while it is on time, or not watched.
        """
        if self.watchdog is None:
            return None
        if worker.lastBeat is None:
            lag = self.now() - worker.spawnedAt
            return lag if lag > max(BOOT_TIMEOUT, self.watchdog) else None
        lag = self.now() - worker.lastBeat
        return lag if lag > self.watchdog else None

    def live(self) -> List[WorkerProcess]:
        """The running workers not known to be stalled."""
        return [
            w for w in self.workers.values() if not w.stalled and self.late(w) is None
        ]

    def check(self) -> None:
        """
        Kill every worker whose heartbeat is late (it is then replaced).
        A check that comes late (the supervisor itself was stopped or
        starved) decides nothing: its workers' beats may still wait unread
        in their pipes, which the reactor reads after its timers.
        """
        now, last = self.now(), self._lastCheck
        self._lastCheck = now
        assert self.watchdog is not None
        if last is not None and now - last > 2 * beat_interval(self.watchdog):
            return
        replacing = [w for ws in self.replacing.values() for w in ws]
        for worker in [*self.workers.values(), *replacing, *self.retired]:
            lag = self.late(worker)
            if lag is None or worker.stalled:
                continue
            worker.stalled = True
            self.log.warn(
                "{which} {w} (pid {pid}) has not answered for {lag:.1f} s "
                "(--watchdog {limit:g}): its reactor is stuck or stopped; "
                "killing it (SIGKILL){then}",
                which="worker" if worker in self.workers.values() else "old worker",
                w=worker.label,
                pid=worker.pid,
                lag=lag,
                limit=self.watchdog,
                then=" and starting a new one" if worker.slot in self.workers else "",
            )
            worker.signal("KILL")

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
        """
        A worker exited: restart it unless stopping, at once if it had
        served, otherwise with back-off.
        """
        if self.workers.get(worker.slot) is worker:
            del self.workers[worker.slot]
        if worker.table is not None:
            worker.table.absent(worker.slot)
        how = _how_it_ended(reason)
        replacing = self.replacing.get(worker.slot, [])
        if worker in replacing:
            replacing.remove(worker)
            self.retired.add(worker)
            if worker.slot in self._toReplace and self.running:
                self._toReplace.remove(worker.slot)  # its successor, now
                self.spawn(worker.slot)
        if worker in self.retired:
            self.retired.remove(worker)
            self.log.info("old worker {w} {how}", w=worker.label, how=how)
            return
        if not self.running:
            self.log.info("worker {w} {how}", w=worker.label, how=how)
            return
        lived = self.reactor.seconds() - worker.started
        delay = 0.0
        if worker.ready:
            self._delays.pop(worker.slot, None)
        else:  # it failed before it ever served: back off
            delay = self._delays.get(worker.slot, self.minRestartDelay)
            self._delays[worker.slot] = min(delay * 2, self.maxRestartDelay)
        self.restarts += 1
        self.replaced["stalled" if worker.stalled else "crashed"] += 1
        self.log.warn(
            "worker {w} {how} after {lived:.1f} s; restarting it in {delay:g} s",
            w=worker.label,
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
        C{METRICS_TIMEOUT} seconds for them) and merge them; a worker that
        has not answered by then is marked missing.
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
                texts,
                len(self.workers),
                self.restarts,
                range(1, self.count + 1),
                self.replaced,
                self.processMetrics,
                dropped_lines(),
            )

        return gatherResults(asked).addCallback(merge)

    def stopService(self) -> Deferred[None]:
        """
        Stop accepting, then SIGTERM every worker (each drains) and wait for
        them all; SIGKILL any left after C{killTimeout} seconds.
        """
        super().stopService()
        if self._watching is not None and self._watching.running:
            self._watching.stop()
        for pending in self._pending.values():
            pending.cancel()
        self._pending.clear()
        if self.table is not None:
            self.table.closeFile()
        self.listener.stopService()
        workers = list(dict.fromkeys([*self.workers.values(), *self._old()]))
        if not workers:
            return succeed(None)
        self.log.info(
            "stopping {workers}",
            count=len(workers),
            workers=counted(len(workers), "worker"),
        )
        for worker in workers:
            worker.signal("TERM")
        kill = self.reactor.callLater(self.killTimeout, self._kill)
        done = gatherResults([w.ended for w in workers])

        def stopped(_: Any) -> None:
            if kill.active():
                kill.cancel()

        return done.addCallback(stopped)

    def _old(self) -> List[WorkerProcess]:
        """Workers of older generations, accepting or draining."""
        return [*self.retired, *(w for ws in self.replacing.values() for w in ws)]

    def _kill(self) -> None:
        for worker in dict.fromkeys([*self.workers.values(), *self._old()]):
            self.log.warn(
                "worker {w} still running {timeout:g} s after SIGTERM; killing it",
                w=worker.label,
                timeout=self.killTimeout,
            )
            worker.signal("KILL")


def _how_it_ended(reason: Failure) -> str:
    value: Any = reason.value
    if getattr(value, "signal", None):
        return f"was killed by signal {value.signal}"
    if getattr(value, "exitCode", 0):
        return f"exited with status {value.exitCode}"
    return "exited"
