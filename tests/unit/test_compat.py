"""The import paths of incproto 0.1 that docs named keep working after the
layout moved their modules: each is an alias that warns, and
C{python -m incproto.worker} still starts a worker (a supervisor started
before an upgrade spawns its workers by that name)."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

ALIASES = {
    "incproto.offload": ("incproto.pools", "ThreadHandlerPool"),
    "incproto.service": ("incproto.serving.service", "ListenError"),
    "incproto.stack": ("incproto.serving.stack", "serving_stack"),
    "incproto.supervisor": ("incproto.workers.supervisor", "supervise"),
}


@pytest.mark.parametrize("old", sorted(ALIASES))
def test_old_import_paths_warn_and_name_the_same_objects(old: str) -> None:
    new, name = ALIASES[old]
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=f"import from {new}"):
        alias = importlib.import_module(old)
    assert getattr(alias, name) is getattr(importlib.import_module(new), name)


def test_python_m_incproto_worker_still_runs_the_worker() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "incproto.worker"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "usage: python -m incproto.workers.worker" in done.stderr
