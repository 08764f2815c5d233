"""Tests for incproto.workers.balance on a fake port and a Clock: the table
the workers share, and the gate that leaves connections to a less busy
worker (and takes them anyway when the others stall)."""

from __future__ import annotations

import os
from typing import List, Tuple

from twisted.internet.task import Clock

from incproto._kernel.accepting import AcceptControl
from incproto.workers.balance import (
    RETRY,
    STALL,
    BalancedAccepting,
    BalanceTable,
    slack,
)
from tests.support.fakes import FakePort


class QueuePort(FakePort):
    """A port with C{waiting} connections in its accept queue: C{doRead}
    accepts up to C{numberAccepts} of them, as tcp.Port does."""

    def __init__(self, waiting: int = 0) -> None:
        super().__init__()
        self.waiting = waiting
        self.sessionno = 0

    def doRead(self) -> None:
        taken = min(self.waiting, self.numberAccepts)
        self.waiting -= taken
        self.sessionno += taken


def worker(
    table: BalanceTable, slot: int, waiting: int = 0
) -> Tuple[QueuePort, AcceptControl, BalancedAccepting, List[int], Clock]:
    """A worker in C{slot}: its port, accept control, gate, and load (one
    number, that the test sets), on a clock of its own."""
    clock = Clock()
    port = QueuePort(waiting)
    control = AcceptControl(port, clock, perTurn=8)
    load = [0]
    gate = BalancedAccepting(table, slot, lambda: load[0], control, clock)
    control.gate = gate
    return port, control, gate, load, clock


def test_the_table_keeps_each_present_workers_load() -> None:
    table = BalanceTable.create(3)
    assert table.slots == 3 and table.least() is None
    table.publish(1, 7, 10)
    table.publish(3, 4, 5)
    assert table.least() == 4
    assert table.progress(excluding=1) == 5
    table.absent(3)
    assert table.least() == 7 and table.progress(excluding=1) == 0
    # A worker maps the same memory from the descriptor it is given.
    other = BalanceTable(os.dup(table.fileno()))
    assert other.load(1) == 7 and other.present(1) and not other.present(3)
    other.publish(2, 1, 1)
    assert table.least() == 1
    table.closeFile()
    other.closeFile()
    assert table.least() == 1  # the mapping outlives the file


def test_the_least_busy_worker_accepts_up_to_its_slack() -> None:
    table = BalanceTable.create(2)
    table.publish(2, 10, 10)
    port, control, gate, load, _ = worker(table, 1, waiting=20)
    load[0] = 9
    port.doRead()  # room: the least (9) + slack 2, less its own 9
    assert (port.sessionno, port.waiting, gate.accepted) == (2, 18, 2)
    load[0] = table_load = 80
    table.publish(2, table_load, 10)
    port.doRead()  # room 10: at most the 8 a turn AcceptControl was given
    assert port.sessionno == 10 and port.reading
    assert (control.wakeups, control.emptyWakeups) == (2, 0)
    table.closeFile()


def test_a_busier_worker_leaves_the_connection_and_looks_again() -> None:
    table = BalanceTable.create(2)
    table.publish(2, 5, 0)
    port, control, gate, load, clock = worker(table, 1, waiting=1)
    load[0] = 5 + slack(5)
    port.doRead()
    assert port.waiting == 1 and not port.reading
    assert (control.wakeups, control.emptyWakeups, gate.deferred) == (1, 1, 1)
    clock.advance(RETRY)
    assert port.reading
    # Meanwhile the other worker took it, and holds one more.
    table.publish(2, 6, 1)
    load[0] = 6
    port.doRead()
    assert port.waiting == 0 and port.sessionno == 1 and port.reading
    assert table.load(1) == 6 and gate.accepted == 1
    table.closeFile()


def test_with_the_others_stalled_a_busier_worker_takes_the_connection() -> None:
    table = BalanceTable.create(2)
    table.publish(2, 0, 0)  # present, but it never accepts (SIGSTOPped)
    port, _, gate, load, clock = worker(table, 1, waiting=3)
    load[0] = 10
    deferred_for = 0.0
    while port.waiting == 3:
        port.doRead()
        if port.waiting == 3:
            clock.advance(RETRY)
            deferred_for += RETRY
    assert STALL <= deferred_for <= STALL + 2 * RETRY
    assert gate.stalled == 1 and port.waiting == 2  # one at a time
    port.doRead()
    assert port.waiting == 1  # the others still stalled: the next at once
    table.closeFile()


def test_slack_grows_with_the_load() -> None:
    assert [slack(n) for n in (0, 16, 24, 80)] == [2, 2, 3, 10]
