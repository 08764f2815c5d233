"""docs/protocol.md, the normative text: its worked examples, read from the
document and played in order on one connection."""

from __future__ import annotations

import re
from pathlib import Path
from typing import List, Tuple

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from incproto import IncrementFactory
from tests.support.fakes import connect_to

PROTOCOL_MD = Path(__file__).resolve().parent.parent.parent / "docs" / "protocol.md"
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


def worked_examples() -> List[Tuple[str, str]]:
    """The rows of the table under "Worked examples", as (sent, received)."""
    section = PROTOCOL_MD.read_text().split("## Worked examples", 1)[1]
    section = section.split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    cells = [[c.strip() for c in row.strip("|").split("|")] for row in rows]
    return [(sent, received) for sent, received in cells[2:]]


class WorkedExampleTests(SynchronousTestCase):
    def test_table_plays_on_one_connection(self) -> None:
        rows = worked_examples()
        self.assertEqual(rows[0], ("(connect)", "`*`"))
        self.assertGreaterEqual(len(rows), 8)
        protocol, transport = connect_to(IncrementFactory(clock=Clock()))
        self.assertEqual(transport.value(), cell_bytes(rows[0][1]))
        for sent, received in rows[1:]:
            transport.clear()
            protocol.dataReceived(cell_bytes(sent))
            self.assertEqual(transport.value(), cell_bytes(received), sent)

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
