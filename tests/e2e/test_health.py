"""/healthz of a real twistd supervising workers: 200 once they are up."""

from __future__ import annotations

import re
import socket
import urllib.error
import urllib.request
from pathlib import Path
from typing import Tuple

from tests.support.processes import TIMEOUT, ServerProcess, script, wait_until


def http_get(port: int, path: str) -> Tuple[int, str]:
    """A blocking GET on 127.0.0.1; the status code and the body."""
    url = f"http://127.0.0.1:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_supervisor_healthz_in_a_real_process(tmp_path: Path) -> None:
    """twistd incproto --workers 2 --metrics PORT: /healthz is 200 once the
    workers are up."""
    metrics = free_port()
    server = ServerProcess(
        [script("twistd"), "-n", "--pidfile=", "incproto",
         "--port", "tcp:0:interface=127.0.0.1", "--workers", "2",
         "--metrics", str(metrics)],
        tmp_path,
        listening=re.compile(rb"metrics listening on \S+:(\d+)"),
    )  # fmt: skip
    try:
        assert server.port == metrics
        server.wait_for(re.compile(r"worker 1\.2 started"))
        wait_until(lambda: http_get(metrics, "/healthz") == (200, "ok\n"), "ready")
    finally:
        server.stop()
    assert "Traceback" not in server.output
