"""C{python -m incproto.worker} still starts a worker: a supervisor started
before an upgrade spawns its workers by that name."""

from __future__ import annotations

import subprocess
import sys


def test_python_m_incproto_worker_still_runs_the_worker() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "incproto.worker"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "usage: python -m incproto.workers.worker" in done.stderr
