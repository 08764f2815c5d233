"""The import paths of incproto 0.1 that docs named keep working after the
layout moved their modules: each is an alias that warns."""

from __future__ import annotations

import importlib
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
