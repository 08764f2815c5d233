"""Tests for incproto.handlers: the contract, the examples, loading by name."""

from __future__ import annotations

import os
import pickle
import shutil
import sys
import tempfile
from typing import Any, Callable

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from incproto.handlers import (
    FunctionHandler,
    HashingHandler,
    IncrementHandler,
    IPayloadHandler,
    PurePythonHandler,
    hashing,
    load_handler,
)
from incproto.parser import increment

HANDLERS = [IncrementHandler(), HashingHandler(rounds=3), PurePythonHandler(rounds=2)]


class Broken:
    """Not a handler."""


def upper(payload: bytes) -> bytes:
    """A plain function handler, as users write them."""
    return payload.upper()


def make_upper() -> Callable[[bytes], bytes]:
    """A factory of a plain function handler."""
    return upper


def to_text(payload: bytes) -> Any:
    return payload.decode()


def two_arguments(payload: bytes, extra: bytes) -> bytes:
    return payload + extra


def failing_factory() -> IPayloadHandler:
    raise RuntimeError("no configuration\nsecond line")


class Undeclared:
    """Has transform, lacks @implementer(IPayloadHandler)."""

    def transform(self, payload: bytes) -> bytes:
        return payload


not_callable = 42


class ExampleTests(SynchronousTestCase):
    @given(st.binary(max_size=5000), st.integers(0, 5000))
    def test_every_example_replies_like_the_increment(
        self, payload: bytes, cut: int
    ) -> None:
        for handler in HANDLERS:
            self.assertTrue(IPayloadHandler.providedBy(handler))
            self.assertEqual(handler.transform(payload), increment(payload))
            self.assertEqual(
                handler.transform(payload[:cut]) + handler.transform(payload[cut:]),
                handler.transform(payload),
            )

    def test_picklable_for_processes(self) -> None:
        for handler in HANDLERS:
            copy = pickle.loads(pickle.dumps(handler))
            self.assertEqual(repr(copy), repr(handler))


class LoadTests(SynchronousTestCase):
    def test_instance_by_name(self) -> None:
        self.assertIs(load_handler("incproto.handlers:hashing"), hashing)

    def test_class_by_name_is_instantiated(self) -> None:
        self.assertIsInstance(
            load_handler("incproto.handlers:PurePythonHandler"), PurePythonHandler
        )

    def test_errors_are_one_line(self) -> None:
        for name, reason in [
            ("incproto.handlers", "is not of the form package.module:name"),
            ("no.such.module:x", "cannot import no.such.module"),
            ("incproto.handlers:nothing", "incproto.handlers has no nothing"),
            (
                "tests.unit.test_handlers:Broken",
                "tests.unit.test_handlers:Broken() returned Broken, not an "
                "IPayloadHandler or a function bytes -> bytes",
            ),
            (
                "tests.unit.test_handlers:Undeclared",
                "made a Undeclared with a transform method but no declaration: "
                "decorate its class with @zope.interface.implementer("
                "incproto.handlers.IPayloadHandler)",
            ),
            (
                "tests.unit.test_handlers:failing_factory",
                "tests.unit.test_handlers:failing_factory() raised RuntimeError: "
                "no configuration",
            ),
            (
                "tests.unit.test_handlers:two_arguments",
                "takes neither one argument (the payload bytes) nor none",
            ),
            ("tests.unit.test_handlers:not_callable", "is an int, not a handler"),
            ("incproto.no_such:x", "No module named 'incproto.no_such'"),
        ]:
            error = self.assertRaises(ValueError, load_handler, name)
            self.assertIn(reason, str(error))
            self.assertNotIn("\n", str(error))

    def test_function_is_the_transform(self) -> None:
        handler = load_handler("tests.unit.test_handlers:upper")
        self.assertTrue(IPayloadHandler.providedBy(handler))
        self.assertEqual(handler.transform(b"abc"), b"ABC")
        self.assertEqual(
            repr(handler), "FunctionHandler(tests.unit.test_handlers.upper)"
        )

    def test_factory_of_a_function(self) -> None:
        handler = load_handler("tests.unit.test_handlers:make_upper")
        self.assertEqual(handler.transform(b"x"), b"X")

    def test_functions_adapt(self) -> None:
        self.assertEqual(IPayloadHandler(upper).transform(b"q"), b"Q")

    def test_function_handler_pickles_by_reference(self) -> None:
        """A module-level function can run in a process pool."""
        copy = pickle.loads(pickle.dumps(FunctionHandler(upper)))
        self.assertIs(copy.function, upper)
        self.assertRaises(
            (pickle.PicklingError, AttributeError),
            pickle.dumps,
            FunctionHandler(lambda b: b),
        )

    def test_function_returning_text_is_one_line(self) -> None:
        error = self.assertRaises(TypeError, FunctionHandler(to_text).transform, b"abc")
        self.assertEqual(
            str(error),
            "handler tests.unit.test_handlers.to_text returned str, not bytes",
        )


class CurrentDirectoryTests(SynchronousTestCase):
    """A module in the current directory is found without PYTHONPATH."""

    def setUp(self) -> None:
        # Not trial's mktemp(), which under pytest writes into the checkout.
        self.directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.directory)
        self.name = f"userhandler_{os.getpid()}"
        with open(os.path.join(self.directory, self.name + ".py"), "w") as f:
            f.write("def shout(payload):\n    return payload.upper() + b'!'\n")
        here, path = os.getcwd(), list(sys.path)
        os.chdir(self.directory)

        def restore() -> None:
            os.chdir(here)
            sys.path[:] = path
            sys.modules.pop(self.name, None)

        self.addCleanup(restore)

    def test_found_and_added_to_the_path(self) -> None:
        handler = load_handler(f"{self.name}:shout")
        self.assertEqual(handler.transform(b"hi"), b"HI!")
        # Process-pool workers inherit sys.path: they find it too.
        self.assertEqual(sys.path[-1], self.directory)

    def test_missing_says_where_it_looked(self) -> None:
        error = self.assertRaises(ValueError, load_handler, "nosuchmodule_x:f")
        self.assertEqual(
            str(error),
            "cannot import nosuchmodule_x: no such module on sys.path or in the "
            f"current directory ({self.directory})",
        )
        self.assertNotIn(self.directory, sys.path)
