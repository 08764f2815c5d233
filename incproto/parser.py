# -*- test-case-name: tests.unit.test_parser -*-
"""The increment protocol's framing as a pure function: bytes in, payload out;
and the bytes of its wire format (the greeting, the delimiters), which the
server and the client both take from here.

The parser knows nothing of sockets or Twisted.  It takes the bytes a client
sent and whether the stream is inside a message, and returns the message
bytes found in them (the payload the server must answer) and the state the
stream is left in.  Scanning uses C{bytes.find}, never a per-byte loop, so
the cost is a few C passes over the data.  The increment is chosen per
interpreter (L{increment}): C{bytes.translate}, or on PyPy a loop over
32-bit words that its JIT compiles.
"""

from __future__ import annotations

import platform
from array import array
from typing import Callable, Tuple

# The one byte a server sends first, on every connection it serves.
GREETING = b"*"
MESSAGE_START = b"^"
MESSAGE_END = b"$"

_INCREMENT_TABLE = bytes((byte + 1) % 256 for byte in range(256))


def extract_payload(data: bytes, in_message: bool) -> Tuple[bytes, bool]:
    """
    Find the bytes of C{data} that lie inside messages.

    C{^} opens a message and C{$} closes it; bytes outside messages are
    ignored, as are the delimiters themselves, except that C{^} inside a
    message is payload.  Splitting a stream into chunks anywhere and feeding
    them in order, threading the returned state through, gives the same
    concatenated payload as feeding it whole.

    @param data: the next bytes of the client's stream.
    @param in_message: C{True} if the stream is inside a message (after a
        C{^} and before its C{$}), C{False} if it is waiting for one.
    @return: the payload bytes in C{data}, in order, and whether the stream
        is inside a message after C{data}.
    """
    if in_message:
        if MESSAGE_END not in data:
            return data, True  # the hot path of a long message: no copy
        data = MESSAGE_START + data  # resume the open message as a new one
    elif (
        data.startswith(MESSAGE_START)
        and data.endswith(MESSAGE_END)
        and data.count(MESSAGE_END) == 1
    ):
        return data[1:-1], False  # the hot path of short messages: one a read
    # A "$" either ends a message or is ignored while waiting, so every
    # segment between "$"s starts out waiting: its payload is whatever follows
    # its first "^".  One C call per message, none per byte.
    segments = data.split(MESSAGE_END)
    payload = b"".join([segment.partition(MESSAGE_START)[2] for segment in segments])
    return payload, MESSAGE_START in segments[-1]


def translate_increment(payload: bytes) -> bytes:
    """
    Add one to every byte of C{payload}, modulo 256 (so 0xFF becomes 0x00),
    with C{bytes.translate}: the fastest way on CPython.

    @param payload: message bytes, as returned by L{extract_payload}.
    @return: the reply bytes, the same length as C{payload}.
    """
    return payload.translate(_INCREMENT_TABLE)


# Below this many bytes, word_increment's setup costs more than it saves.
WORDS_FROM = 4096


def word_increment(payload: bytes) -> bytes:
    """
    L{translate_increment} four bytes at a time, for PyPy: its JIT turns
    this loop into machine code that runs faster than PyPy's own
    C{bytes.translate} on long payloads (short ones use C{translate}).

    Each 32-bit word adds one to each of its four bytes at once, without
    carries between them: the low seven bits of every byte plus one never
    carry out of the byte, and the top bit is put back with an exclusive
    or, so that 0x7F becomes 0x80 and 0xFF becomes 0x00.
    """
    size = len(payload)
    if size < WORDS_FROM:
        return payload.translate(_INCREMENT_TABLE)
    whole = size & ~3
    words = array("I")
    words.frombytes(memoryview(payload)[:whole])
    for i in range(whole >> 2):
        word = words[i]
        words[i] = ((word & 0x7F7F7F7F) + 0x01010101) ^ (word & 0x80808080)
    if whole == size:
        return words.tobytes()
    return words.tobytes() + payload[whole:].translate(_INCREMENT_TABLE)


def _fastest_increment() -> Callable[[bytes], bytes]:
    if platform.python_implementation() == "PyPy" and array("I").itemsize == 4:
        return word_increment
    return translate_increment


increment = _fastest_increment()
"""
Add one to every byte of a payload, modulo 256: L{word_increment} on PyPy,
L{translate_increment} elsewhere (the same bytes either way).
"""


class IncrementParser:
    """
    The stateful face of L{extract_payload} and L{increment}: feed it the
    client's bytes as they arrive and it returns the reply bytes owed.

    @ivar in_message: whether the stream is inside a message.
    """

    __slots__ = ("in_message",)

    def __init__(self) -> None:
        self.in_message = False

    def feed(self, data: bytes) -> bytes:
        """
        Consume the next bytes of the stream.

        @param data: any chunk of the client's stream.
        @return: the reply bytes owed for C{data} (possibly empty).
        """
        payload, self.in_message = extract_payload(data, self.in_message)
        return increment(payload)
