"""
The unit tier: every test here is marked C{unit} (C{pytest -m unit}), and
none may use the network or start a process. A test that connects, binds or
listens a real socket, or starts a subprocess, fails with the rule it broke:
it belongs in tests/integration (real sockets, one process) or tests/e2e
(real processes). A C{socket.socketpair} is allowed (it is made without
C{connect}, C{bind} or C{listen}); no unit test needs one today.
"""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path
from typing import Any, Callable, Iterator, List

import pytest

TIER = Path(__file__).parent
RULE = (
    "tests/unit: no real network and no processes (docs/testing.md); "
    "move this test to tests/integration or tests/e2e"
)


def pytest_collection_modifyitems(items: List[pytest.Item]) -> None:
    for item in items:
        if TIER in item.path.parents:
            item.add_marker(pytest.mark.unit)


def refused(what: str) -> Callable[..., Any]:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"a unit test tried to {what}: {RULE}")

    return refuse


@pytest.fixture(autouse=True)
def no_network_or_processes(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Make opening a real network socket, or starting a process, fail."""
    for method in ("connect", "connect_ex", "bind", "listen"):
        monkeypatch.setattr(socket.socket, method, refused(f"{method} a socket"))
    monkeypatch.setattr(subprocess.Popen, "__init__", refused("start a process"))
    for name in ("fork", "forkpty", "posix_spawn", "posix_spawnp"):
        if hasattr(os, name):
            monkeypatch.setattr(os, name, refused(f"start a process (os.{name})"))
    yield
