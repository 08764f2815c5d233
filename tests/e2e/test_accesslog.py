"""The access log file of a real twistd."""

from __future__ import annotations

import re
import socket
from pathlib import Path


def test_twistd_writes_the_access_log_file_by_stop(tmp_path: Path) -> None:
    """
    A real twistd with C{--access-log PATH}: the line of a connection is in
    the file once the server has stopped, and not in twistd's own log.
    """
    from tests.support.processes import (
        connect,
        receive_all,
        receive_exactly,
        start_incproto,
    )

    path = tmp_path / "access.log"
    server = start_incproto("--access-log", str(path), cwd=tmp_path)
    with connect(server.port) as client:
        assert receive_exactly(client, 1) == b"*"
        client.sendall(b"^abc$")
        assert receive_exactly(client, 3) == b"bcd"
        client.shutdown(socket.SHUT_WR)
        assert receive_all(client) == b""
    server.stop()
    [line] = path.read_text().splitlines()
    assert re.search(
        r"connection from 127\.0\.0\.1:\d+ closed \(client closed\) after "
        r"[0-9.]+s: 5 bytes in, 4 bytes out$",
        line,
    ), line
    assert "closed (client closed)" not in server.output
