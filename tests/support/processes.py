"""Test helpers: real twistd/twist processes and blocking socket clients."""

from __future__ import annotations

import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, List, Optional, Sequence

TIMEOUT = 30.0
# The incproto port's listening log line, as text ("incproto listening on
# 127.0.0.1:9090") or JSON (the "what" field is "incproto"; the --metrics
# listener, which starts first, logs "metrics").
LISTENING = re.compile(
    rb'(?:incproto listening on \S+:|"what": "incproto", "address": "[^"]*", "port": )'
    rb"(\d+)"
)


# Notified whenever any server process writes output.
OUTPUT_CHANGED = threading.Condition()


def wait_until(
    predicate: Callable[[], bool], what: str, every: Optional[float] = None
) -> None:
    """
    Wait until C{predicate()} holds, checking it whenever any server process
    writes output (and every C{every} seconds, if given: for what no output
    announces); fail the test after the usual timeout.
    """
    deadline = time.monotonic() + TIMEOUT
    with OUTPUT_CHANGED:
        while not predicate():
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {what}")
            OUTPUT_CHANGED.wait(left if every is None else min(left, every))


def script(name: str) -> str:
    """The path of a console script installed beside this Python."""
    return str(Path(sys.executable).parent / name)


class ServerProcess:
    """
    A server process started with C{argv}; the constructor returns once it
    logs that it listens (or fails the test if it exits or takes too long).

    @ivar match: what C{listening} matched in its output.
    @ivar port: the TCP port it listens on (the first group of C{match}).
    """

    def __init__(
        self,
        argv: Sequence[str],
        cwd: Path,
        listening: re.Pattern[bytes] = LISTENING,
        keepReading: bool = True,
    ) -> None:
        """
        @param keepReading: whether its output is read after it listens;
            C{False} makes a log reader that stops (the pipe fills).
        """
        self.process = subprocess.Popen(
            list(argv), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        self._output = bytearray()
        self._changed = OUTPUT_CHANGED
        self.match = self._read_until(listening)
        self.port = int(self.match.group(1) or 0)
        self._drain = threading.Thread(
            target=self._read_rest if keepReading else lambda: None, daemon=True
        )
        self._drain.start()

    def _read_until(self, pattern: re.Pattern[bytes]) -> re.Match[bytes]:
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        deadline = time.monotonic() + TIMEOUT
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while time.monotonic() < deadline:
                if not selector.select(deadline - time.monotonic()):
                    continue
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                self._output += chunk
                match = pattern.search(self._output)
                if match:
                    return match
        self.process.kill()
        raise AssertionError(f"server did not start: {self._output.decode()}")

    def _read_rest(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._changed:
                self._output += line
                self._changed.notify_all()

    def wait_for(self, pattern: re.Pattern[str], count: int = 1) -> List[Any]:
        """
        Wait until the output matches C{pattern} C{count} times; return the
        matches' groups (a test failure after the usual timeout).
        """
        deadline = time.monotonic() + TIMEOUT
        with self._changed:
            while True:
                found = [m.groups() for m in pattern.finditer(self.output)]
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"{pattern.pattern!r} x{count} not in output:\n{self.output}"
                    )
                self._changed.wait(left)

    @property
    def output(self) -> str:
        return self._output.decode(errors="replace")

    def stop(self) -> int:
        """SIGTERM the server and return its exit status."""
        self.process.send_signal(signal.SIGTERM)
        status = self.process.wait(TIMEOUT)
        self._drain.join(TIMEOUT)
        return status


def start_incproto(*options: str, cwd: Path = Path("/tmp")) -> ServerProcess:
    """C{twistd -n incproto} on an ephemeral port of 127.0.0.1, with C{options}."""
    return ServerProcess(
        [script("twistd"), "-n", "--pidfile=", "incproto",
         "--port", "tcp:0:interface=127.0.0.1", *options],
        cwd,
    )  # fmt: skip


def run_command(argv: Sequence[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run a command that is expected to exit by itself."""
    return subprocess.run(
        list(argv), cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT
    )


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    sock.settimeout(TIMEOUT)
    return sock


def receive_exactly(sock: socket.socket, count: int) -> bytes:
    data = bytearray()
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            break
        data += chunk
    return bytes(data)


def receive_all(sock: socket.socket) -> bytes:
    """Read until the server closes."""
    chunks: List[bytes] = []
    while True:
        chunk = sock.recv(1 << 20)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def half_close_round_trip(port: int, data: bytes) -> bytes:
    """
    Send C{data} while reading, shut down the sending side, and return
    everything the server sent until it closed.
    """
    return send_while_reading(connect(port), [data])


def send_while_reading(sock: socket.socket, chunks: Iterable[bytes]) -> bytes:
    """
    Send C{chunks} one by one while reading, shut down the sending side,
    close C{sock}, and return everything the server sent until it closed.
    """
    errors: List[BaseException] = []

    def send() -> None:
        try:
            for chunk in chunks:
                sock.sendall(chunk)
            sock.shutdown(socket.SHUT_WR)
        except BaseException as e:  # reported by the reading side
            errors.append(e)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        received = receive_all(sock)
    finally:
        sender.join(TIMEOUT)
        sock.close()
    assert not errors, errors
    return received


def signal_mid_message(server: ServerProcess, signum: int, after: int) -> bytes:
    """
    Stream one endless message to C{server} while reading its replies; once
    C{after} bytes have arrived, send the server C{signum} and read on until
    it closes.  Return everything received (a reset raises
    C{ConnectionResetError}).
    """
    sock = connect(server.port)
    stop_sending = threading.Event()

    def send() -> None:
        chunk = b"a" * 65536
        try:
            sock.sendall(b"^")
            while not stop_sending.is_set():
                sock.sendall(chunk)
        except OSError:
            pass  # the server closed: expected

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    received = bytearray(receive_exactly(sock, after))
    server.process.send_signal(signum)
    try:
        received += receive_all(sock)
    finally:
        stop_sending.set()
        sock.close()
        sender.join(TIMEOUT)
    return bytes(received)


def memory_kib(pid: int, field: str = "VmRSS") -> Optional[int]:
    """A memory figure of a process from /proc, in KiB; C{None} if it has
    none, or is gone (a pool process recycled since it was listed)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return None


def descendants(pid: int) -> List[int]:
    """The pids of a process's children, grandchildren and so on."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_gone(pids: Sequence[int], what: str) -> None:
    """
    Wait until none of C{pids} is alive (they need not be our children);
    fail the test after the usual timeout.  Waits on a pidfd where the
    platform has them (CPython on Linux); PyPy 3.9 has none, and rechecks
    /proc every 50 ms.
    """
    deadline = time.monotonic() + TIMEOUT
    for pid in pids:
        pidfd_open = getattr(os, "pidfd_open", None)
        if pidfd_open is not None:
            try:
                fd = pidfd_open(pid)
            except ProcessLookupError:
                continue
            try:
                with selectors.DefaultSelector() as selector:
                    selector.register(fd, selectors.EVENT_READ)
                    selector.select(max(0.0, deadline - time.monotonic()))
            finally:
                os.close(fd)
        else:
            idle = threading.Event()
            while alive(pid) and time.monotonic() < deadline:
                idle.wait(0.05)
        if alive(pid):
            raise AssertionError(f"timed out waiting for {what} ({pid}) to exit")
