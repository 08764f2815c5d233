"""A handler that tells what its pool process imported: each payload byte
is answered C{y} if Twisted's reactor side or twistd's main script is
loaded in the process running it, C{n} if not (issue 21: a pool process
that replaces a dead one must start light)."""

from __future__ import annotations

import sys

HEAVY = ("twisted.scripts.twistd", "twisted.internet.defer", "incproto.protocol")


def heavy(payload: bytes) -> bytes:
    loaded = any(name in sys.modules for name in HEAVY)
    return (b"y" if loaded else b"n") * len(payload)
