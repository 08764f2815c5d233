# -*- test-case-name: tests.unit.test_client -*-
"""Checking a server's replies against the protocol, byte for byte, as they
arrive.

L{ReplyCheck} is pure, like the parser it stands on: it is told what the
client sent and what the server answered, and raises L{ProtocolError} on
the first byte that the increment protocol does not allow.
"""

from __future__ import annotations

from collections import deque
from typing import Deque

from incproto.parser import GREETING, IncrementParser


class ProtocolError(Exception):
    """The server sent something the increment protocol does not allow."""


class ReplyCheck:
    """
    What the server owes one connection, and whether what it sent matches.

    @ivar greeted: whether the greeting has arrived.
    @ivar owed: reply bytes owed for what was sent, not yet received.
    @ivar received: reply bytes received and checked (the greeting aside).
    """

    def __init__(self) -> None:
        self._parser = IncrementParser()
        self._pending: Deque[bytes] = deque()
        self._offset = 0
        self.greeted = False
        self.owed = 0
        self.received = 0

    def sent(self, data: bytes) -> None:
        """
        Record bytes the client sent: the server owes their reply.
        """
        reply = self._parser.feed(data)
        if reply:
            self._pending.append(reply)
            self.owed += len(reply)

    def check(self, data: bytes) -> None:
        """
        Check bytes the server sent.

        @raise ProtocolError: if C{data} is not the greeting followed by
            what is owed, in order; the message names the first wrong byte.
        """
        if not self.greeted:
            if data[:1] != GREETING:
                raise ProtocolError(
                    f"expected the greeting {GREETING!r}, got {data[:16]!r}"
                )
            self.greeted = True
            data = data[1:]
        position = 0
        while position < len(data):
            if not self._pending:
                raise ProtocolError(
                    f"{len(data) - position} unexpected bytes after reply byte "
                    f"{self.received}: {data[position : position + 16]!r}"
                )
            head = self._pending[0]
            size = min(len(data) - position, len(head) - self._offset)
            got = data[position : position + size]  # no copy when it is all
            if not head.startswith(got, self._offset):
                wanted = head[self._offset : self._offset + size]
                wrong = next(i for i in range(size) if got[i] != wanted[i])
                raise ProtocolError(
                    f"reply byte {self.received + wrong} is "
                    f"{got[wrong : wrong + 1]!r}, expected "
                    f"{wanted[wrong : wrong + 1]!r}"
                )
            position += size
            self.received += size
            self.owed -= size
            self._offset += size
            if self._offset == len(head):
                self._pending.popleft()
                self._offset = 0
