"""Tests for incproto._kernel.words, and the log lines that count in words."""

from __future__ import annotations

from typing import Any, Dict, List

from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher

from incproto import IncrementFactory
from incproto._kernel.words import counted
from incproto.serving.service import DrainingService
from tests.support.fakes import connect_to


def test_counted() -> None:
    assert counted(0, "connection") == "0 connections"
    assert counted(1, "connection") == "1 connection"
    assert counted(2, "byte") == "2 bytes"
    assert counted(1, "process", "processes") == "1 process"
    assert counted(3, "process", "processes") == "3 processes"


def drain_lines(connections: int) -> List[str]:
    clock = Clock()
    factory = IncrementFactory(clock=clock, logConnections=False)
    for _ in range(connections):
        connect_to(factory)
    service = DrainingService(factory, 5.0, clock)
    service.startService()
    events: List[Dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        service.stopService()
        clock.advance(6.0)
    finally:
        globalLogPublisher.removeObserver(events.append)
    return [formatEvent(e) for e in events if "{connections}" in e["log_format"]]


def test_the_drain_counts_in_words() -> None:
    """'draining 1 connection', not '1 connections'; the same when the
    drain deadline aborts them."""
    assert drain_lines(1) == [
        "draining 1 connection",
        "aborting 1 connection still open after 5.0s",
    ]
    assert drain_lines(2)[0] == "draining 2 connections"
