"""The documentation's examples run as documented."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from tests.support.processes import ServerProcess, half_close_round_trip

DOCS = Path(__file__).resolve().parent.parent.parent / "docs"
LOOPBACK = "tcp:0:interface=127.0.0.1"


def test_embedding_example_is_the_documented_one() -> None:
    example = (DOCS / "examples" / "embed.py").read_text()
    assert example in (DOCS / "embedding.md").read_text()


def test_embedding_example_serves_both_ways(tmp_path: Path) -> None:
    process = ServerProcess(
        [sys.executable, str(DOCS / "examples" / "embed.py"), LOOPBACK, LOOPBACK],
        tmp_path,
        re.compile(rb"factory on port (\d+)\nservice on port (\d+)"),
    )
    try:
        for port in process.match.groups():
            assert half_close_round_trip(int(port), b"^abc$") == b"*bcd"
    finally:
        process.stop()


def test_example_commands_name_the_venvs_python() -> None:
    """The example imports Twisted and incproto: every documented command
    that runs it says to run it with the virtual environment's Python."""
    root = DOCS.parent
    texts = [
        root / "README.md",
        *sorted(DOCS.glob("*.md")),
        DOCS / "examples" / "embed.py",
    ]
    pythons = [
        python
        for path in texts
        for python in re.findall(
            r"(\S*python\S*) docs/examples/embed\.py", path.read_text()
        )
    ]
    assert len(pythons) >= 3, pythons
    assert {python.lstrip("`(") for python in pythons} == {".venv/bin/python"}


def test_the_example_needs_the_python_incproto_is_installed_in(
    tmp_path: Path,
) -> None:
    """Without the environment's packages (here: without site-packages),
    the example stops at its imports, as docs/embedding.md says."""
    import subprocess

    done = subprocess.run(
        [sys.executable, "-S", str(DOCS / "examples" / "embed.py")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 1
    assert "ModuleNotFoundError: No module named 'twisted'" in done.stderr
