"""The incproto-client command itself against a real twistd server (exit
status, JSON, errors)."""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path
from typing import Iterator

import pytest

from tests.support.processes import ServerProcess, run_command, script, start_incproto


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    process = start_incproto("--max-connections", "2")
    yield process
    process.stop()


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
