# -*- test-case-name: tests.unit.test_pools -*-
"""A C{spawn} multiprocessing context whose processes start without
re-running the server's main script.

C{multiprocessing} starts a spawned process by running the parent's
C{__main__} again (as C{__mp_main__}), so that what the main script defines
can be unpickled.  Under twistd that main script imports all of
C{twisted.scripts.twistd}: about 0.7 s of a pool process's 1.3 s start, on
the path of every replacement of a dead process.  A handler defined in
C{__main__} still needs it: L{spawn_context} keeps it then.

The process classes live here, light, because the child unpickles its
process object, and so imports this module, before anything else.
"""

from __future__ import annotations

import multiprocessing
import threading
from multiprocessing import context, popen_spawn_posix, spawn
from typing import Any, Dict

_MAIN_KEYS = ("init_main_from_path", "init_main_from_name")
_launching = threading.local()
_real_preparation_data = spawn.get_preparation_data


def _preparation_data(name: str) -> Dict[str, Any]:
    """C{spawn.get_preparation_data}, less the main script while a
    L{_Popen} of this thread launches."""
    data: Dict[str, Any] = _real_preparation_data(name)
    if getattr(_launching, "withoutMain", False):
        for key in _MAIN_KEYS:
            data.pop(key, None)
    return data


class _Popen(popen_spawn_posix.Popen):
    def _launch(self, process_obj: Any) -> None:
        if spawn.get_preparation_data is not _preparation_data:
            spawn.get_preparation_data = _preparation_data
        _launching.withoutMain = True
        try:
            super()._launch(process_obj)  # type: ignore[misc]
        finally:
            _launching.withoutMain = False


class _Process(context.SpawnProcess):
    @staticmethod
    def _Popen(process_obj: Any) -> Any:
        return _Popen(process_obj)


class _Context(context.SpawnContext):
    Process = _Process


def spawn_context(handler: object) -> Any:
    """
    The C{spawn} context for a pool of C{handler}: its processes start
    without the main script, unless C{handler} (or, for a function handler,
    its function) was defined in C{__main__}.
    """
    function = getattr(handler, "function", handler)
    modules = {type(handler).__module__, getattr(function, "__module__", None)}
    if "__main__" in modules:
        return multiprocessing.get_context("spawn")
    return _Context()
