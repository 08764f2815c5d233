# -*- test-case-name: tests.unit.test_pools -*-
"""A child process that dies with its parent (Linux's C{PR_SET_PDEATHSIG})."""

from __future__ import annotations

import ctypes
import sys

PR_SET_PDEATHSIG = 1


def die_with_parent(signum: int) -> bool:
    """
    Ask Linux to send this process C{signum} when its parent exits
    (C{prctl(PR_SET_PDEATHSIG)}; strictly, when the parent's thread that
    started it exits).

    @return: whether it was set (C{False} off Linux).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False
