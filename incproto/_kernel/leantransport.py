# -*- test-case-name: tests.unit.test_leantransport -*-
"""TCP server transports that keep less per connection.

Twisted's C{tcp.Server} formats its C{repr} (C{repstr}, as
C{"<IncrementProtocol #7 on 9090>"}) for every connection it accepts, and
keeps its socket's bound C{fileno} method: 96 and 80 bytes of each held
connection on CPython (issue 24), for text read only when something prints
the transport and a method the socket has anyway.  L{LeanServer} makes both
when they are read instead.  (Its log prefix, C{logstr}, stays as Twisted
makes it: the reactor reads it at every event of the connection.)

Neither reads C{self.__dict__}: on CPython 3.11 that alone makes a
dictionary of 64 bytes for the object's life.

L{lean} gives a listening TCP port of the reactor's these transports; any
other port is left as it is.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet import tcp


class LeanServer(tcp.Server):
    """
    A C{tcp.Server} whose C{repr} and C{fileno} are made when read, and
    answer as Twisted's own would.
    """

    @property
    def repstr(self) -> str:
        """The C{repr}: the protocol's class, the session number, the port."""
        protocol = getattr(self, "protocol", None)  # deleted once disconnected
        name = protocol.__class__.__name__ if protocol is not None else "-"
        return f"<{name} #{self.sessionno} on {self.server._realPortNumber}>"

    @repstr.setter
    def repstr(self, value: str) -> None:
        """Ignored: C{tcp.Server} sets it when made; it is made when read."""

    @property
    def fileno(self) -> Callable[[], int]:
        """The socket's C{fileno}, or one that answers C{-1} once the socket
        is gone (as Twisted's transport then does)."""
        socket = getattr(self, "socket", None)  # deleted once disconnected
        return socket.fileno if socket is not None else _gone

    @fileno.setter
    def fileno(self, value: Callable[[], int]) -> None:
        """Ignored: C{tcp.Connection} sets its socket's; it is read from
        the socket."""

    @fileno.deleter
    def fileno(self) -> None:
        """Ignored: C{tcp.Connection} deletes it with the socket."""


def _gone() -> int:
    return -1


def lean(port: Any) -> bool:
    """
    Make C{port} (as C{endpoint.listen()} gives it) accept into
    L{LeanServer}s if it is a reactor's TCP port with Twisted's own
    transport; return whether it was.
    """
    if isinstance(port, tcp.Port) and port.transport is tcp.Server:
        port.transport = LeanServer
        return True
    return False
