"""Operations end to end, on real twistd/twist processes: a graceful drain
on SIGTERM in the middle of a message, JSON logs, TLS with Python's ssl
module, and bad configuration."""

from __future__ import annotations

import json
import re
import signal
import socket
import ssl
from pathlib import Path
from typing import List

import pytest

from tests.support.processes import (
    TIMEOUT,
    ServerProcess,
    connect,
    receive_all,
    receive_exactly,
    run_command,
    script,
    signal_mid_message,
    start_incproto,
)

MiB = 1024 * 1024


def test_sigterm_mid_message_delivers_a_prefix_then_a_fin() -> None:
    """
    A client streams one endless message and reads its replies; the server
    gets SIGTERM.  The client receives a correct, contiguous prefix of its
    replies, ending in a FIN (end of file, not a reset), and the server
    exits as twistd does after SIGTERM.
    """
    server = start_incproto("--drain-timeout", "10")
    received = signal_mid_message(server, signal.SIGTERM, after=1 + MiB)
    status = server.process.wait(TIMEOUT)
    assert received[:1] == b"*"
    assert len(received) > 1 + MiB
    assert received.count(b"b") == len(received) - 1
    assert status == -signal.SIGTERM
    server.stop()
    assert "closed (shutdown)" in server.output
    assert "Traceback" not in server.output


def test_json_logs_carry_the_fields(tmp_path: Path) -> None:
    argv = [script("twist"), "--log-format", "json", "incproto"]
    argv += ["--port", "tcp:0:interface=127.0.0.1", "--max-connections", "1"]
    server = ServerProcess([*argv, "--queue", "0"], tmp_path)
    with connect(server.port) as first:
        assert receive_exactly(first, 1) == b"*"
        with connect(server.port) as rejected:
            assert receive_all(rejected) == b""
        first.sendall(b"^abc$")
        assert receive_exactly(first, 3) == b"bcd"
        first.shutdown(socket.SHUT_WR)
        assert receive_all(first) == b""
    server.stop()
    events = [
        json.loads(line) for line in server.output.splitlines() if line.startswith("{")
    ]
    [closed] = [e for e in events if e.get("why") == "client closed"]
    assert (closed["bytesIn"], closed["bytesOut"]) == (5, 4)
    assert re.fullmatch(r"127\.0\.0\.1:\d+", closed["peer"])
    assert closed["duration"] >= 0
    [rejection] = [e for e in events if e.get("what") == "rejected"]
    assert rejection["why"] == "limit"


@pytest.fixture
def certificate(tmp_path: Path) -> List[Path]:
    pytest.importorskip("OpenSSL")
    from tests.support.certificates import make_certificate

    return list(make_certificate(tmp_path))


def test_tls_end_to_end(tmp_path: Path, certificate: List[Path]) -> None:
    """
    C{--port ssl:...} with a generated certificate, driven by Python's ssl
    module: the protocol's examples, a 1 MiB message, and the connection
    limit behaving the same as over plain TCP.
    """
    key, cert = certificate
    port = f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"
    server = start_incproto("--port", port, "--max-connections", "1", cwd=tmp_path)
    context = ssl.create_default_context(cafile=str(cert))

    def tls_connect() -> ssl.SSLSocket:
        raw = socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)
        return context.wrap_socket(raw, server_hostname="localhost")

    try:
        with tls_connect() as sock:
            assert receive_exactly(sock, 1) == b"*"
            for sent, expected in [
                (b"^abc$de^abte$f", b"bcdbcuf"),
                (b"xyz^123", b"234"),
                (b"25$^ab0000$abab", b"36bc1111"),
            ]:
                sock.sendall(sent)
                assert receive_exactly(sock, len(expected)) == expected
            with tls_connect() as held:
                held.sendall(b"^held$")
                sock.sendall(b"$^" + b"a" * MiB + b"$")
                assert receive_exactly(sock, MiB) == b"b" * MiB
                sock.close()
                assert receive_exactly(held, 5) == b"*ifme"
    finally:
        server.stop()
    assert "Traceback" not in server.output


@pytest.mark.parametrize(
    "argv, reason",
    [
        (["--port", "ssl:0:privateKey=/nonexistent.pem"], "--port ssl:0:privateKey"),
        (
            ["--idle-timeout", "0"],
            "--idle-timeout 0 is not a positive number of seconds",
        ),
        (["--drain-timeout", "never"], "--drain-timeout 'never' is not a positive"),
    ],
)
def test_bad_configuration_is_one_line(
    tmp_path: Path, argv: List[str], reason: str
) -> None:
    result = run_command([script("twist"), "incproto", *argv], tmp_path)
    assert result.returncode == 64
    assert "Traceback" not in result.stdout + result.stderr
    assert reason in result.stderr.splitlines()[0]


def test_unreadable_certificate(tmp_path: Path, certificate: List[Path]) -> None:
    key, cert = certificate
    cert.write_text("not a certificate")
    result = run_command(
        [
            script("twist"),
            "incproto",
            "--port",
            f"ssl:0:privateKey={key}:certKey={cert}",
        ],
        tmp_path,
    )
    assert result.returncode == 64
    assert "Traceback" not in result.stdout + result.stderr
    assert result.stderr.startswith("Error: --port ssl:0:")
