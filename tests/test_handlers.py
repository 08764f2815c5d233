"""Tests for incproto.handlers: the contract, the examples, loading by name."""

from __future__ import annotations

import pickle

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from incproto.handlers import (
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
            ("tests.test_handlers:Broken", "does not provide IPayloadHandler"),
        ]:
            error = self.assertRaises(ValueError, load_handler, name)
            self.assertIn(reason, str(error))
            self.assertNotIn("\n", str(error))
