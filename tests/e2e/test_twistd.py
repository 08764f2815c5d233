"""End to end: a real C{twistd -n incproto} (and C{twist}) process, driven
over TCP on 127.0.0.1."""

from __future__ import annotations

import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Generator, List

import pytest

import twisted
from incproto.tap import HELP_HINT
from tests.support.processes import (
    TIMEOUT,
    ServerProcess,
    connect,
    descendants,
    half_close_round_trip,
    memory_kib,
    receive_all,
    receive_exactly,
    run_command,
    script,
    start_incproto,
    wait_gone,
)

MiB = 1024 * 1024
# Before Twisted 26.10, twistd printed usage errors but exited 0 (Twisted
# #12656); PyPy 3.9 can only install such a release.
TWISTD_FAILS_ON_USAGE_ERRORS = (twisted.version.major, twisted.version.minor) >= (
    26,
    10,
)
LOOPBACK = "tcp:0:interface=127.0.0.1"
TWISTD = [script("twistd"), "-n", "--pidfile="]


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Generator[ServerProcess, None, None]:
    process = ServerProcess(
        [*TWISTD, "incproto", "--port", LOOPBACK], tmp_path_factory.mktemp("twistd")
    )
    yield process
    status = process.stop()
    # twistd re-raises SIGTERM after a clean shutdown.
    assert status == -signal.SIGTERM, process.output
    assert "Server Shut Down." in process.output
    assert "Traceback" not in process.output, process.output


def test_protocol_table(server: ServerProcess) -> None:
    with connect(server.port) as sock:
        assert receive_exactly(sock, 1) == b"*"
        for sent, expected in [
            (b"^abc$de^abte$f", b"bcdbcuf"),
            (b"xyz^123", b"234"),
            (b"25$^ab0000$abab", b"36bc1111"),
            (b"^ab$^kl$^80$50", b"bclm91"),
        ]:
            sock.sendall(sent)
            assert receive_exactly(sock, len(expected)) == expected


def test_reply_before_message_end(server: ServerProcess) -> None:
    with connect(server.port) as sock:
        sock.sendall(b"abcdef")
        sock.sendall(b"^")
        sock.sendall(b"f")
        assert receive_exactly(sock, 2) == b"*g"


def test_half_close(server: ServerProcess) -> None:
    assert half_close_round_trip(server.port, b"^abc$") == b"*bcd"


@pytest.mark.skipif(shutil.which("nc") is None, reason="needs netcat-openbsd")
def test_netcat_half_close(server: ServerProcess) -> None:
    """C{printf '^abc$' | nc -N 127.0.0.1 PORT} prints C{*bcd}."""
    result = subprocess.run(
        ["nc", "-N", "127.0.0.1", str(server.port)],
        input=b"^abc$",
        capture_output=True,
        timeout=TIMEOUT,
    )
    assert result.stdout == b"*bcd"


def test_ten_megabytes_half_close(server: ServerProcess) -> None:
    """C{10 MB piped in means 10 MB back}, every byte value but C{$} included."""
    payload = bytes(range(256)).replace(b"$", b"") * (10 * MiB // 255)
    received = half_close_round_trip(server.port, b"^" + payload)
    plus_one = bytes((b + 1) % 256 for b in range(256))
    assert len(received) == 1 + len(payload)
    assert received == b"*" + payload.translate(plus_one)


def test_client_that_never_reads_costs_bounded_memory(server: ServerProcess) -> None:
    """
    A client sends one endless message and never reads.  The server stops
    reading from it: the client's sends stall long before 512 MiB, and the
    server's memory grows by a few MiB at most (the kernel's socket buffers
    hold the rest).  Then the client half-closes and reads everything back.
    """
    pid = server.process.pid
    rss_before = memory_kib(pid)
    peak_before = memory_kib(pid, "VmHWM")
    assert rss_before is not None and peak_before is not None
    chunk = memoryview(b"a" * MiB)
    sent = 0
    with connect(server.port) as sock:
        sock.sendall(b"^")
        sock.settimeout(2.0)  # no progress for 2 s: the server stopped reading
        try:
            while sent < 512 * MiB:
                sent += sock.send(chunk)
        except socket.timeout:
            pass
        rss_stalled = memory_kib(pid)
        assert rss_stalled is not None
        assert sent < 256 * MiB, "the server never stopped reading"
        assert rss_stalled - rss_before < 16 * 1024, (rss_before, rss_stalled)
        sock.settimeout(TIMEOUT)
        sock.shutdown(socket.SHUT_WR)
        received = receive_all(sock)
    assert len(received) == 1 + sent
    assert received.count(b"b") == sent
    peak_after = memory_kib(pid, "VmHWM")
    assert peak_after is not None
    assert peak_after - peak_before < 32 * 1024, (peak_before, peak_after)


def test_twist_serves(tmp_path: Path) -> None:
    process = ServerProcess([script("twist"), "incproto", "--port", LOOPBACK], tmp_path)
    try:
        assert half_close_round_trip(process.port, b"^abc$") == b"*bcd"
    finally:
        process.stop()


@pytest.mark.parametrize(
    "argv, reason",
    [
        (["--port", "banana"], "--port banana: Unknown endpoint type: 'banana'"),
        (["--port", "70000"], "--port 70000: a port number is between 0 and 65535"),
        (["--bogus"], "option --bogus not recognized"),
        (
            ["--backlog", "0"],
            "Parameter type enforcement failed: --backlog 0 is not a positive integer",
        ),
        (
            ["--idle-timeout", "soon"],
            "Parameter type enforcement failed: --idle-timeout 'soon' is not a "
            "positive number of seconds",
        ),
        (
            ["--port", "proxy:"],
            "--port proxy:: proxy: needs an endpoint after it, as in proxy:tcp:9090",
        ),
        (
            ["--port", "proxy:tcp:0:trusted=10.0.0.0/99"],
            "--port proxy:tcp:0:trusted=10.0.0.0/99: trusted=10.0.0.0/99: "
            "'10.0.0.0/99' is not an address or network (as in 10.0.0.0/8,127.0.0.1)",
        ),
        (
            ["--port", "tcp:0", "--proxy-trusted", "10.0.0.0/8"],
            "--proxy-trusted needs a proxy: (or haproxy:) --port",
        ),
        (
            ["--handshake-timeout", "0"],
            "Parameter type enforcement failed: --handshake-timeout 0 is not a "
            "positive number of seconds",
        ),
    ],
)
def test_bad_option_is_a_one_line_error(
    tmp_path: Path, argv: List[str], reason: str
) -> None:
    result = run_command([*TWISTD, "incproto", *argv], tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == (1 if TWISTD_FAILS_ON_USAGE_ERRORS else 0)
    assert "Traceback" not in output
    lines = output.strip().splitlines()
    assert lines[-1].startswith(script("twistd")), lines
    assert lines[-1].endswith(f": {reason}"), lines
    # A usage line, a pointer to --help, the reason: not ~70 lines of options.
    assert lines[:2] == ["Usage: twistd [options]", HELP_HINT], lines


def test_untrusted_proxy_source_is_refused_through_the_plugin(tmp_path: Path) -> None:
    """trusted= through twistd's own endpoint plugin lookup: a header from
    127.0.0.1, not in the list, is refused, and logged with the real
    address, never the claimed one (issue 22)."""
    server = start_incproto(
        "--port", "proxy:tcp:0:interface=127.0.0.1:trusted=10.0.0.0/8", cwd=tmp_path
    )
    try:
        sock = connect(server.port)
        sock.sendall(b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n^abc$")
        assert sock.recv(10) == b""
        sock.close()
        server.wait_for(re.compile("closing 127.0.0.1:[0-9]+: not a trusted source"))
        assert "192.0.2.1" not in server.output
    finally:
        server.stop()


def test_twist_bad_option(tmp_path: Path) -> None:
    result = run_command([script("twist"), "incproto", "--port", "banana"], tmp_path)
    assert result.returncode == 64  # EX_USAGE
    assert "Traceback" not in result.stdout + result.stderr
    assert result.stderr.strip().splitlines() == [
        "Error: --port banana: Unknown endpoint type: 'banana'",
        "",
        "Usage: twist [options] plugin [plugin_options]",
        HELP_HINT,
    ]


def test_port_in_use_is_a_one_line_error(tmp_path: Path) -> None:
    """
    twistd exits 1 with one line, and removes the pid file it wrote (run
    here without --pidfile=, as operators do).
    """
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_command(
            [
                script("twistd"),
                "-n",
                "incproto",
                "--port",
                f"tcp:{port}:interface=127.0.0.1",
            ],
            tmp_path,
        )
    output = result.stdout + result.stderr
    assert result.returncode == 1
    assert "Traceback" not in output
    [line] = [line for line in output.splitlines() if "cannot listen" in line]
    assert line.endswith(
        f"incproto: cannot listen on tcp:{port}:interface=127.0.0.1: "
        f"Couldn't listen on 127.0.0.1:{port}: [Errno 98] Address already in use."
    )
    assert not (tmp_path / "twistd.pid").exists()


def test_version(tmp_path: Path) -> None:
    import incproto

    result = run_command([*TWISTD, "incproto", "--version"], tmp_path)
    assert result.returncode == 0
    assert result.stdout.startswith(f"incproto {incproto.__version__} (Twisted ")


def test_listed_in_twistd_help(tmp_path: Path) -> None:
    result = run_command([script("twistd"), "--help"], tmp_path)
    [line] = [line for line in result.stdout.splitlines() if "incproto" in line]
    assert line.split()[0] == "incproto"
    assert "Serve the increment protocol" in line


def test_max_connections_holds_the_third_client(tmp_path: Path) -> None:
    """
    C{--max-connections 2}: of three concurrent clients, the third is
    greeted only after one of the first two disconnects, and the server
    logs that it waited in the queue.
    """
    process = ServerProcess(
        [*TWISTD, "incproto", "--port", LOOPBACK, "--max-connections", "2"], tmp_path
    )
    try:
        first, second = connect(process.port), connect(process.port)
        assert receive_exactly(first, 1) == b"*"
        assert receive_exactly(second, 1) == b"*"
        with connect(process.port) as third:
            third.sendall(b"^abc$")
            second.sendall(b"^x$")  # a round trip after the third connected
            assert receive_exactly(second, 1) == b"y"
            third.setblocking(False)
            with pytest.raises(BlockingIOError):
                third.recv(1)  # not greeted yet
            third.settimeout(TIMEOUT)
            first.close()
            assert receive_exactly(third, 4) == b"*bcd"
        second.close()
    finally:
        process.stop()
    assert "admitted 127.0.0.1:" in process.output
    assert "in the queue" in process.output


@pytest.mark.parametrize(
    "pool",
    [
        ["--handler", "incproto.handlers:hashing", "--threads", "2"],
        ["--handler", "incproto.handlers:pure_python", "--processes", "2"],
    ],
)
def test_pools_serve_and_stop_cleanly(tmp_path: Path, pool: List[str]) -> None:
    process = ServerProcess([*TWISTD, "incproto", "--port", LOOPBACK, *pool], tmp_path)
    with connect(process.port) as sock:
        assert receive_exactly(sock, 1) == b"*"
        sock.sendall(b"^abc$de^abte$f")
        assert receive_exactly(sock, 7) == b"bcdbcuf"
    payload = bytes(range(256)).replace(b"$", b"") * 4000
    received = half_close_round_trip(process.port, b"^" + payload)
    assert received == b"*" + payload.translate(
        bytes((b + 1) % 256 for b in range(256))
    )
    workers = descendants(process.process.pid)
    assert ("--processes" in pool) == bool(workers)
    assert process.stop() == -signal.SIGTERM
    assert "Traceback" not in process.output, process.output
    # The kernel kills them as their parent goes: wait for it, bounded.
    wait_gone(workers, "pool processes")


@pytest.mark.parametrize("pool", [[], ["--processes", "2"]])
def test_function_handler_from_the_current_directory(
    tmp_path: Path, pool: List[str]
) -> None:
    """
    C{--handler mymod:f} with C{def f(payload: bytes) -> bytes} in the
    directory twistd runs from: found without PYTHONPATH, and (a
    module-level function pickles) run in a process pool too.
    """
    (tmp_path / "mymod.py").write_text(
        "def f(payload: bytes) -> bytes:\n    return payload.upper()\n"
    )
    process = ServerProcess(
        [*TWISTD, "incproto", "--port", LOOPBACK, "--handler", "mymod:f", *pool],
        tmp_path,
    )
    try:
        assert half_close_round_trip(process.port, b"^abc$x^de") == b"*ABCDE"
    finally:
        assert process.stop() == -signal.SIGTERM
    assert "Traceback" not in process.output, process.output


def test_handler_errors_are_one_line(tmp_path: Path) -> None:
    (tmp_path / "mymod.py").write_text(
        "def make():\n    raise RuntimeError('no config')\n"
    )
    result = run_command([*TWISTD, "incproto", "--handler", "mymod:make"], tmp_path)
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    assert (
        output.strip()
        .splitlines()[-1]
        .endswith(": --handler mymod:make: mymod:make() raised RuntimeError: no config")
    )


def test_tls_port_without_the_tls_extra_names_the_fix(tmp_path: Path) -> None:
    """As if pyOpenSSL were not installed: twist says how to install it."""
    hide_openssl = (
        "import sys; sys.modules['OpenSSL'] = None; "
        "from twisted.application.twist._twist import Twist; "
        "sys.argv[0] = 'twist'; Twist.main()"
    )
    port = "ssl:0:privateKey=key.pem:certKey=cert.pem"
    result = run_command(
        [sys.executable, "-c", hide_openssl, "incproto", "--port", port], tmp_path
    )
    assert result.returncode == 64
    assert "Traceback" not in result.stdout + result.stderr
    assert (
        f"Error: --port {port}: TLS needs pyOpenSSL, which is not installed: "
        "pip install 'incproto[tls]' (" in result.stderr
    )


def test_metrics_port_in_use_names_metrics(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_command(
            [*TWISTD, "incproto", "--port", LOOPBACK, "--metrics", str(port)],
            tmp_path,
        )
    output = result.stdout + result.stderr
    assert result.returncode == 1
    assert "Traceback" not in output
    assert (
        f"incproto: cannot listen on tcp:{port}:interface=127.0.0.1 (--metrics): "
        f"Couldn't listen on 127.0.0.1:{port}: [Errno 98] Address already in use."
    ) in output


def test_python_m_incproto_serves_as_twist_does(tmp_path: Path) -> None:
    process = ServerProcess(
        [sys.executable, "-m", "incproto", "--port", LOOPBACK], tmp_path
    )
    try:
        assert half_close_round_trip(process.port, b"^abc$") == b"*bcd"
    finally:
        assert process.stop() == -signal.SIGTERM
    assert "Traceback" not in process.output, process.output
    usage = run_command([sys.executable, "-m", "incproto", "--bogus"], tmp_path)
    assert usage.returncode == 64
    assert "Error: option --bogus not recognized" in usage.stderr
