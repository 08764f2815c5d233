"""A real twist whose --metrics port is taken exits with one line."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.support.processes import run_command, script


def test_metrics_port_taken_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        result = run_command(
            [script("twist"), "incproto", "--port", "tcp:0:interface=127.0.0.1",
             "--metrics", str(busy)],
            tmp_path,
        )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 1
    assert "Traceback" not in output
    assert (
        f"incproto: cannot listen on tcp:{busy}:interface=127.0.0.1 (--metrics): "
        in output
    )
