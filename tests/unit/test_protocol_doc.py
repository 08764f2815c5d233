"""docs/protocol.md, the normative text: its worked examples, read from the
document and played in order on one connection; and README's short table,
the same way."""

from __future__ import annotations

import re
from pathlib import Path
from typing import List, Tuple

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from incproto import IncrementFactory
from tests.support.fakes import connect_to

ROOT = Path(__file__).resolve().parent.parent.parent
PROTOCOL_MD = ROOT / "docs" / "protocol.md"
README_MD = ROOT / "README.md"
# A cell: `literal` and 0xNN tokens, or "(nothing)", or "(connect)".
TOKEN = re.compile(r"`([^`]*)`|0x([0-9A-Fa-f]{2})|(\(nothing\))|(\(connect\))")


def cell_bytes(cell: str) -> bytes:
    """The bytes a table cell stands for."""
    out = bytearray()
    position = 0
    for match in TOKEN.finditer(cell):
        assert not cell[position : match.start()].strip(), cell
        literal, hexadecimal = match.group(1), match.group(2)
        if literal is not None:
            out += literal.encode("ascii")
        elif hexadecimal is not None:
            out.append(int(hexadecimal, 16))
        position = match.end()
    assert not cell[position:].strip(), cell
    return bytes(out)


def worked_examples(
    path: Path = PROTOCOL_MD, heading: str = "## Worked examples"
) -> List[Tuple[str, str]]:
    """The rows of the table under C{heading}, as (sent, received), with
    the header row first."""
    section = path.read_text().split(heading, 1)[1]
    section = section.split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    cells = [[c.strip() for c in row.strip("|").split("|")] for row in rows]
    return [(sent, received) for sent, received in cells[:1] + cells[2:]]


def play(test: SynchronousTestCase, rows: List[Tuple[str, str]]) -> None:
    """Send each row's bytes after the one before, on one connection, and
    check the server's answer to each."""
    test.assertEqual(rows[0], ("(connect)", "`*`"))
    protocol, transport = connect_to(IncrementFactory(clock=Clock()))
    test.assertEqual(transport.value(), cell_bytes(rows[0][1]))
    for sent, received in rows[1:]:
        transport.clear()
        protocol.dataReceived(cell_bytes(sent))
        test.assertEqual(transport.value(), cell_bytes(received), sent)


class WorkedExampleTests(SynchronousTestCase):
    def test_table_plays_on_one_connection(self) -> None:
        rows = worked_examples()[1:]
        self.assertGreaterEqual(len(rows), 8)
        play(self, rows)

    def test_readmes_table_plays_on_one_connection_and_says_so(self) -> None:
        """README's short table holds only on one connection, in order
        (its last row continues the message the row before opened): its
        header says so."""
        header, *rows = worked_examples(README_MD, "## The protocol in brief")
        self.assertEqual(header[0], "client sends (one connection, in order)")
        self.assertEqual(len(rows), 4)
        play(self, rows)

    def test_wrapping_is_in_the_table(self) -> None:
        """0xFF comes back as 0x00, and the table says so."""
        self.assertIn(("`^` 0xFF 0x00 `$`", "0x00 0x01"), worked_examples())

    def test_cells(self) -> None:
        self.assertEqual(cell_bytes("`^` 0xFF `$`"), b"^\xff$")
        self.assertEqual(cell_bytes("(nothing)"), b"")


class ReferencesTests(SynchronousTestCase):
    def test_no_reference_to_a_missing_protocol_md(self) -> None:
        root = PROTOCOL_MD.parent.parent
        files = [
            root / "README.md",
            *root.glob("docs/*.md"),
            *root.glob("tests/**/*.py"),
        ]
        citing = [
            str(path.relative_to(root))
            for path in files
            if "PROTOCOL" + ".md" in path.read_text()
        ]
        self.assertEqual(citing, [])
