"""Fake transports for tests that run without a reactor."""

from __future__ import annotations

from twisted.internet.testing import StringTransport


class HalfCloseableTransport(StringTransport):
    """
    A StringTransport that can shut down its sending side, as TCP can.

    @ivar write_closed: whether C{loseWriteConnection} was called.
    """

    write_closed = False

    def loseWriteConnection(self) -> None:
        self.write_closed = True
