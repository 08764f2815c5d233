"""Handlers that break the contract on demand, one of each kind that
C{--handler} loads (a function, a class, an instance), all picklable, for
tests that every runner treats their faults alike (issue 22).

The payload says what goes wrong: C{s} replies with C{str}, C{n} with
C{None}, C{x} raises L{HandlerBrokeError}; anything else is incremented.
"""

from __future__ import annotations

from typing import Any

from zope.interface import implementer

from incproto.handlers import IPayloadHandler
from incproto.parser import increment


class HandlerBrokeError(Exception):
    """What a handler here raises on C{x}."""


def misbehave(payload: bytes) -> Any:
    if b"s" in payload:
        return payload.decode()
    if b"n" in payload:
        return None
    if b"x" in payload:
        raise HandlerBrokeError("the handler broke on purpose")
    return increment(payload)


def bad_function(payload: bytes) -> bytes:
    """The function kind."""
    return misbehave(payload)  # type: ignore[no-any-return]


@implementer(IPayloadHandler)
class BadClass:
    """The class kind (and, made once below, the instance kind)."""

    def transform(self, payload: bytes) -> bytes:
        return misbehave(payload)  # type: ignore[no-any-return]


bad_instance = BadClass()
