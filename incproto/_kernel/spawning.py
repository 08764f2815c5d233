# -*- test-case-name: tests.unit.test_pools -*-
"""The C{multiprocessing} context a process pool starts its processes with:
a forkserver that has imported what they need, and that does not re-run the
server's main script.

A spawned process starts a new interpreter and imports pebble, incproto's
pool module and the handler's module: about 0.22 s of CPU each time, on the
path of every replacement of a dead process, so that clients that kill pool
processes on purpose could take most of a small machine.  A forkserver
(started once, with those modules imported) forks each new process in a
few milliseconds.  Its children are not the server's own: each closes its
copy of the forkserver's "alive" pipe and asks to die with the forkserver
(L{incproto._kernel.poolprocess.started}), so that the forkserver exits
when the server goes, and its children with it.  (incproto runs on POSIX
only, where C{multiprocessing} has forkservers.)

C{multiprocessing} prepares a new process by running the parent's
C{__main__} again (as C{__mp_main__}), so that what the main script defines
can be unpickled.  Under twistd that main script imports all of
C{twisted.scripts.twistd} (0.7 s).  A handler defined in C{__main__} still
needs it: L{pool_context} gives such a handler plain C{spawn}.

The process classes live here, light, because a new child unpickles its
process object, and so imports this module, before anything else.
"""

from __future__ import annotations

import multiprocessing
import threading
from multiprocessing import context, popen_forkserver, spawn
from typing import Any, Dict, List

_MAIN_KEYS = ("init_main_from_path", "init_main_from_name")
_launching = threading.local()
_real_preparation_data = spawn.get_preparation_data
# What a forkserver imports before it forks any process (with the handler's
# own modules).
PRELOAD = ["incproto._kernel.poolprocess", "incproto._kernel.spawning", "pebble"]


def _preparation_data(name: str) -> Dict[str, Any]:
    """C{spawn.get_preparation_data}, less the main script while a
    process of this module launches from this thread."""
    data: Dict[str, Any] = _real_preparation_data(name)
    if getattr(_launching, "withoutMain", False):
        for key in _MAIN_KEYS:
            data.pop(key, None)
    return data


class _WithoutMain:
    """A C{Popen} whose process is prepared without the main script."""

    def _launch(self, process_obj: Any) -> None:
        if spawn.get_preparation_data is not _preparation_data:
            spawn.get_preparation_data = _preparation_data
        _launching.withoutMain = True
        try:
            super()._launch(process_obj)  # type: ignore[misc]
        finally:
            _launching.withoutMain = False


class _ForkServerPopen(_WithoutMain, popen_forkserver.Popen):
    pass


class _ForkServerProcess(context.ForkServerProcess):
    _Popen = staticmethod(_ForkServerPopen)


class _ForkServerContext(context.ForkServerContext):
    Process = _ForkServerProcess


def _modules(handler: object) -> List[str]:
    function = getattr(handler, "function", handler)
    names = [type(handler).__module__, getattr(function, "__module__", None)]
    return [name for name in dict.fromkeys(names) if name]


def pool_context(handler: object) -> Any:
    """
    The context for a process pool of C{handler}: a forkserver that imports
    pebble, L{incproto._kernel.poolprocess} and C{handler}'s modules before
    it forks any process; plain C{spawn}, with the main script, if
    C{handler} (or, for a function handler, its function) was defined in
    C{__main__}.

    The forkserver is one per process, started by its first pool: a later
    pool with another handler imports that handler's modules in each of its
    processes.
    """
    modules = _modules(handler)
    if "__main__" in modules:
        return multiprocessing.get_context("spawn")
    forkserver = _ForkServerContext()
    forkserver.set_forkserver_preload(PRELOAD + modules)
    return forkserver
