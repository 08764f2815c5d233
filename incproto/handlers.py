# -*- test-case-name: tests.unit.test_handlers -*-
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
import inspect
import os
import sys
import types
from typing import Any, Callable, Optional

from twisted.python.components import registerAdapter
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


@implementer(IPayloadHandler)
class FunctionHandler:
    """
    A plain function C{bytes -> bytes} as an L{IPayloadHandler}: what
    C{--handler module:function} gives, and the registered adapter from
    functions, so C{IPayloadHandler(f)} works.

    It pickles as a reference to the function, so a module-level function
    can run in a process pool.

    @ivar function: the function, called with each run of payload.
    """

    def __init__(self, function: Callable[[bytes], bytes]) -> None:
        self.function = function

    def transform(self, payload: bytes) -> bytes:
        """
        Call the function.

        @raise TypeError: if it returns anything but bytes.
        """
        reply = self.function(payload)
        if not isinstance(reply, bytes):
            raise TypeError(
                f"{_describe(self.function)} returned {type(reply).__name__}, not bytes"
            )
        return reply

    def __repr__(self) -> str:
        return f"FunctionHandler({_describe(self.function)})"


def _describe(function: Callable[..., Any]) -> str:
    module = getattr(function, "__module__", None)
    name = getattr(function, "__qualname__", None) or repr(function)
    return f"{module}.{name}" if module else name


registerAdapter(FunctionHandler, types.FunctionType, IPayloadHandler)

# Ready-made instances, for --handler incproto.handlers:NAME.
increment_handler = IncrementHandler()
hashing = HashingHandler()
pure_python = PurePythonHandler()


def _import(module_name: str) -> Any:
    """
    Import C{module_name} from C{sys.path} or, failing that, from the
    current directory, which is then appended to C{sys.path} (so that
    pool processes, which inherit C{sys.path}, find it too).

    @raise ValueError: with a one-line reason if it cannot be imported.
    """
    top = module_name.partition(".")[0]
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        here = os.getcwd()
        if e.name != top or here in map(os.path.abspath, sys.path):
            raise ValueError(f"cannot import {module_name}: {e}") from None
        sys.path.append(here)
    except Exception as e:
        raise ValueError(f"cannot import {module_name}: {_reason(e)}") from None
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        sys.path.remove(here)
        if e.name == top:
            raise ValueError(
                f"cannot import {module_name}: no such module on sys.path "
                f"or in the current directory ({here})"
            ) from None
        raise ValueError(f"cannot import {module_name}: {e}") from None
    except Exception as e:
        raise ValueError(f"cannot import {module_name}: {_reason(e)}") from None


def _reason(error: BaseException) -> str:
    """An exception as one line: its type and its message's first line."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def _arity(found: Callable[..., Any]) -> Optional[int]:
    """
    0 if C{found} can be called with no arguments, 1 if with one positional
    argument only, C{None} if neither or unknown.
    """
    try:
        signature = inspect.signature(found)
    except (TypeError, ValueError):
        return None
    for arguments in ((), (b"",)):
        try:
            signature.bind(*arguments)
        except TypeError:
            continue
        return len(arguments)
    return None


def load_handler(name: str) -> IPayloadHandler:
    """
    Find a handler by dotted name, C{package.module:attribute}.

    The module is imported from C{sys.path}, or else from the current
    directory.  The attribute is one of:

      - an L{IPayloadHandler} provider;
      - a function of one argument, C{bytes -> bytes}: it is the handler's
        C{transform} (adapted by L{FunctionHandler});
      - a class, or a callable of no arguments, that returns either of those.

    @raise ValueError: with a one-line reason if C{name} names no handler.
    """
    module_name, colon, attribute = name.partition(":")
    if not colon or not module_name or not attribute:
        raise ValueError(f"{name!r} is not of the form package.module:name")
    found: Any = _import(module_name)
    for part in attribute.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise ValueError(f"{module_name} has no {attribute}") from None
    if IPayloadHandler.providedBy(found):
        return found
    if not callable(found):
        kind = type(found).__name__
        article = "an" if kind[:1].lower() in "aeiou" else "a"
        raise ValueError(
            f"{name} is {article} {kind}, not a handler: give a "
            "function bytes -> bytes or an IPayloadHandler"
        )
    arity = 0 if isinstance(found, type) else _arity(found)
    if arity == 1:
        return FunctionHandler(found)
    if arity is None:
        raise ValueError(
            f"{name} takes neither one argument (the payload bytes) nor none "
            "(a factory of handlers)"
        )
    try:
        made = found()
    except Exception as e:
        raise ValueError(f"{name}() raised {_reason(e)}") from None
    if IPayloadHandler.providedBy(made):
        return made
    if callable(made) and _arity(made) == 1 and not hasattr(made, "transform"):
        return FunctionHandler(made)
    if callable(getattr(made, "transform", None)):
        raise ValueError(
            f"{name}() made a {type(made).__name__} with a transform method but "
            "no declaration: decorate its class with "
            "@zope.interface.implementer(incproto.handlers.IPayloadHandler)"
        )
    raise ValueError(
        f"{name}() returned {type(made).__name__}, not an IPayloadHandler or a "
        "function bytes -> bytes"
    )
