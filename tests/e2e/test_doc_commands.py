"""Every command and example in README.md and docs/*.md, extracted and run or
checked, so that the documentation cannot drift from the code.

What each kind gets:

  - twistd/twist command lines are run for real, on a free loopback port
    (9090 and the other documented ports are replaced), in a scratch
    directory holding the documented example files; the server must log
    that it listens and, on plain TCP, answer C{^abc$}.
  - C{$} examples with a fixed output (C{printf ... | nc}, usage errors) are
    run and their output compared.
  - incproto-client command lines are parsed by its own parser, which
    checks everything it can before connecting.
  - benchmark scripts' command lines are parsed by their own parsers
    (stopped right after parsing, so nothing is measured).
  - pip extras, test modules and files named by the development commands
    must exist; Python code blocks must compile and their imports resolve;
    a block shown as the content of a file must equal that file.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import importlib.util
import re
import runpy
import shlex
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest

from incproto.client.cli import parse as parse_client
from incproto.tap import Options
from tests.support.processes import (
    TIMEOUT,
    ServerProcess,
    half_close_round_trip,
    run_command,
    script,
    start_incproto,
)

ROOT = Path(__file__).resolve().parent.parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LOOPBACK = "tcp:0:interface=127.0.0.1"
EXTRAS = ("test", "dev", "bench", "tls", "mutation")

# Indented blocks that are not commands: (document, first line).
NOT_COMMANDS = {
    ("README.md", "endpoint -> (ProxyEndpoint) -> (ConnectionLimit) -> "
     "IncrementProtocol"),
    ("client.md", "0.001s  #1    connected"),  # the output of the command above it
    ("client.md", "incproto-client: connection 1: lost (TLS: certificate verify "
     "failed) before the greeting"),  # an error message, quoted
}  # fmt: skip


@dataclass
class Block:
    """A code block of a document."""

    document: str
    line: int
    lines: List[str]
    language: Optional[str] = None  # fenced blocks only
    before: str = ""  # the paragraph just before it

    @property
    def id(self) -> str:
        return f"{self.document}:{self.line}"


@dataclass
class Command:
    """One command line of a block, with the output documented after it."""

    block: Block
    text: str
    prompt: bool
    comment: str = ""
    output: List[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        return f"{self.block.id}:{self.text[:40]}"


def blocks() -> List[Block]:
    """Every indented and fenced code block of the documents."""
    found = []
    for path in DOCUMENTS:
        lines = path.read_text().splitlines()
        name = path.name
        i = 0
        paragraph: List[str] = []
        last: List[str] = []
        while i < len(lines):
            line = lines[i]
            if line.startswith("```"):
                start = i
                i += 1
                body = []
                while not lines[i].startswith("```"):
                    body.append(lines[i])
                    i += 1
                before = " ".join(paragraph or last)
                found.append(Block(name, start + 1, body, line[3:].strip(), before))
                paragraph, last = [], []
            elif line.startswith("    ") and (i == 0 or not lines[i - 1].strip()):
                start = i
                body = []
                while i < len(lines) and (
                    lines[i].startswith("    ") or not lines[i].strip()
                ):
                    body.append(lines[i][4:])
                    i += 1
                while body and not body[-1].strip():
                    body.pop()
                found.append(
                    Block(name, start + 1, body, None, " ".join(paragraph or last))
                )
                paragraph, last = [], []
                continue
            elif line.strip():
                paragraph.append(line.strip())
            elif paragraph:
                paragraph, last = [], paragraph
            i += 1
    return found


def commands() -> List[Command]:
    """Every command line of the indented blocks (continuations joined)."""
    found: List[Command] = []
    for block in blocks():
        if block.language is not None:
            continue
        if (block.document, block.lines[0].strip()) in NOT_COMMANDS:
            continue
        current: Optional[Command] = None
        pending = ""
        for raw in block.lines:
            line = raw.rstrip()
            if pending:
                line, pending = pending + " " + line.strip(), ""
            if line.endswith("\\"):
                pending = line[:-1].rstrip()
                continue
            prompt = line.startswith("$ ")
            if current is not None and current.prompt and not prompt:
                current.output.append(line)
                continue
            text, _, comment = (line[2:] if prompt else line).partition(" # ")
            current = Command(block, text.strip(), prompt, comment.strip())
            found.append(current)
    return found


def python_blocks() -> List[Block]:
    return [b for b in blocks() if b.language == "python"]


def named_files() -> Dict[str, str]:
    """Example files the documents show: a Python block that starts with
    C{# NAME.py}, or follows "save this as C{NAME.py}"."""
    files = {}
    for block in python_blocks():
        first = block.lines[0].strip()
        saved = re.search(r"[Ss]ave this as `([\w.]+\.py)`", block.before)
        if re.fullmatch(r"# [\w.]+\.py", first):
            files[first[2:]] = "\n".join(block.lines) + "\n"
        elif saved:
            files[saved.group(1)] = "\n".join(block.lines) + "\n"
    return files


# Runners ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Any:
    process = start_incproto()
    yield process
    process.stop()


def scratch(tmp_path: Path) -> Path:
    """A directory with the documented example files, and a key and
    certificate for the TLS example."""
    for name, text in named_files().items():
        (tmp_path / name).write_text(text)
    if importlib.util.find_spec("cryptography"):
        from tests.support.certificates import make_certificate

        make_certificate(tmp_path)
    return tmp_path


def on_loopback(argv: List[str]) -> List[str]:
    """Documented ports replaced by free loopback ones."""
    out = []
    for arg in argv:
        arg = re.sub(r"^(tcp:)?9\d\d\d$", LOOPBACK, arg)
        arg = re.sub(r"^ssl:9\d\d\d:", "ssl:0:interface=127.0.0.1:", arg)
        arg = re.sub(r"^haproxy:tcp:9\d\d\d:", "haproxy:tcp:0:", arg)
        out.append(arg)
    return out


def run_server(argv: List[str], env: Dict[str, str], cwd: Path) -> None:
    """Start a documented server, check that it listens (and answers), stop it."""
    argv = on_loopback([a for a in argv if a != "[other options]"])
    program = Path(argv[0]).name
    argv[0] = script(program)
    if env:
        argv = ["env", *(f"{k}={v}" for k, v in env.items()), *argv]
    process = ServerProcess(argv, cwd)
    try:
        port = argv[argv.index("--port") + 1] if "--port" in argv else LOOPBACK
        if port == LOOPBACK:
            reply = half_close_round_trip(process.port, b"^abc$")
            expected = b"*ABC" if "shout:shout" in argv else b"*bcd"
            assert reply == expected, process.output
    finally:
        status = process.stop()
    assert status in (-signal.SIGTERM, 0), process.output
    assert "Traceback" not in process.output, process.output


def run_usage_error(command: Command, argv: List[str], cwd: Path) -> None:
    """A server command line shown with its output: a usage error, run and
    compared (the program as the document names it)."""
    real = script(Path(argv[0]).name)
    done = run_command([real, *argv[1:]], cwd)
    assert "Traceback" not in done.stdout + done.stderr
    output = (done.stdout + done.stderr).replace(real, argv[0])
    assert output.splitlines() == command.output


class _ParsedError(Exception):
    pass


def check_script_arguments(argv: List[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Run a script's main() only as far as its argument parsing."""
    path = ROOT / argv[0]
    assert path.exists(), argv[0]
    original = argparse.ArgumentParser.parse_known_args

    def parse_known_args(self: Any, *args: Any, **kwargs: Any) -> Any:
        original(self, *args, **kwargs)
        raise _ParsedError

    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", parse_known_args)
    monkeypatch.setattr(sys, "argv", [str(path), *argv[1:]])
    monkeypatch.setattr(sys, "path", list(sys.path))
    with pytest.raises(_ParsedError):
        runpy.run_path(str(path), run_name="__main__")


def check_development(argv: List[str]) -> None:
    """The venv, pip, pytest, trial, ruff, mypy and CI commands."""
    setup = (ROOT / "setup.py").read_text()
    program = Path(argv[0]).name
    if program.startswith("python") and argv[1:3] == ["-m", "venv"]:
        return
    if program == "pip":
        assert argv[1] == "install"
        for target in argv[2:]:
            if target == "-e":
                continue
            name = re.fullmatch(r"\.(?:\[(\w+)\])?", target)
            assert name, target
            assert name.group(1) is None or f'"{name.group(1)}":' in setup, target
        return
    if program.startswith("python") and argv[1:3] == ["-m", "pytest"]:
        for path in argv[3:]:
            assert (ROOT / path).exists(), path
        return
    if program.startswith("python") and argv[1:3] == ["-m", "twisted.trial"]:
        for module in argv[3:]:
            assert importlib.util.find_spec(module), module
        return
    if program in ("ruff", "mypy", "pydoctor"):
        assert re.search(rf'"{program}[>=<"]', setup) or (
            program == "mypy" and "mypy-zope" in setup
        ), program
        return
    if program == "bash":
        assert (ROOT / argv[1]).exists(), argv[1]
        return
    if program == "nice" and argv[1] == "-n":
        check_development(argv[3:])
        return
    if program == "mutmut":
        assert '"mutmut' in setup or "'mutmut" in setup, program
        assert argv[1] in ("run", "results", "show"), argv
        assert "[tool.mutmut]" in (ROOT / "pyproject.toml").read_text()
        return
    raise AssertionError(f"no check for {argv}")


def run_pipeline(command: Command, port: int) -> None:
    """A C{$ printf ... | nc} example, against a running server."""
    if not shutil.which("nc"):
        pytest.skip("needs nc")
    text = command.text.replace("9090", str(port))
    done = subprocess.run(
        text, shell=True, capture_output=True, text=True, timeout=TIMEOUT, cwd=ROOT
    )
    expected = command.output or [command.comment.removeprefix("prints ")]
    assert done.stdout.splitlines() == expected, done.stderr


SERVERS = ("twistd", "twist")
DEVELOPMENT = (
    "python3",
    "python",
    "pip",
    "ruff",
    "mypy",
    "pydoctor",
    "bash",
    "nice",
    "mutmut",
)


@pytest.mark.parametrize("command", commands(), ids=lambda c: c.id)
def test_documented_command(
    command: Command, server: ServerProcess, tmp_path: Path, monkeypatch: Any
) -> None:
    for part in command.text.replace(" [other options]", "").split("&&"):
        argv = shlex.split(part)
        env = {}
        while argv and re.fullmatch(r"\w+=.*", argv[0]):
            name, _, value = argv.pop(0).partition("=")
            env[name] = value
        if argv[0] == "sudo":
            argv.pop(0)
        program = Path(argv[0]).name
        if program in SERVERS and command.output:
            run_usage_error(command, argv, tmp_path)
        elif program in SERVERS or argv[1:3] == ["-m", "incproto"]:
            run_server(argv, env, scratch(tmp_path))
        elif program == "systemd-socket-activate":
            run_socket_activated(argv, tmp_path)
        elif program == "printf":
            run_pipeline(command, server.port)
        elif program == "incproto-client":
            run_client(command, argv, tmp_path)
        elif program.startswith("python") and argv[1].startswith("benchmarks/"):
            check_script_arguments(argv[1:], monkeypatch)
        elif program.startswith("python") and argv[1].startswith("docs/examples/"):
            run_example(argv[1:], tmp_path)
        elif program in DEVELOPMENT or program.startswith("python"):
            check_development(argv)
        elif argv[0] == "--port":
            # An option shown alone: it must parse (systemd: passed no
            # socket here, so the endpoint is not checked).
            monkeypatch.setattr("incproto.tap._check_endpoint", lambda *_: None)
            Options.parse(argv)
        else:
            raise AssertionError(f"{command.id}: no runner for {program}")


def run_client(command: Command, argv: List[str], tmp_path: Path) -> None:
    """Parse an incproto-client line; run one whose documented output is a
    usage error, and compare."""
    if command.output and "error:" in command.output[0]:
        done = run_command([script("incproto-client"), *argv[1:]], tmp_path)
        assert done.returncode == 2
        assert done.stderr.splitlines() == command.output
        return
    try:
        parse_client(argv[1:])
    except SystemExit as e:
        raise AssertionError(f"{command.text}: usage error {e}") from None


def run_example(argv: List[str], tmp_path: Path) -> None:
    """A documented example program: it must serve on every port it names."""
    process = ServerProcess(
        [sys.executable, str(ROOT / argv[0]), *on_loopback(argv[1:])],
        tmp_path,
        re.compile(rb"(?s)on port (\d+).*on port (\d+)"),
    )
    try:
        for port in process.match.groups():
            assert half_close_round_trip(int(port), b"^abc$") == b"*bcd"
    finally:
        process.stop()


def run_socket_activated(argv: List[str], tmp_path: Path) -> None:
    if not shutil.which("systemd-socket-activate"):
        pytest.skip("needs systemd-socket-activate")
    with __import__("socket").socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    argv = [a.replace("127.0.0.1:9090", f"127.0.0.1:{port}") for a in argv]
    twistd = argv.index("twistd")
    argv[twistd] = script("twistd")
    process = ServerProcess(
        argv, tmp_path, re.compile(rb"Listening on 127\.0\.0\.1:(\d+)")
    )
    try:
        assert half_close_round_trip(port, b"^abc$") == b"*bcd"
    finally:
        process.stop()
    assert "Traceback" not in process.output, process.output


# Code blocks and structure ----------------------------------------------------


@pytest.mark.parametrize("block", python_blocks(), ids=lambda b: b.id)
def test_python_block_compiles_and_imports(block: Block) -> None:
    source = "\n".join(block.lines)
    tree = compile(
        source, block.id, "exec", ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    )
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name) or importlib.util.find_spec(
                    f"{node.module}.{alias.name}"
                ), f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                importlib.import_module(alias.name)


def test_blocks_shown_as_files_are_those_files() -> None:
    """A non-Python fenced block right after a link to a file is that file."""
    checked = 0
    for block in blocks():
        if block.language is None or block.language == "python":
            continue
        link = re.findall(r"\]\(([\w/.-]+)\)", block.before)
        assert link, f"{block.id}: a fenced block that names no file"
        shown = ROOT / "docs" / link[-1]
        assert "\n".join(block.lines) + "\n" == shown.read_text(), block.id
        checked += 1
    assert checked >= 1


def test_quick_start_is_two_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1].split("Then, from another", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("    ")]
    assert len(lines) == 2, lines


def test_links_resolve() -> None:
    """Every relative link of the documents names a file that exists."""
    broken = []
    for path in DOCUMENTS:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", path.read_text()):
            if "://" not in target and not (path.parent / target).exists():
                broken.append(f"{path.name}: {target}")
    assert broken == []


def test_every_command_has_a_runner() -> None:
    """The extraction finds the commands (a broken extractor passes nothing)."""
    found = commands()
    assert len(found) >= 40
    assert sum(Path(shlex.split(c.text)[0]).name in SERVERS for c in found) >= 8
