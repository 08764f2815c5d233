"""Tests for incproto.parser: docs/protocol.md's table, and properties against a
tiny per-byte reference model over random streams and chunkings."""

from __future__ import annotations

import platform
from typing import List

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from incproto.parser import (
    WORDS_FROM,
    IncrementParser,
    _fastest_increment,
    extract_payload,
    increment,
    translate_increment,
    word_increment,
)
from tests.support.formats import reference


def feed_chunks(chunks: List[bytes]) -> bytes:
    parser = IncrementParser()
    return b"".join(parser.feed(chunk) for chunk in chunks)


# Bytes biased towards the delimiters, so that messages actually occur.
stream_bytes = st.lists(
    st.one_of(st.sampled_from(b"^$^$ab\x00\xff"), st.integers(0, 255)),
    max_size=400,
).map(bytes)


@st.composite
def chunked(draw: st.DrawFn) -> List[bytes]:
    stream = draw(stream_bytes)
    cuts = sorted(draw(st.lists(st.integers(0, len(stream)), max_size=20)))
    bounds = [0, *cuts, len(stream)]
    return [stream[a:b] for a, b in zip(bounds, bounds[1:])]


# Reads of whole messages, as ping-style clients send them (the parser's
# one-message fast path), mixed with arbitrary reads that leave the stream
# inside a message or put a "$" or "^" at the edges.
whole_message = st.binary(max_size=20).map(lambda b: b"^" + b.replace(b"$", b"") + b"$")
message_reads = st.lists(
    st.one_of(whole_message, whole_message, stream_bytes, st.sampled_from(
        [b"^", b"$", b"^$", b"$^", b"^^$", b"^$$", b"^a$^", b"^a$b$"]
    )),
    max_size=30,
)  # fmt: skip


class ProtocolTableTests(SynchronousTestCase):
    """
    The first worked examples of docs/protocol.md, fed on one connection in order.
    """

    def test_table(self) -> None:
        parser = IncrementParser()
        rows = [
            (b"^abc$de^abte$f", b"bcdbcuf"),
            (b"xyz^123", b"234"),
            (b"25$^ab0000$abab", b"36bc1111"),
        ]
        for sent, expected in rows:
            self.assertEqual(parser.feed(sent), expected)

    def test_reply_streams_before_message_end(self) -> None:
        parser = IncrementParser()
        self.assertEqual(parser.feed(b"abcdef"), b"")
        self.assertEqual(parser.feed(b"^"), b"")
        self.assertEqual(parser.feed(b"f"), b"g")

    def test_several_messages(self) -> None:
        self.assertEqual(IncrementParser().feed(b"^ab$^kl$^80$50"), b"bclm91")

    def test_wraps_ff_to_zero(self) -> None:
        self.assertEqual(IncrementParser().feed(b"^\xff\x00$"), b"\x00\x01")

    def test_caret_inside_message_is_payload(self) -> None:
        self.assertEqual(IncrementParser().feed(b"^a^b$"), b"b_c")

    def test_dollar_outside_message_is_ignored(self) -> None:
        self.assertEqual(IncrementParser().feed(b"$$x$^a"), b"b")

    def test_a_new_parser_waits_for_a_message(self) -> None:
        self.assertIs(IncrementParser().in_message, False)

    def test_state_is_kept(self) -> None:
        parser = IncrementParser()
        parser.feed(b"^ab")
        self.assertTrue(parser.in_message)
        parser.feed(b"c$")
        self.assertFalse(parser.in_message)

    def test_long_message_is_not_copied(self) -> None:
        """
        Inside a message with no C{$} in sight, the chunk itself is the
        payload: the hot path of a streamed message makes no copy.
        """
        chunk = b"x" * 1000
        payload, in_message = extract_payload(chunk, True)
        self.assertIs(payload, chunk)
        self.assertTrue(in_message)


class PropertyTests(SynchronousTestCase):
    """
    The parser against the per-byte reference model.
    """

    @given(stream_bytes)
    def test_matches_reference(self, stream: bytes) -> None:
        self.assertEqual(IncrementParser().feed(stream), reference(stream))

    @given(chunked())
    def test_chunking_never_matters(self, chunks: List[bytes]) -> None:
        self.assertEqual(feed_chunks(chunks), reference(b"".join(chunks)))

    @given(message_reads)
    def test_whole_message_reads_match_reference(self, chunks: List[bytes]) -> None:
        """
        A read that is exactly one message takes a shortcut; it must give
        what the reference model gives, whatever state the stream is in.
        """
        self.assertEqual(feed_chunks(chunks), reference(b"".join(chunks)))

    @given(whole_message)
    def test_one_message_read_is_its_payload(self, message: bytes) -> None:
        self.assertEqual(extract_payload(message, False), (message[1:-1], False))
        self.assertEqual(IncrementParser().feed(message), reference(message))

    @given(
        st.binary(max_size=64), st.integers(0, 3 * WORDS_FROM), st.binary(max_size=7)
    )
    def test_every_increment_is_bytewise_plus_one(
        self, pattern: bytes, length: int, tail: bytes
    ) -> None:
        """
        Both implementations, whichever this interpreter uses, on payloads
        below and above the word path's threshold and of every length modulo
        4 (every byte value occurs: the pattern is random).
        """
        body = (pattern or b"\x7f\xff\x00\x80") * (length // max(len(pattern), 1))
        payload = bytes(range(256)) + body[:length] + tail
        expected = bytes((b + 1) % 256 for b in payload)
        for implementation in (increment, translate_increment, word_increment):
            self.assertEqual(implementation(payload), expected, implementation)
            self.assertEqual(implementation(payload[-50:]), expected[-50:])

    def test_the_word_path_runs_on_long_payloads(self) -> None:
        payload = bytes(range(256)) * (WORDS_FROM // 256 + 1) + b"\xff"
        self.assertEqual(word_increment(payload), bytes((b + 1) % 256 for b in payload))

    @given(st.binary(max_size=300))
    def test_increment_is_bytewise_plus_one(self, payload: bytes) -> None:
        self.assertEqual(increment(payload), bytes((b + 1) % 256 for b in payload))


class ChoiceTests(SynchronousTestCase):
    """
    Which increment this interpreter uses: the word loop only on PyPy with
    4-byte array words, C{bytes.translate} everywhere else.
    """

    def test_translate_off_pypy(self) -> None:
        self.patch(platform, "python_implementation", lambda: "CPython")
        self.assertIs(_fastest_increment(), translate_increment)

    def test_words_on_pypy(self) -> None:
        self.patch(platform, "python_implementation", lambda: "PyPy")
        self.assertIs(_fastest_increment(), word_increment)

    def test_this_interpreter(self) -> None:
        pypy = platform.python_implementation() == "PyPy"
        self.assertIs(increment, word_increment if pypy else translate_increment)
