"""Handlers for tests and benchmarks of what a handler's reply costs:
C{hundredfold} answers each byte with 100 copies of its increment (it keeps
the handler contract: any split of the payload gives the same reply), and
C{leaky} increments but keeps 1 MiB for ever on each call.  Importable by
name from twistd: C{--handler tests.support.amplifying:hundredfold}."""

from __future__ import annotations

from typing import List

from incproto.parser import increment

FACTOR = 100
_COPIES = [bytes([(value + 1) % 256]) * FACTOR for value in range(256)]
_LEAKED: List[bytes] = []


def hundredfold(payload: bytes) -> bytes:
    """Each byte's increment, C{FACTOR} times."""
    return b"".join([_COPIES[value] for value in payload])


def leaky(payload: bytes) -> bytes:
    """The increment, leaking 1 MiB (written, so resident) per call."""
    _LEAKED.append(b"\x01" * (1 << 20))
    return increment(payload)
