"""Test helpers for a fleet behind HAProxy: the shipped configuration on
test addresses, HAProxy's runtime API, and a steady loop of series sessions."""

from __future__ import annotations

import re
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from tests.support.processes import TIMEOUT, ServerProcess, receive_all, receive_exactly

HAPROXY_CFG = (
    Path(__file__).resolve().parent.parent.parent / "docs" / "deploy" / "haproxy.cfg"
)
SERIES = (b"^abc$de^abte$f", b"xyz^123", b"25$^ab0000$abab")
SERIES_REPLY = b"*bcdbcuf23436bc1111"
# The most sessions one loop runs, whatever happens (a bound, not a target).
MAX_SESSIONS = 100_000


def free_port(address: str = "127.0.0.1") -> int:
    """A TCP port of C{address} that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind((address, 0))
        return int(probe.getsockname()[1])


def fleet_config(port: int, servers: Sequence[Tuple[str, int]], admin: Path) -> str:
    """
    docs/deploy/haproxy.cfg with the frontend on 127.0.0.1:C{port}, its
    admin socket at C{admin}, and C{servers} (address, port) for its two
    servers, a and b, and more (c, d, ...) written like them.
    """
    shipped = HAPROXY_CFG.read_text()
    replacements = [
        ("bind :9090\n", f"bind 127.0.0.1:{port}\n"),
        (" /run/haproxy/incproto.sock ", f" {admin} "),
    ]
    for documented, used in replacements:
        assert shipped.count(documented) == 1, documented
        shipped = shipped.replace(documented, used)
    lines = []
    for line in shipped.splitlines(keepends=True):
        match = re.match(r"    server b 127\.0\.0\.1:9092 (.*)\n", line)
        if match:
            for name, (address, server_port) in zip("bcdefgh", servers[1:]):
                lines.append(f"    server {name} {address}:{server_port} {match[1]}\n")
        elif line.startswith("    server a 127.0.0.1:9091 "):
            address, server_port = servers[0]
            lines.append(line.replace("127.0.0.1:9091", f"{address}:{server_port}"))
        else:
            lines.append(line)
    return "".join(lines)


def admin_command(admin: Path, command: str) -> str:
    """One command to HAProxy's runtime API; its answer."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(TIMEOUT)
        sock.connect(str(admin))
        sock.sendall(command.encode() + b"\n")
        return receive_all(sock).decode()


def server_states(admin: Path, backend: str = "incproto") -> Dict[str, int]:
    """Each server's operational state (0 down, 2 up) from
    C{show servers state}."""
    states = {}
    for line in admin_command(admin, f"show servers state {backend}").splitlines():
        fields = line.split()
        if len(fields) > 5 and fields[1] == backend:
            states[fields[3]] = int(fields[5])
    return states


def start_haproxy(config: Path, cwd: Path) -> ServerProcess:
    return ServerProcess(
        ["haproxy", "-W", "-db", "-f", str(config)],
        cwd,
        listening=re.compile(rb"Loading success()"),
    )


def series_session(port: int) -> bytes:
    """The series' session through 127.0.0.1:C{port}; what came back."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    with sock:
        sock.settimeout(TIMEOUT)
        greeting = receive_exactly(sock, 1)
        if greeting != b"*":
            return greeting
        for data in SERIES:
            sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        return b"*" + receive_all(sock)


@dataclass
class Session:
    started: float
    ended: float
    error: Optional[str]


@dataclass
class SessionLoop:
    """
    Threads each running series sessions back to back through HAProxy until
    stopped, recording each one's times and error (a wrong reply is one).
    """

    port: int
    threads: int = 4
    sessions: List[Session] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Condition = field(default_factory=threading.Condition)
    _running: List[threading.Thread] = field(default_factory=list)

    def start(self) -> SessionLoop:
        for _ in range(self.threads):
            thread = threading.Thread(target=self._run, daemon=True)
            thread.start()
            self._running.append(thread)
        return self

    def _run(self) -> None:
        for _ in range(MAX_SESSIONS):
            if self._stop.is_set():
                return
            started = time.monotonic()
            error: Optional[str] = None
            try:
                reply = series_session(self.port)
                if reply != SERIES_REPLY:
                    error = f"reply {reply!r}"
            except OSError as e:
                error = repr(e)
            with self._lock:
                self.sessions.append(Session(started, time.monotonic(), error))
                self._lock.notify_all()

    def count(self) -> int:
        with self._lock:
            return len(self.sessions)

    def stop(self) -> List[Session]:
        self._stop.set()
        for thread in self._running:
            thread.join(TIMEOUT)
        assert not any(thread.is_alive() for thread in self._running)
        return list(self.sessions)

    def wait_for(self, count: int) -> None:
        """Wait (bounded) until C{count} more sessions have ended."""
        with self._lock:
            target = len(self.sessions) + count
            ended = self._lock.wait_for(
                lambda: len(self.sessions) >= target, timeout=TIMEOUT
            )
        assert ended, f"{count} sessions did not end"
