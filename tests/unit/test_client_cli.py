"""Tests for incproto.client.cli: the command's run in memory on a Clock
(output and timeline)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from incproto.client.cli import parse, run_mode
from tests.support.fakes import in_memory, limited_network


def test_series_client_logs_and_draws_the_limit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The command's run, in memory on a Clock, against a limit of two: every
    send and receive logged, the summary, and the timeline written."""
    chart = tmp_path / "limit.svg"
    args = parse(["-n", "3", "--timeline", str(chart), "127.0.0.1", "9090"])
    network = limited_network(2)
    assert in_memory(run_mode(args, network.reactor, network.reactor), network) == 0
    out, err = capsys.readouterr()
    assert out.count("sent b'25$^ab0000$abab'") == 3, err
    assert out.count("received b'*'") == 3
    assert "connections            3" in out
    assert "  2.200s  #3    received b'*'" in out  # after the first two
    svg = ET.parse(chart).getroot()
    assert svg.tag == "{http://www.w3.org/2000/svg}svg"
    assert "127.0.0.1" in "".join(svg.itertext())
