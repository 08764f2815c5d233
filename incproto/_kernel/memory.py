# -*- test-case-name: tests.unit.test_protocol -*-
"""Giving freed memory back to the system (glibc's C{malloc_trim})."""

from __future__ import annotations

import ctypes
import sys
from typing import Any, Optional

_trim: Optional[Any] = None
_looked = False


def give_back() -> bool:
    """
    Return the C heap's free memory to the system, as far as the allocator
    can (glibc keeps freed chunks below its mmap threshold for reuse: after
    connections that held megabytes close, the process stays that large).

    @return: whether anything was released (C{False} without glibc).
    """
    global _trim, _looked
    if not _looked:
        _looked = True
        if sys.platform.startswith("linux"):
            try:
                _trim = ctypes.CDLL(None).malloc_trim
            except (OSError, AttributeError):
                _trim = None
    if _trim is None:
        return False
    return bool(_trim(0))
