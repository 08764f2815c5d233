"""The incproto-client command: its run in memory on a Clock (output and
timeline), and the command itself against a real twistd server (exit
status, JSON, errors)."""

from __future__ import annotations

import json
import socket
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Iterator

import pytest

from incproto.client.cli import parse, run_mode
from tests.support.fakes import in_memory, limited_network
from tests.support.processes import ServerProcess, run_command, script, start_incproto


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    process = start_incproto("--max-connections", "2")
    yield process
    process.stop()


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


def test_module_run_ping_as_json(server: ServerProcess, tmp_path: Path) -> None:
    done = run_command(
        [sys.executable, "-m", "incproto.client", "ping", "-c", "2", "-d", "0.3",
         "--json", "127.0.0.1", str(server.port)],
        tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["mode"] == "ping" and result["messages"] > 0
    assert "histogram" not in result


def test_refused_exits_1_with_one_line(tmp_path: Path) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        number = unused.getsockname()[1]
    done = run_command([script("incproto-client"), "127.0.0.1", str(number)], tmp_path)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "refused" in done.stderr


def test_timeline_that_cannot_be_written_keeps_the_results(
    server: ServerProcess, tmp_path: Path
) -> None:
    """/dev/full passes the check before the run, and fails the write after:
    the results are printed first, then one line, and the exit is 1."""
    done = run_command(
        [script("incproto-client"), "--quiet", "--timeline", "/dev/full",
         "127.0.0.1", str(server.port)],
        tmp_path,
    )  # fmt: skip
    assert done.returncode == 1
    assert "connections            1" in done.stdout
    assert done.stderr.startswith("incproto-client: --timeline: [Errno 28]")
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


def test_unknown_mode_connects_nowhere(tmp_path: Path) -> None:
    done = run_command([script("incproto-client"), "pnig", "127.0.0.1", "9"], tmp_path)
    assert done.returncode == 2
    assert done.stderr == (
        "incproto-client: error: unknown mode 'pnig' (did you mean ping?) "
        "(see --help)\n"
    )
