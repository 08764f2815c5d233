"""The benchmark harness stays runnable: each reference server speaks the
protocol (checked byte by byte by incproto-client), and the committed
results render."""

from __future__ import annotations

import importlib.util
import json
import platform
import re
import shutil
import socketserver
import sys
import threading
from pathlib import Path
from typing import List

import pytest

from tests.support.processes import ServerProcess, run_command

ROOT = Path(__file__).resolve().parent.parent.parent
SERVERS = ROOT / "benchmarks" / "servers"
LISTENING_ON = re.compile(rb"listening on [^\s:]+:(\d+)")

REFERENCE = [
    ["asyncio_server.py", "0"],
    ["threadpool_server.py", "0", "--threads", "8"],
]
if importlib.util.find_spec("uvloop") is not None:
    REFERENCE.append(["asyncio_server.py", "0", "--uvloop"])


@pytest.mark.parametrize("server", REFERENCE, ids=lambda s: " ".join(s[:1] + s[2:]))
def test_reference_servers_speak_the_protocol(
    server: List[str], tmp_path: Path
) -> None:
    process = ServerProcess(
        [sys.executable, str(SERVERS / server[0]), *server[1:]],
        tmp_path,
        listening=LISTENING_ON,
    )
    try:
        for mode in (["ping", "-c", "4", "-l", "64", "-d", "0.2"],
                     ["stream", "-m", "2"],
                     ["churn", "-c", "2", "-d", "0.2"],
                     ["-n", "2"]):  # fmt: skip
            done = run_command(
                [sys.executable, "-m", "incproto.client", *mode, "--json",
                 "127.0.0.1", str(process.port)],
                tmp_path,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
            assert json.loads(done.stdout)["mode"] == (
                mode[0] if mode[0] != "-n" else "series"
            )
    finally:
        process.process.terminate()
        process.process.wait()


def test_committed_results_render(tmp_path: Path) -> None:
    saved = tmp_path / "compare.json"
    saved.write_text((ROOT / "benchmarks" / "results" / "compare.json").read_text())
    done = run_command(
        [sys.executable, str(ROOT / "benchmarks" / "compare.py"), "--render",
         str(saved)],
        tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "| incproto |" in done.stdout and "vs uvloop" in done.stdout
    assert saved.with_suffix(".svg").read_text().startswith("<svg")


def test_compare_help_is_whole() -> None:
    done = run_command(
        [sys.executable, str(ROOT / "benchmarks" / "compare.py"), "--help"], ROOT
    )
    assert done.returncode == 0, done.stderr
    assert "with\nincproto-client's load modes; one command" in done.stdout
    assert "raises it for the\nrun, says so on standard error, and restores" in (
        done.stdout
    )
    lines = [*done.stdout.splitlines(), ""]
    options = [i for i, line in enumerate(lines) if line.startswith("  --")]
    undocumented = [
        lines[i]
        for i in options
        if len(lines[i].split()) < 3 and not lines[i + 1].startswith(" " * 20)
    ]
    assert len(options) >= 9 and not undocumented, undocumented


def test_compare_raises_the_kernel_backlogs_and_restores_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from benchmarks.compare import raise_kernel_backlogs

    (tmp_path / "net" / "core").mkdir(parents=True)
    (tmp_path / "net" / "ipv4").mkdir()
    somaxconn = tmp_path / "net" / "core" / "somaxconn"
    syn_backlog = tmp_path / "net" / "ipv4" / "tcp_max_syn_backlog"
    somaxconn.write_text("4096\n")
    syn_backlog.write_text("32768\n")
    restore = raise_kernel_backlogs(tmp_path)
    assert somaxconn.read_text() == "16384"
    assert syn_backlog.read_text() == "32768\n"  # already enough: untouched
    restore()
    assert somaxconn.read_text() == "4096"
    assert capsys.readouterr().err.splitlines() == [
        "raised net.core.somaxconn from 4096 to 16384 for this run "
        "(restored at the end)",
        "restored net.core.somaxconn to 4096",
    ]


def _build(source: Path, out: Path, *flags: str) -> str:
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler")
    binary = out / source.stem
    done = run_command([compiler, "-O2", *flags, "-o", str(binary), str(source)], out)
    assert done.returncode == 0, done.stderr
    return str(binary)


def test_native_load_generator_drives_the_epoll_server(tmp_path: Path) -> None:
    """
    benchmarks/load/load.c builds and runs every mode, bounded, against
    benchmarks/servers/epoll_server.c (which must speak the protocol too).
    """
    load = _build(ROOT / "benchmarks" / "load" / "load.c", tmp_path, "-pthread")
    server_binary = _build(SERVERS / "epoll_server.c", tmp_path)
    server = ServerProcess([server_binary, "0"], tmp_path, listening=LISTENING_ON)
    try:
        modes = [(["churn", "-c", "4", "-d", "0.2"], "connections"),
                 (["ping", "-c", "4", "-l", "300", "-d", "0.2", "-t", "2"], "messages"),
                 (["stream", "-m", "2"], "bytes"),
                 (["burst", "-n", "50", "-H", "0"], "connections")]  # fmt: skip
        for mode, count in modes:
            done = run_command(
                [load, *mode, "-T", "10", "127.0.0.1", str(server.port)], tmp_path
            )
            assert done.returncode == 0, done.stderr
            result = json.loads(done.stdout)
            assert result["mode"] == mode[0] and result[count] > 0, result
    finally:
        server.process.terminate()
        server.process.wait()


class _Liar(socketserver.BaseRequestHandler):
    """Greets with C{server.greeting}, then echoes instead of incrementing."""

    def handle(self) -> None:
        self.request.settimeout(10)
        self.request.sendall(self.server.greeting)  # type: ignore[attr-defined]
        data = self.request.recv(4096)
        self.request.sendall(data[1:-1])


@pytest.mark.parametrize(
    "greeting, mode, reason",
    [(b"*", "ping", "reply byte 0 is 0x61, not 0x62"),
     (b"#", "churn", "greeting was byte 0x23, not '*'"),
     (b"*x", "churn", "1 bytes after the greeting, none owed")],
)  # fmt: skip
def test_native_load_generator_checks_every_byte(
    greeting: bytes, mode: str, reason: str, tmp_path: Path
) -> None:
    load = _build(ROOT / "benchmarks" / "load" / "load.c", tmp_path, "-pthread")
    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Liar) as liar:
        liar.daemon_threads = True
        liar.greeting = greeting  # type: ignore[attr-defined]
        threading.Thread(target=liar.serve_forever, daemon=True).start()
        try:
            done = run_command(
                [load, mode, "-c", "1", "-d", "1", "-T", "10", "127.0.0.1",
                 str(liar.server_address[1])],
                tmp_path,
            )  # fmt: skip
        finally:
            liar.shutdown()
    assert done.returncode == 1
    assert done.stderr.strip() == f"load: connection 0: {reason}"


def test_held_memory_reports_bytes_per_held_connection(tmp_path: Path) -> None:
    """benchmarks/held_memory.py runs both servers, bounded (50 connections),
    and reports bytes per held connection (on CPython with the lines that
    took them)."""
    if not (shutil.which("cc") or shutil.which("gcc")):
        pytest.skip("no C compiler")
    pypy = platform.python_implementation() == "PyPy"
    done = run_command(
        [sys.executable, str(ROOT / "benchmarks" / "held_memory.py"), "-n", "50",
         "--runs", "1", "--top", "3"],
        tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    reports = re.findall(
        r"^(\w+): ([\d,]+) bytes per held connection", done.stdout, re.M
    )
    assert [name for name, _ in reports] == ["incproto", "twisted"]
    assert all(500 < int(size.replace(",", "")) < 20000 for _, size in reports), (
        done.stdout
    )
    if not pypy:  # PyPy's figure is the collector's live bytes: no lines
        assert re.search(r"^ +[\d.]+ +protocol\.py:\d+$", done.stdout, re.M)
