"""The integration tier: every test here is marked C{integration}
(C{pytest -m integration}); fixtures its files share."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Generator, List, Tuple

import pytest
from twisted.internet.interfaces import IListeningPort

from tests.support.helpers import ObservedLimit, listen_on

TIER = Path(__file__).parent


def pytest_collection_modifyitems(items: List[pytest.Item]) -> None:
    for item in items:
        if TIER in item.path.parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def limited() -> Generator[Callable[..., Tuple[ObservedLimit, int]], None, None]:
    """Start an L{ObservedLimit} (its arguments given) listening on
    127.0.0.1; the limit and its port number. Stopped after the test."""
    ports: List[IListeningPort] = []

    def start(*args: Any, **kwargs: Any) -> Tuple[ObservedLimit, int]:
        limit = ObservedLimit(*args, **kwargs)
        ports.append(listen_on(limit))
        return limit, ports[-1].getHost().port

    yield start
    for port in ports:
        port.stopListening()


@pytest.fixture
def served() -> Generator[List[Any], None, None]:
    """Ports to stop listening on after the test."""
    ports: List[Any] = []
    yield ports
    for port in ports:
        port.stopListening()
