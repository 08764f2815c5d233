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

from zope.interface import Interface, implementer
from zope.interface.interface import adapter_hooks

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
      - It returns C{bytes}.  Anything else (C{str}, C{None}, ...) is a
        handler error, as an exception is: under every runner (inline,
        threads, processes) that connection is closed, the error counted
        and logged (see L{checked_reply}); other connections are not
        affected.
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

        @raise HandlerReplyError: if it returns anything but bytes.
        """
        return checked_reply(self, self.function(payload))

    def __repr__(self) -> str:
        return f"FunctionHandler({_describe(self.function)})"


class HandlerReplyError(TypeError):
    """
    A handler returned something other than C{bytes}: a handler error, as
    if it had raised.  The message names the handler and what it returned.
    """


def describe_handler(handler: object) -> str:
    """
    A handler's name for a log line: a function handler's dotted name, a
    handler's own C{repr} if its class defines one, else its class's
    dotted name.
    """
    if isinstance(handler, FunctionHandler):
        return _describe(handler.function)
    kind = type(handler)
    if kind.__repr__ is not object.__repr__:
        return repr(handler)
    return f"{kind.__module__}.{kind.__qualname__}"


def checked_reply(handler: object, reply: object) -> bytes:
    """
    The one check of a handler's reply, made by every runner (inline,
    threads, processes) on whatever C{handler.transform} returned.

    @return: C{reply}, if it is C{bytes}.
    @raise HandlerReplyError: if it is not, naming C{handler}.
    """
    if isinstance(reply, bytes):
        return reply
    raise HandlerReplyError(
        f"handler {describe_handler(handler)} returned "
        f"{type(reply).__name__}, not bytes"
    )


def _describe(function: Callable[..., Any]) -> str:
    module = getattr(function, "__module__", None)
    name = getattr(function, "__qualname__", None) or repr(function)
    return f"{module}.{name}" if module else name


def _adapt_function(interface: Any, found: Any) -> Optional[IPayloadHandler]:
    """
    Adapt a plain function to L{IPayloadHandler} (C{IPayloadHandler(f)}).
    A zope adapter hook, not Twisted's C{registerAdapter}: a pool process
    imports this module, and must not pay for C{twisted.python.components}.
    """
    if interface is IPayloadHandler and isinstance(found, types.FunctionType):
        return FunctionHandler(found)
    return None


adapter_hooks.append(_adapt_function)

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
