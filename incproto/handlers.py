# -*- test-case-name: tests.test_handlers -*-
"""Payload handlers: what the server does with the bytes of a message.

The parser finds the payload (the bytes inside C{^...$}); a handler turns
payload into reply bytes.  The default is the protocol's increment.  The
others here exist for demos and benchmarks of the thread and process pools:
they reply exactly as the increment does but spend CPU first, either in C
code that releases the GIL (hashing) or in pure Python that holds it.
"""

from __future__ import annotations

import hashlib
import importlib
from typing import Any

from zope.interface import Interface, implementer

from incproto.parser import increment


class IPayloadHandler(Interface):
    """
    Turns message payload into reply bytes.

    The contract:

      - C{transform} is called with successive runs of a connection's
        payload, in order, and its results are sent in that order.
      - Output must not depend on how the stream was chunked: for any split,
        C{transform(a + b) == transform(a) + transform(b)}.  Payload arrives
        in whatever pieces the network delivers (and, with a pool, in
        batches of those pieces), so a handler that breaks this rule gives
        replies that depend on timing.
      - It may be called from any thread, and concurrently for different
        connections; it must not touch the reactor.
      - For a process pool it must be picklable (an instance of a class
        defined at module level), and is called in another process.
      - An exception closes that connection (it is logged and counted); it
        does not affect other connections.
    """

    def transform(payload: bytes) -> bytes:  # noqa: N805 (zope: no self)
        """
        Return the reply bytes owed for C{payload}.
        """


@implementer(IPayloadHandler)
class IncrementHandler:
    """
    The increment protocol itself: each byte plus one, modulo 256.
    """

    def transform(self, payload: bytes) -> bytes:
        """Increment every byte."""
        return increment(payload)

    def __repr__(self) -> str:
        return "IncrementHandler()"


@implementer(IPayloadHandler)
class HashingHandler:
    """
    CPU-heavy, GIL-releasing: C{rounds} SHA-256 passes over the payload,
    then the increment.  The cost grows with the bytes, and C{hashlib}
    releases the GIL for inputs over 2 KiB, so threads run it in parallel.

    @ivar rounds: passes of SHA-256 over each payload.
    """

    def __init__(self, rounds: int = 64) -> None:
        self.rounds = rounds

    def transform(self, payload: bytes) -> bytes:
        """Hash C{rounds} times, then increment."""
        for _ in range(self.rounds):
            hashlib.sha256(payload).digest()
        return increment(payload)

    def __repr__(self) -> str:
        return f"HashingHandler(rounds={self.rounds})"


@implementer(IPayloadHandler)
class PurePythonHandler:
    """
    CPU-heavy, GIL-holding: a per-byte Python checksum over the payload,
    C{rounds} times, then the increment.  Threads cannot run it in
    parallel; processes can.

    @ivar rounds: passes of the Python loop over each payload.
    """

    def __init__(self, rounds: int = 1) -> None:
        self.rounds = rounds

    def transform(self, payload: bytes) -> bytes:
        """Checksum in Python C{rounds} times, then increment."""
        for _ in range(self.rounds):
            checksum = 0
            for byte in payload:
                checksum = (checksum * 31 + byte) & 0xFFFFFFFF
        return increment(payload)

    def __repr__(self) -> str:
        return f"PurePythonHandler(rounds={self.rounds})"


# Ready-made instances, for --handler incproto.handlers:NAME.
increment_handler = IncrementHandler()
hashing = HashingHandler()
pure_python = PurePythonHandler()


def load_handler(name: str) -> IPayloadHandler:
    """
    Find a handler by dotted name, C{package.module:attribute}.

    The attribute is either an L{IPayloadHandler} provider or a callable
    that returns one when called with no arguments (a class, say).

    @raise ValueError: with a one-line reason if C{name} names no handler.
    """
    module_name, colon, attribute = name.partition(":")
    if not colon or not module_name or not attribute:
        raise ValueError(f"{name!r} is not of the form package.module:name")
    try:
        found: Any = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"cannot import {module_name}: {e}") from None
    for part in attribute.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise ValueError(f"{module_name} has no {attribute}") from None
    if not IPayloadHandler.providedBy(found) and callable(found):
        found = found()
    if not IPayloadHandler.providedBy(found):
        raise ValueError(f"{name} does not provide IPayloadHandler")
    return found
