# -*- test-case-name: tests.integration.test_leantransport -*-
"""TCP server transports that keep no C{repr} per connection.

Twisted's C{tcp.Server} formats its C{repr} (C{repstr}, as
C{"<IncrementProtocol #7 on 9090>"}) for every connection it accepts and
keeps it for the connection's life: 96 bytes of each held connection on
CPython (issue 24), for text read only when something prints the
transport.  L{LeanServer} makes it when it is read instead.

What the reactor reads at every event stays as Twisted keeps it: the log
prefix (C{logstr}) and the socket's bound C{fileno}.  Made when read, the
C{fileno} property would save 72 more bytes a connection, and cost about
0.2 us per event and 4% more CPU per churned connection on CPython
(measured).  The property does not read C{self.__dict__}: on CPython 3.11
that alone makes a dictionary of 64 bytes for the object's life.

L{lean} gives a listening TCP port of the reactor's these transports; any
other port is left as it is.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import tcp


class LeanServer(tcp.Server):
    """
    A C{tcp.Server} whose C{repr} is made when read, with the text Twisted's
    own has while connected.
    """

    @property
    def repstr(self) -> str:
        """
        The C{repr}: the protocol's class, the session number, the port it
        was accepted on.  Once disconnected, Twisted's keeps the protocol's
        name; this one, without a protocol to ask, says C{-}.
        """
        # Deleted once disconnected; the port's own number is gone once it
        # stops listening (a drain), the connection's local port is not.
        protocol = getattr(self, "protocol", None)
        name = protocol.__class__.__name__ if protocol is not None else "-"
        try:
            port = self.socket.getsockname()[1]
        except (AttributeError, OSError):
            port = self.server._realPortNumber
        return f"<{name} #{self.sessionno} on {port}>"

    @repstr.setter
    def repstr(self, value: str) -> None:
        """Ignored: C{tcp.Server} sets it when made; it is made when read."""


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
