# -*- test-case-name: tests.unit.test_balance,tests.e2e.test_balance -*-
"""Every worker of C{--workers} takes its share of the connections: a worker
that holds more than the least busy one leaves new connections to it.

The workers share one listening socket and one accept queue (see
L{incproto.workers.supervisor} for why not C{SO_REUSEPORT}).  Each new
connection wakes every idle worker; left alone, the first whose reactor
turns takes it, and long-lived connections pile up on whichever worker
was idle at the instant they arrived (86/63/50/1 of 200 over four
workers).  Here the workers of one generation share a small table
(L{BalanceTable}, a memory file their supervisor creates and passes as
descriptor L{TABLE_FD}) of the connections each holds.  At each wake-up a
worker (L{BalancedAccepting}, the gate of its L{AcceptControl}) accepts
only while it holds fewer than the least busy worker plus a slack (2, or
an eighth of the least busy one's count), and at most that many; above
it, it stops accepting for L{RETRY} seconds, leaving the connection to a
less busy worker.  If no other worker accepted anything for L{STALL}
seconds (it is stopped, stuck, or gone), it accepts anyway: a busy or dead
worker never holds a connection up for longer.

A worker also tells its supervisor when it accepts, by writing a line on
descriptor L{READY_FD}: a reload retires an old worker only then.
"""

from __future__ import annotations

import mmap
import os
import tempfile
from typing import Any, Callable, Mapping, Optional

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from incproto._kernel.accepting import AcceptControl
from incproto._kernel.timers import cancel

# The descriptors a worker writes "ready" on once it accepts, and finds its
# generation's table on; the variable naming its generation and slot.
READY_FD = 7
TABLE_FD = 8
WORKER_ENV = "INCPROTO_WORKER"
# Seconds a worker above its share leaves a connection to the others, and
# with no other worker accepting, after which it takes it anyway.
RETRY = 0.005
STALL = 0.05
# The reason AcceptControl is paused for.
BALANCE = "balance"
# Per slot: whether a worker serves it now, the connections it holds, and
# the connections it accepted in total.
_PRESENT, _LOAD, _ACCEPTED = range(3)
_FIELDS = 3
_WORD = 8


class BalanceTable:
    """
    The connections each worker of one generation holds, in memory shared
    by the workers and their supervisor.  Slots are numbered from 1.

    Each entry is a machine word written in one store; a reader may see a
    worker's older count, which costs a balancing decision, never a
    connection.
    """

    def __init__(self, fd: int) -> None:
        """
        @param fd: a file (of L{size} bytes for some number of slots) to
            map; this table closes it.
        """
        self.fd = fd
        size = os.fstat(fd).st_size
        self.slots = size // (_FIELDS * _WORD)
        self._map = mmap.mmap(fd, size)
        self._words = memoryview(self._map).cast("q")

    @staticmethod
    def size(slots: int) -> int:
        """The bytes of a table of C{slots} slots."""
        return slots * _FIELDS * _WORD

    @classmethod
    def create(cls, slots: int) -> BalanceTable:
        """A new table of C{slots} absent workers, in a memory file."""
        if hasattr(os, "memfd_create"):
            fd = os.memfd_create("incproto-balance")
        else:  # pragma: no cover - Linux has memfd_create
            with tempfile.TemporaryFile() as unnamed:
                fd = os.dup(unnamed.fileno())
        os.ftruncate(fd, cls.size(slots))
        return cls(fd)

    def fileno(self) -> int:
        """The memory file's descriptor (a worker gets it as L{TABLE_FD})."""
        return self.fd

    def _at(self, slot: int, field: int) -> int:
        if not 1 <= slot <= self.slots:
            raise IndexError(f"slot {slot} of {self.slots}")
        return (slot - 1) * _FIELDS + field

    def publish(self, slot: int, load: int, accepted: int) -> None:
        """The worker in C{slot} holds C{load} connections now, and has
        accepted C{accepted} in total."""
        self._words[self._at(slot, _LOAD)] = load
        self._words[self._at(slot, _ACCEPTED)] = accepted
        self._words[self._at(slot, _PRESENT)] = 1

    def absent(self, slot: int) -> None:
        """No worker accepts in C{slot} (it exited, or retires)."""
        self._words[self._at(slot, _PRESENT)] = 0

    def present(self, slot: int) -> bool:
        """Whether a worker accepts in C{slot}."""
        return bool(self._words[self._at(slot, _PRESENT)])

    def load(self, slot: int) -> int:
        """The connections the worker in C{slot} last said it holds."""
        return int(self._words[self._at(slot, _LOAD)])

    def least(self) -> Optional[int]:
        """The least busy present worker's load, or C{None} if none is."""
        loads = [self.load(s) for s in range(1, self.slots + 1) if self.present(s)]
        return min(loads) if loads else None

    def progress(self, excluding: int) -> int:
        """The connections the present workers but C{excluding}'s accepted."""
        return sum(
            self._words[self._at(s, _ACCEPTED)]
            for s in range(1, self.slots + 1)
            if s != excluding and self.present(s)
        )

    def closeFile(self) -> None:
        """Close the file (no worker will be started with it again); the
        mapping stays, for as long as this object."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def slack(least: int) -> int:
    """How many connections more than the least busy worker's a worker may
    hold and still accept: 2, or an eighth of the least busy one's."""
    return max(2, least // 8)


class BalancedAccepting:
    """
    The gate (L{incproto._kernel.accepting.IAcceptGate}) of one worker's
    listening port: accept only while holding less than the least busy
    worker plus L{slack}.

    @ivar accepted: connections this worker accepted, in total.
    @ivar deferred: wake-ups that left the connection to another worker.
    @ivar stalled: connections accepted above its share because no other
        worker accepted for C{stall} seconds.
    """

    def __init__(
        self,
        table: BalanceTable,
        slot: int,
        load: Callable[[], int],
        accepting: AcceptControl,
        clock: IReactorTime,
        retry: float = RETRY,
        stall: float = STALL,
    ) -> None:
        """
        @param load: the connections this worker holds now.
        @param accepting: the port's accept control, paused for C{retry}
            seconds when a wake-up leaves the connection to another worker.
        """
        self.table = table
        self.slot = slot
        self.load = load
        self.accepting = accepting
        self.clock = clock
        self.retry = retry
        self.stall = stall
        self.accepted = 0
        self.deferred = 0
        self.stalled = 0
        self._since: Optional[float] = None
        self._progress = 0
        self._timer: Optional[IDelayedCall] = None
        self.publish()

    def publish(self) -> None:
        """Write this worker's load in the table."""
        self.table.publish(self.slot, self.load(), self.accepted)

    def allowance(self, perTurn: int) -> int:
        """How many connections to accept now, at most C{perTurn}."""
        mine = self.load()
        self.table.publish(self.slot, mine, self.accepted)
        least = self.table.least()
        least = mine if least is None else least
        room = least + slack(least) - mine
        if room > 0:
            self._since = None
            return min(perTurn, room)
        progress = self.table.progress(self.slot)
        now = self.clock.seconds()
        if self._since is None or progress != self._progress:
            self._since, self._progress = now, progress
        elif now - self._since >= self.stall:
            self.stalled += 1
            return 1
        self.deferred += 1
        self.accepting.pause(BALANCE)
        cancel(self._timer)
        self._timer = self.clock.callLater(self.retry, self.accepting.resume, BALANCE)
        return 0

    def turned(self, accepted: int) -> None:
        """Count what a wake-up accepted, and publish the new load."""
        self.accepted += accepted
        self.publish()


def held_connections(service: Any) -> Callable[[], int]:
    """
    How many connections a worker's service (from
    L{incproto.serving.stack.serving_stack}) holds: served, queued by the
    limit, and in their preamble (TLS handshake, PROXY header).
    """
    factory, limit = service.factory, service.limit
    preambles = getattr(service.collector, "preambles", None)

    def held() -> int:
        count = len(factory.connections)
        if limit is not None:
            count += limit.held
        if preambles is not None:
            count += len(preambles)
        return count

    return held


def join(
    service: Any, clock: IReactorTime, environ: Mapping[str, str] = os.environ
) -> Optional[BalancedAccepting]:
    """
    In a worker whose supervisor set L{WORKER_ENV}, once its service
    listens: balance its accepting with its generation's other workers,
    and tell the supervisor it accepts.

    @return: the gate, or C{None} if not under a supervisor (or the port is
        not one whose accepting can be controlled).
    """
    label = environ.get(WORKER_ENV)
    if label is None:
        return None
    slot = int(label.rsplit(".", 1)[-1])
    gate = None
    accepting = service.listener.accepting
    if accepting is not None and accepting.controls:
        table = BalanceTable(TABLE_FD)
        gate = BalancedAccepting(
            table, slot, held_connections(service), accepting, clock
        )
        accepting.gate = gate
    os.write(READY_FD, b"ready\n")
    os.close(READY_FD)
    return gate
