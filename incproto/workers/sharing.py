# -*- test-case-name: tests.integration.test_sharing -*-
"""One listening socket shared by worker processes: bound once by the parent,
adopted by each worker, with the same C{--port} description on both sides.

The trick is a stand-in reactor.  Twisted's endpoint parsers turn a
description into an endpoint that calls C{listenTCP}, C{listenSSL},
C{listenUNIX} or C{adoptStreamPort} on its reactor.  In the parent,
L{BindingReactor} answers those calls by binding a plain socket and keeping
it, without serving it.  In a worker, L{AdoptingReactor} answers them by
adopting the inherited socket instead of binding, and rebuilds what the
description layers on top: TLS (C{ssl:}) here, PROXY (C{proxy:}) in the
endpoint around it, which its parser builds.  Under C{proxy:ssl:} the
parser's reactor (L{incproto.proxy.TLSAfterProxyReactor}, over the
adopting one) turns C{listenSSL} into C{listenTCP} of PROXY(TLS(factory)),
as in one process: the header is read in clear before the TLS handshake.
So every endpoint kind that ends in one of those four calls works with
workers: C{tcp:}, C{tcp6:}, C{ssl:}, C{unix:}, C{systemd:}, each alone or
under C{proxy:}.
"""

from __future__ import annotations

import os
import socket
import stat
from contextlib import suppress
from typing import Any, List, Optional, cast

from twisted.internet import tcp, unix
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.endpoints import AdoptedStreamServerEndpoint, serverFromString
from twisted.internet.interfaces import (
    IListeningPort,
    IProtocolFactory,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import Factory
from twisted.python.failure import Failure
from zope.interface import implementer

from incproto.proxy import ProxyEndpoint, split_proxy, trusted_in, with_tls

# Families by the names a worker is told on its command line.
FAMILIES = {"inet": socket.AF_INET, "inet6": socket.AF_INET6, "unix": socket.AF_UNIX}
FAMILY_NAMES = {number: name for name, number in FAMILIES.items()}


@implementer(IListeningPort)
class BoundSocket:
    """
    A listening socket that nothing in this process serves: the parent's
    copy, handed to workers.

    @ivar socket: the listening socket.
    @ivar path: the UNIX socket file this process created, removed when it
        stops listening (workers leave it alone), or C{None}.
    """

    def __init__(self, sock: socket.socket, path: Optional[str] = None) -> None:
        self.socket = sock
        self.path = path

    @property
    def family(self) -> str:
        """The family's name: C{inet}, C{inet6} or C{unix}."""
        return FAMILY_NAMES[self.socket.family]

    def fileno(self) -> int:
        """The socket's file descriptor."""
        return self.socket.fileno()

    def getHost(self) -> Any:
        """The address the socket listens on, as a Twisted address."""
        address = self.socket.getsockname()
        if self.socket.family == socket.AF_UNIX:
            return UNIXAddress(address)
        kind = IPv6Address if self.socket.family == socket.AF_INET6 else IPv4Address
        return kind("TCP", address[0], address[1])

    def startListening(self) -> None:
        """Already listening."""

    def stopListening(self) -> Optional[Deferred[None]]:
        """Close the parent's copy (workers keep theirs) and remove the
        socket file it created."""
        self.socket.close()
        if self.path is not None:
            with suppress(FileNotFoundError):
                os.unlink(self.path)
        return None


class BindingReactor:
    """
    A reactor for endpoint parsers that binds the socket and keeps it.

    Only the listening calls are answered; anything else is a bug.

    @ivar bound: the socket, once an endpoint has listened.
    """

    def __init__(self) -> None:
        self.bound: Optional[BoundSocket] = None

    def _keep(self, sock: socket.socket, path: Optional[str] = None) -> BoundSocket:
        # Non-blocking for every worker (the flag is shared with them): of
        # the workers woken by one connection, all but one find none to
        # accept, and a blocking accept would hang their reactors.
        sock.setblocking(False)
        self.bound = BoundSocket(sock, path)
        return self.bound

    def listenTCP(
        self, port: int, factory: object, backlog: int = 50, interface: str = ""
    ) -> BoundSocket:
        family = socket.AF_INET6 if ":" in interface else socket.AF_INET
        sock = socket.create_server((interface, port), family=family, backlog=backlog)
        return self._keep(sock)

    def listenSSL(
        self,
        port: int,
        factory: object,
        contextFactory: object,
        backlog: int = 50,
        interface: str = "",
    ) -> BoundSocket:
        return self.listenTCP(port, factory, backlog, interface)

    def listenUNIX(
        self,
        address: str,
        factory: object,
        backlog: int = 50,
        mode: int = 0o666,
        wantPID: int = 0,
    ) -> BoundSocket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(address)
            os.chmod(address, mode)
            sock.listen(backlog)
        except BaseException:
            sock.close()
            raise
        in_filesystem = not str(address).startswith("\0")
        return self._keep(sock, address if in_filesystem else None)

    def adoptStreamPort(
        self, fileDescriptor: int, addressFamily: int, factory: object
    ) -> BoundSocket:
        # The endpoint closes the descriptor it was given: keep a duplicate.
        return self._keep(socket.socket(fileno=os.dup(fileDescriptor)))


def bind(description: str) -> BoundSocket:
    """
    Bind the socket that C{description} (a C{--port} endpoint description)
    listens on, without serving it.

    @raise Exception: whatever binding raised (address in use, ...).
    """
    binder = BindingReactor()
    endpoint = serverFromString(binder, description)
    failures: List[Failure] = []
    endpoint.listen(Factory()).addErrback(failures.append)
    if failures:
        failures[0].raiseException()
    assert binder.bound is not None
    return binder.bound


class AdoptingReactor:
    """
    The real reactor, except that listening adopts the inherited socket.

    @ivar fileno: the inherited listening socket's descriptor.
    @ivar family: its address family (a C{socket.AF_*} number).
    """

    def __init__(self, reactor: Any, fileno: int, family: int) -> None:
        self._reactor = reactor
        self.fileno = fileno
        self.family = family

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reactor, name)

    def _adopt(self, factory: IProtocolFactory) -> IListeningPort:
        if self.family == socket.AF_UNIX:
            port = SharedUNIXPort._fromListeningDescriptor(
                self._reactor, self.fileno, factory
            )
            port.startListening()
            return cast(IListeningPort, port)
        adopted: IListeningPort = self._reactor.adoptStreamPort(
            self.fileno, self.family, factory
        )
        return adopted

    def listenTCP(
        self, port: int, factory: IProtocolFactory, *args: Any, **kwargs: Any
    ) -> IListeningPort:
        return self._adopt(factory)

    def listenUNIX(
        self, address: str, factory: IProtocolFactory, *args: Any, **kwargs: Any
    ) -> IListeningPort:
        return self._adopt(factory)

    def listenSSL(
        self,
        port: int,
        factory: IProtocolFactory,
        contextFactory: Any,
        *args: Any,
        **kwargs: Any,
    ) -> IListeningPort:
        # TLS outside, or inside a PROXY layer (where the proxy: parser's
        # reactor does not already put it there): the header comes first.
        return self._adopt(with_tls(factory, contextFactory))


class SharedUNIXPort(unix.Port):
    """
    A worker's UNIX port over the socket its supervisor bound and owns.

    Twisted's own adopted UNIX port would make the socket file mode 0666
    when it starts (whatever C{mode=} the description set), and when it
    stops would shut the shared socket down and remove its file, leaving
    the supervisor and the workers started after it (on a reload) nothing
    to serve.  This one leaves socket, file and mode as they are.
    """

    _shouldShutdown = False

    def startListening(self) -> None:
        """Listen, keeping the socket file's mode."""
        path = getattr(self, "_bindPath", None) or self.port
        with suppress(OSError, TypeError, ValueError):
            self.mode = stat.S_IMODE(os.stat(path).st_mode)
        super().startListening()

    def connectionLost(self, reason: Failure) -> None:
        """Stop, without removing the supervisor's socket file."""
        tcp.Port.connectionLost(self, reason)


def adopted_endpoint(
    reactor: Any, description: str, fileno: int, family: int
) -> IStreamServerEndpoint:
    """
    The endpoint a worker serves: C{description}'s layers over the inherited
    socket C{fileno}.

    @param reactor: the worker's reactor.
    @param description: the C{--port} endpoint description.
    """
    proxied, inner = split_proxy(description)
    if not inner.startswith("systemd:"):
        adopting = AdoptingReactor(reactor, fileno, family)
        return cast(IStreamServerEndpoint, serverFromString(adopting, description))
    # The worker is not the process systemd passed the socket to: its
    # systemd parser would find no descriptor to adopt.
    endpoint: IStreamServerEndpoint = AdoptedStreamServerEndpoint(
        reactor, fileno, family
    )
    if not proxied:
        return endpoint
    return ProxyEndpoint(endpoint, reactor, trusted=trusted_in(description))


@implementer(IStreamServerEndpoint)
class SharedSocketEndpoint:
    """
    An endpoint that binds C{description}'s socket for workers to share and
    serves nothing itself: its port is a L{BoundSocket}.
    """

    def __init__(self, description: str) -> None:
        self.description = description

    def listen(self, protocolFactory: IProtocolFactory) -> Deferred[IListeningPort]:
        """Bind now; fail the Deferred if binding fails."""
        return maybeDeferred(bind, self.description)
