# -*- test-case-name: tests.unit.test_supervisor,tests.integration.test_supervisor -*-
"""L{WorkerProcess}: the supervisor's side of one C{--workers} worker.

It relays the worker's log (JSON lines on its standard output, published
into the supervisor's log marked C{[worker GENERATION.SLOT]}), hears on the
metrics channel when the worker serves, its heartbeats and its metrics,
signals it, and reports to its L{Supervision} (the supervisor's
L{incproto.workers.supervisor.WorkerPool}).
"""

from __future__ import annotations

import json
import signal
from collections import deque
from string import Formatter
from typing import Any, Deque, Dict, List, Optional, Protocol, Union

from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger, eventFromJSON
from twisted.python.failure import Failure

from incproto.workers.balance import READY_FD, BalanceTable
from incproto.workers.worker import METRICS_REPLIES, METRICS_REQUESTS, WATCH_REQUEST


class Supervision(Protocol):
    """What a L{WorkerProcess} reports to."""

    log: Logger

    def now(self) -> float:
        """The time, for heartbeats (monotonic)."""

    def ready(self, worker: WorkerProcess) -> None:
        """C{worker} says it accepts connections."""

    def ended(self, worker: WorkerProcess, reason: Failure) -> None:
        """C{worker} exited, as C{reason} says."""


class WorkerProcess(ProcessProtocol):
    """
    The parent's side of one worker: relays its log, hears its heartbeat
    and reports its end.

    @ivar slot: the worker's number, from 1; a restarted worker keeps it.
    @ivar started: when it was spawned (reactor time).
    @ivar generation: 1 for the first workers, one more for each reload.
    @ivar table: its generation's L{BalanceTable}, if any.
    @ivar ended: fires when the process has exited.
    @ivar ready: whether it has said it serves.
    @ivar spawnedAt: when it was spawned (the pool's C{now()} time).
    @ivar lastBeat: when it was last heard from (the pool's C{now()}
        time), once it serves.
    @ivar stalled: whether it was killed for a stale heartbeat.
    """

    def __init__(
        self,
        pool: Supervision,
        slot: int,
        started: float,
        generation: int = 1,
        table: Optional[BalanceTable] = None,
    ) -> None:
        self.pool = pool
        self.slot = slot
        self.started = started
        self.generation = generation
        self.table = table
        self.ended: Deferred[None] = Deferred()
        self.ready = False
        self.spawnedAt = pool.now()
        self.lastBeat: Optional[float] = None
        self.stalled = False
        self._lines = {1: b"", 2: b"", METRICS_REPLIES: b""}
        self._asked: Deque[Deferred[Optional[str]]] = deque()
        # Whether it has logged (so handles SIGUSR1), and owes a reopen.
        self.heard = self.reopenOwed = False

    @property
    def label(self) -> str:
        """How the log names it: C{GENERATION.SLOT}."""
        return f"{self.generation}.{self.slot}"

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
                self.pool.log.info("worker {w}: {line}", w=self.label, line=line)
                continue
            _reapply_format_specs(event)
            event.update(
                log_system=f"worker {self.label}",
                worker=self.slot,
                worker_generation=self.generation,
                worker_pid=self.pid,
            )
            self.pool.log.observer(event)

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if childFD == READY_FD:
            self.pool.ready(self)
            return
        if childFD != METRICS_REPLIES:
            super().childDataReceived(childFD, data)
            return
        for line in self._split(METRICS_REPLIES, data):
            message = json.loads(line)
            if message.get("ready"):
                self.ready = True
            self.lastBeat = self.pool.now()  # any message shows it turns
            if "text" in message and self._asked:
                self._asked.popleft().callback(message["text"])

    def watch(self) -> None:
        """Ask the worker to say when it serves, and to send its beats."""
        assert self.transport is not None
        self.transport.writeToChild(METRICS_REQUESTS, WATCH_REQUEST + b"\n")

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
                "worker {w}: {line}",
                w=self.label,
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
