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
