"""incproto-client's checking, statistics, reports and timeline (pure), and
its modes in memory on a Clock (the series' timed script)."""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET
from types import SimpleNamespace
from typing import Any, List

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.testing import MemoryReactorClock

import incproto
from incproto import IncrementFactory
from incproto.client.check import ProtocolError, ReplyCheck
from incproto.client.cli import parse
from incproto.client.connection import ClientError, Target
from incproto.client.modes import (
    SERIES_REPLY,
    Series,
)
from incproto.client.report import ProgressLine, Result, merge, summary
from incproto.client.stats import Histogram, histogram_of
from incproto.client.timeline import ordinal, timeline_svg
from tests.support.fakes import Loopback, in_memory, limited_network
from tests.support.formats import reference

# ReplyCheck -----------------------------------------------------------------


def test_check_accepts_the_series_replies_in_any_split() -> None:
    check = ReplyCheck()
    for sent in (b"^abc$de^abte$f", b"xyz^123", b"25$^ab0000$abab"):
        check.sent(sent)
    for byte in range(len(SERIES_REPLY)):
        check.check(SERIES_REPLY[byte : byte + 1])
    assert check.greeted and check.owed == 0
    assert check.received == len(SERIES_REPLY) - 1


@given(st.binary(max_size=200), st.lists(st.integers(1, 50), max_size=20))
def test_check_accepts_what_the_server_would_send(
    stream: bytes, splits: List[int]
) -> None:
    check = ReplyCheck()
    check.sent(stream)
    reply = b"*" + reference(stream)
    position = 0
    for size in [*splits, len(reply)]:
        check.check(reply[position : position + size])
        position += size
    assert check.owed == 0


def test_check_names_the_first_wrong_byte() -> None:
    check = ReplyCheck()
    check.sent(b"^abcd$")
    check.check(b"*bc")
    with pytest.raises(ProtocolError, match=r"reply byte 3 is b'x', expected b'e'"):
        check.check(b"dx")


def test_check_wants_the_greeting_first() -> None:
    with pytest.raises(ProtocolError, match="greeting"):
        ReplyCheck().check(b"bcd")


def test_check_rejects_bytes_nobody_asked_for() -> None:
    check = ReplyCheck()
    check.sent(b"^a$b")
    with pytest.raises(ProtocolError, match="1 unexpected bytes after reply byte 1"):
        check.check(b"*bc")


# Histograms and reports -----------------------------------------------------


def test_histogram_percentiles_are_within_one_percent() -> None:
    histogram = histogram_of([i / 1000 for i in range(1, 1001)])  # 1 ms .. 1 s
    p50, p99 = histogram.percentile(50), histogram.percentile(99)
    assert p50 is not None and p99 is not None
    assert 0.500 <= p50 <= 0.500 * 1.0101
    assert 0.990 <= p99 <= 0.990 * 1.0101
    assert Histogram().percentile(50) is None


def test_merge_adds_rates_and_merges_latencies() -> None:
    fast = histogram_of([0.001] * 99)
    slow = histogram_of([0.1])
    results: List[Result] = [
        {"mode": "ping", "connections": 50, "messages": 99, "rate": 1000.0,
         "seconds": 2.0, "histogram": fast.to_json()},
        {"mode": "ping", "connections": 50, "messages": 1, "rate": 500.0,
         "seconds": 2.1, "histogram": slow.to_json()},
    ]  # fmt: skip
    merged = merge(results)
    assert merged["connections"] == 100 and merged["rate"] == 1500.0
    assert merged["seconds"] == 2.1 and merged["processes"] == 2
    assert merged["latency_p50"] < 0.00102 and merged["latency_p99"] < 0.00102
    assert 0.1 <= Histogram.from_json(merged["histogram"]).percentile(100) < 0.102
    table = summary(merged)
    assert "per second         1,500" in table
    assert "latency p99" in table and "ms" in table


# Usage ------------------------------------------------------------------------


def test_the_mode_comes_first_and_defaults_to_series() -> None:
    args = parse(["-n", "3", "localhost", "9090"])
    assert (args.mode, args.connections, args.port) == ("series", 3, 9090)
    args = parse(["ping", "-c", "7", "-l", "64", "h", "1"])
    assert (args.mode, args.connections, args.length) == ("ping", 7, 64)


@pytest.mark.parametrize(
    ("argv", "reason"),
    [(["ping", "-c", "0", "h", "1"], "-c/--connections: 0 is not more than 0"),
     (["h"], "the following arguments are required: port"),
     (["stream", "-n", "2", "h", "1"], "stream has no -n option"),
     (["burst", "--processes", "2", "h", "1"],
      "burst has no --processes option (it goes with ping, churn)"),
     (["--insecure", "h", "1"], "--ca and --insecure go with --tls"),
     (["pnig", "127.0.0.1", "9090"], "unknown mode 'pnig' (did you mean ping?)"),
     (["-n", "2", "--quiet", "flood", "127.0.0.1", "9090"],
      "expected HOST PORT, got flood 127.0.0.1 9090"),
     (["--quiet", "ping", "127.0.0.1", "9090"],
      "the mode comes first: incproto-client ping [options] HOST PORT"),
     (["flood", "127.0.0.1", "9090"],
      "unknown mode 'flood' (choose from series, ping, stream, burst, churn)"),
     (["ping", "h", "1", "2"], "expected HOST PORT, got h 1 2"),
     (["ping", "--count", "5", "127.0.0.1", "9090"], "ping has no --count option"),
     (["stream", "--timeline", "t.svg", "127.0.0.1", "9090"],
      "stream has no --timeline option (it goes with series, burst)"),
     (["ping", "--timeline=t.svg", "127.0.0.1", "9090"],
      "ping has no --timeline option"),
     (["127.0.0.1", "70000"], "70000 is not a TCP port (1 to 65535)"),
     (["burst", "--hold", "-1", "h", "1"], "--hold: -1 is negative"),
     (["-n", "2", "--timeline", "/nonexistent/t.svg", "h", "1"],
      "--timeline /nonexistent/t.svg: no such directory: /nonexistent"),
     (["--timeline", "/", "h", "1"], "--timeline /: is a directory"),
     (["--tls", "--ca", "/nonexistent.pem", "h", "1"],
      "cannot read the authority /nonexistent.pem")],
)  # fmt: skip
def test_bad_usage_exits_2_with_one_line(
    argv: List[str], reason: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit:
        parse(argv)
    assert exit.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("incproto-client")
    assert ": error: " in error and reason in error


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit:
        parse(["--version"])
    assert exit.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"incproto-client {incproto.__version__} (Twisted ")


def test_quantiles_never_exceed_what_was_observed() -> None:
    """A log bucket's upper edge can lie above the largest duration."""
    for waits in ([0.00123], [0.002, 0.0021], [0.5] * 10):
        histogram = histogram_of(waits)
        for percent in (1, 50, 99, 100):
            value = histogram.percentile(percent)
            assert value is not None and min(waits) <= value <= max(waits)
        merged = Histogram.from_json(histogram.to_json())
        assert merged.percentile(100) == max(waits)


def test_progress_line_is_cut_to_the_terminal() -> None:
    out = io.StringIO()
    line = ProgressLine(out, columns=lambda: 20)
    line.show("1,000/1,000 greeted, 999 done, 12,345 messages")
    shown = out.getvalue().rsplit("\x1b[K", 1)[1]
    assert len(shown) == 19 and shown.endswith("\u2026")
    line.show("short")
    assert out.getvalue().endswith("\x1b[Kshort")


# Modes in memory, on a Clock -------------------------------------------------


def test_series_reproduces_the_series_client() -> None:
    network = Loopback(MemoryReactorClock(), IncrementFactory())
    clock = network.reactor
    said: List[str] = []
    run = Series(
        Target(clock, "127.0.0.1", 9090, 10.0), 3, say=said.append, clock=clock
    )
    result = in_memory(run.run(), network)
    assert result["connections"] == 3
    assert result["seconds"] == pytest.approx(2.2)
    for connection in run.connections:
        received = b"".join(e[2] for e in connection.events if e[1] == "received")
        assert received == SERIES_REPLY
    assert sum("sent b'xyz^123'" in line for line in said) == 3
    assert sum("received" in line for line in said) >= 9


def test_series_against_a_limit_of_two_shows_the_third_waiting() -> None:
    """On a Clock: the third client is greeted when the first two are done
    with the series' 2.2 s script, and the timeline shows it waiting."""
    network = limited_network(2)
    clock = network.reactor
    to = Target(clock, "127.0.0.1", 9090, 10.0)
    run = Series(to, 3, clock=clock)
    in_memory(run.run(), network)
    first, second, third = sorted(run.connections, key=lambda c: c.greetedAt or 0)
    assert first.closedAt is not None and second.closedAt is not None
    assert third.greetedAt is not None
    assert third.greetedAt >= min(first.closedAt, second.closedAt)
    assert (third.greetedAt - third.started, clock.seconds()) == (
        pytest.approx(2.2),
        pytest.approx(4.4),
    )
    for connection in run.connections:
        received = b"".join(e[2] for e in connection.events if e[1] == "received")
        assert received == SERIES_REPLY
    svg = ET.fromstring(timeline_svg(run.connections, run.began, "limit 2"))
    rects = svg.findall("{http://www.w3.org/2000/svg}rect")
    # background, two legend boxes, then waiting and served bars per client
    assert len(rects) == 3 + 2 * 3
    waiting = [float(r.get("width", 0)) for r in rects[3::2]]
    assert (
        max(waiting) == waiting[[c.number for c in run.connections].index(third.number)]
    )
    assert max(waiting) > 100 * min(waiting)


def test_the_failure_that_ended_the_run_is_reported() -> None:
    """
    The second client waits behind a limit of one past the timeout; the
    run then aborts the first, which must not be blamed on the server.
    """
    network = limited_network(1)
    clock = network.reactor
    run = Series(Target(clock, "127.0.0.1", 9090, 10.0), 2, timeout=0.5, clock=clock)
    with pytest.raises(ClientError) as error:
        in_memory(run.run(), network)
    assert str(error.value) == "connection 2: no greeting within 0.5 s"


def fake_connections(count: int, origin: float) -> List[Any]:
    """Connections of a burst, as the timeline reads them: arriving over
    0.1 s from 1 s after the origin, greeted 0.2 s later, closed at 2 s."""
    return [
        SimpleNamespace(
            number=n,
            started=origin + 1 + n / count / 10,
            greetedAt=origin + 1.2 + n / count / 10,
            closedAt=origin + 2.0,
            events=[(origin + 1.3, "sent", b"^a$")],
        )
        for n in range(1, count + 1)
    ]


def test_timeline_of_a_thousand_connections() -> None:
    """Sampled with the right ordinal, about 700 px tall, titled axes, a
    legend, and no blank stretch before the first arrival."""
    svg = ET.fromstring(timeline_svg(fake_connections(1000, 50.0), 50.0, "burst"))
    assert 600 <= int(svg.get("height", 0)) <= 800
    texts = [t.text for t in svg.iter("{http://www.w3.org/2000/svg}text")]
    assert texts[0] == "burst (every 5th of 1,000 connections)"
    legend = ["waiting for the greeting", "served (greeted until closed)"]
    for label in ["seconds since the run started", "connection", *legend]:
        assert label in texts
    rects = svg.findall("{http://www.w3.org/2000/svg}rect")
    assert len(rects) == 3 + 2 * 200
    first_bar = float(rects[3].get("x", 0))
    assert first_bar == 78  # the plot starts at the first arrival, 1 s in
    assert "1.1" in texts and "2.0" in texts and "0.0" not in texts


def test_timeline_ordinals() -> None:
    assert [ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22, 23, 101)] == [
        "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd",
        "23rd", "101st",
    ]  # fmt: skip
    texts = ET.fromstring(timeline_svg(fake_connections(600, 0.0), 0.0, "t"))
    assert next(texts.iter("{http://www.w3.org/2000/svg}text")).text == (
        "t (every 3rd of 600 connections)"
    )
