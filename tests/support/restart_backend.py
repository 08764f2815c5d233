"""The rolling-restart test's restart command for one backend: SIGTERM the
daemonized twistd named by BASE.pid (if running), wait for it to exit, and
start a new one, daemonized, that listens on haproxy:tcp:PORT:interface=ADDRESS
with --metrics on METRICS of the same address. twistd's parent exits once the
daemon listens, so this returns then.

    python tests/support/restart_backend.py BASE ADDRESS PORT METRICS
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

TIMEOUT = 30.0


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def stop(pidfile: Path) -> None:
    """SIGTERM the daemon of C{pidfile}, if any, and wait until it exits."""
    if not pidfile.exists():
        return
    pid = int(pidfile.read_text())
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    # Not our child: no wait(); its exit shows as the pid gone (bounded).
    deadline = time.monotonic() + TIMEOUT
    while not gone(pid):
        if time.monotonic() > deadline:
            sys.exit(
                f"restart_backend: {pid} still running {TIMEOUT:g} s after SIGTERM"
            )
        time.sleep(0.02)


def main(base: str, address: str, port: str, metrics: str) -> int:
    pidfile = Path(base + ".pid")
    stop(pidfile)
    twistd = str(Path(sys.executable).parent / "twistd")
    return subprocess.run(
        [twistd, f"--pidfile={pidfile}", f"--logfile={base}.log", "incproto",
         "--port", f"haproxy:tcp:{port}:interface={address}",
         "--metrics", f"tcp:{metrics}:interface={address}"],
        timeout=TIMEOUT,
    ).returncode  # fmt: skip


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
