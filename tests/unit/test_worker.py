"""Tests for incproto.workers.worker's channel to its supervisor, on a fake
transport: metrics answers, and, once asked to be watched, ``ready`` and
a beat per heartbeat."""

from __future__ import annotations

import json
from typing import Any, List

from prometheus_client import CollectorRegistry
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from incproto.serving.watchdog import Heartbeat
from incproto.workers.worker import WATCH_REQUEST, MetricsAnswers


def channel(heartbeat: Any) -> tuple[MetricsAnswers, StringTransport]:
    answers = MetricsAnswers(CollectorRegistry(), lambda: None, heartbeat)
    transport = StringTransport()
    answers.makeConnection(transport)
    return answers, transport


def lines(transport: StringTransport) -> List[Any]:
    found = [json.loads(line) for line in transport.value().splitlines()]
    transport.clear()
    return found


def test_watched_it_says_ready_and_sends_a_beat_per_heartbeat() -> None:
    clock = Clock()
    heartbeat = Heartbeat(4.0, clock, None, clock.seconds)
    heartbeat.startService()
    answers, transport = channel(heartbeat)
    clock.advance(1.0)
    assert lines(transport) == []  # not asked: an older supervisor
    answers.dataReceived(WATCH_REQUEST + b"\nmetrics\n")
    [ready, metrics] = lines(transport)
    assert ready == {"ready": True} and "text" in metrics
    clock.advance(1.0)
    clock.advance(1.0)
    assert lines(transport) == [{"beat": True}, {"beat": True}]
    heartbeat.stopService()


def test_without_a_watchdog_it_only_says_ready() -> None:
    answers, transport = channel(None)
    answers.dataReceived(WATCH_REQUEST + b"\n")
    assert lines(transport) == [{"ready": True}]
