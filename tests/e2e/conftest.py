"""The end-to-end tier: every test here is marked C{e2e} (C{pytest -m e2e})."""

from __future__ import annotations

from pathlib import Path
from typing import List

import pytest

TIER = Path(__file__).parent


def pytest_collection_modifyitems(items: List[pytest.Item]) -> None:
    for item in items:
        if TIER in item.path.parents:
            item.add_marker(pytest.mark.e2e)
