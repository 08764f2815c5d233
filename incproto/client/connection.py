# -*- test-case-name: tests.unit.test_client,tests.integration.test_client -*-
"""One client connection that checks every byte the server sends and keeps
the times a timeline needs."""

from __future__ import annotations

import socket
from typing import Any, List, Optional, Tuple, cast

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    connectProtocol,
    wrapClientTLS,
)
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IHalfCloseableDescriptor,
    IHalfCloseableProtocol,
    IOpenSSLClientConnectionCreator,
    IReactorTime,
)
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from incproto.client.check import ProtocolError, ReplyCheck
from incproto.client.clock import PerfCounterClock

Event = Tuple[float, str, bytes]


class ClientError(Exception):
    """A run failed: the one-line reason is the message."""


@implementer(IHalfCloseableProtocol)
class CheckedConnection(Protocol):
    """
    A client connection to an increment server that checks each reply byte.

    Subclasses (the load modes) react to L{greeted} and L{answered}; the
    times (in seconds on C{clock}) feed reports and timelines.

    @ivar number: the connection's number in its run, from 1.
    @ivar clock: where the times are read.
    @ivar check: what the server owes and has sent.
    @ivar started: when the connection attempt began.
    @ivar connectedAt: when TCP connected.
    @ivar greetedAt: when the greeting arrived.
    @ivar closedAt: when the connection was gone.
    @ivar lastProgress: when bytes last arrived (or the attempt began).
    @ivar error: why the connection failed, or C{None}.
    @ivar events: (time, "sent" or "received", bytes), if C{record}.
    @ivar done: fires with the connection when it is closed.
    """

    record = False

    def __init__(self, number: int = 1, clock: Optional[IReactorTime] = None) -> None:
        """
        @param clock: the run's clock (see L{incproto.client.clock}); a
            L{PerfCounterClock} by default.
        """
        self.number = number
        self.clock: IReactorTime = PerfCounterClock() if clock is None else clock
        self.check = ReplyCheck()
        self.started = self.clock.seconds()
        self.lastProgress = self.started
        self.connectedAt: Optional[float] = None
        self.greetedAt: Optional[float] = None
        self.closedAt: Optional[float] = None
        self.error: Optional[str] = None
        self.events: List[Event] = []
        self.done: Deferred[CheckedConnection] = Deferred()
        self._closeWhenAnswered = False

    def connectionMade(self) -> None:
        self.connectedAt = self.lastProgress = self.clock.seconds()

    def dataReceived(self, data: bytes) -> None:
        now = self.lastProgress = self.clock.seconds()
        if self.record:
            self.events.append((now, "received", data))
        was_greeted = self.check.greeted
        try:
            self.check.check(data)
        except ProtocolError as e:
            self.fail(str(e))
            return
        if not was_greeted:
            self.greetedAt = now
            self.greeted()
        if self.check.owed == 0 and self.check.received:
            if self._closeWhenAnswered:
                self.transport.loseConnection()  # type: ignore[union-attr]
                return
            self.answered()

    def send(self, data: bytes) -> None:
        """Send C{data}, recording the reply it is owed."""
        self.check.sent(data)
        if self.record:
            self.events.append((self.clock.seconds(), "sent", data))
        assert self.transport is not None
        self.transport.write(data)

    def greeted(self) -> None:
        """The greeting has arrived: start talking."""

    def answered(self) -> None:
        """Every reply byte owed so far has arrived."""

    def finish(self) -> None:
        """
        Half-close: the server sends what it owes, then closes.  Over TLS,
        which Twisted cannot half-close, wait for what is owed, then close.
        """
        transport: Any = self.transport
        assert transport is not None
        if IHalfCloseableDescriptor.providedBy(transport):
            cast(Any, transport).loseWriteConnection()
        elif self.check.owed:
            self._closeWhenAnswered = True
        else:
            transport.loseConnection()

    def fail(self, reason: str) -> None:
        """Fail the connection with a one-line C{reason} and drop it."""
        if self.error is None:
            self.error = f"connection {self.number}: {reason}"
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def stalled(self, now: float, timeout: float) -> None:
        """Fail the connection if it waited more than C{timeout} for bytes."""
        waiting = not self.check.greeted or self.check.owed
        if self.connectedAt is None or self.closedAt is not None or not waiting:
            return  # connecting has its own timeout
        if now - self.lastProgress > timeout:
            what = "greeting" if not self.check.greeted else "reply"
            self.fail(f"no {what} within {timeout:g} s")

    def readConnectionLost(self) -> None:
        self.transport.loseConnection()  # type: ignore[union-attr]

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.closedAt = self.clock.seconds()
        how = "closed by the server"
        if reason is not None and not reason.check(ConnectionDone):
            how = f"lost ({_one_line(reason)})"  # a reset, a TLS failure, ...
        if self.error is None and not self.check.greeted:
            self.error = f"connection {self.number}: {how} before the greeting"
        elif self.error is None and self.check.owed:
            self.error = (
                f"connection {self.number}: {how} with "
                f"{self.check.owed} reply bytes owed"
            )
        self.done.callback(self)


def _one_line(reason: Failure) -> str:
    value: Any = reason.value
    if type(value).__module__.startswith("OpenSSL") and value.args:
        # pyOpenSSL's errors are lists of (library, function, reason).
        details = value.args[0]
        if isinstance(details, list) and details and len(details[-1]) == 3:
            return f"TLS: {details[-1][2]}"
    text = reason.getErrorMessage().strip().splitlines()
    return text[0].rstrip(".") if text else type(value).__name__


def resolve(host: str, port: int) -> Tuple[int, str]:
    """
    Look C{host} up once, so that thousands of connections skip the resolver.

    @return: the address family and address to connect to.
    @raise ClientError: if the name does not resolve.
    """
    try:
        family, _, _, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM
        )[0]
    except socket.gaierror as e:
        raise ClientError(f"cannot resolve {host}: {e.strerror}") from None
    return family, str(address[0])


class Target:
    """
    Where connections go: a resolved address and a way to connect there.

    @ivar label: C{host:port} for messages.
    """

    def __init__(
        self,
        reactor: Any,
        host: str,
        port: int,
        timeout: float,
        tls: Optional[IOpenSSLClientConnectionCreator] = None,
    ) -> None:
        """
        @param tls: TLS options (see L{tls_options}) to connect with TLS.
        """
        self.reactor = reactor
        self.label = f"{host}:{port}"
        family, address = resolve(host, port)
        kind = TCP6ClientEndpoint if family == socket.AF_INET6 else TCP4ClientEndpoint
        endpoint: Any = kind(reactor, address, port, timeout=timeout)
        if tls is not None:
            endpoint = wrapClientTLS(tls, endpoint)
        self._endpoint = endpoint

    def connect(self, connection: CheckedConnection) -> Deferred[CheckedConnection]:
        """
        Connect C{connection}; it fires C{done} whether or not it connects.
        """

        def failed(failure: Failure) -> None:
            reason = failure.getErrorMessage().strip().rstrip(".")
            connection.error = f"connection {connection.number}: {self.label}: {reason}"
            connection.closedAt = connection.clock.seconds()
            connection.done.callback(connection)

        connectProtocol(self._endpoint, connection).addErrback(failed)
        return connection.done


def tls_options(
    host: str, authority: Optional[str] = None, verify: bool = True
) -> IOpenSSLClientConnectionCreator:
    """
    TLS options for connecting to C{host}.

    @param authority: a PEM file of the certificate authority to trust
        instead of the system's.
    @param verify: whether to check the server's certificate at all.
    @raise ClientError: if TLS support is not installed, or the authority
        file cannot be read.
    """
    try:
        from twisted.internet import ssl
    except ImportError:  # pyOpenSSL is missing
        raise ClientError(
            "TLS needs the tls extra: pip install 'incproto[tls]'"
        ) from None
    if not verify:
        return cast(IOpenSSLClientConnectionCreator, ssl.CertificateOptions())
    trust: Any = None
    if authority is not None:
        try:
            with open(authority, "rb") as pem:
                trust = ssl.Certificate.loadPEM(pem.read())
        except (OSError, ValueError) as e:
            raise ClientError(f"cannot read the authority {authority}: {e}") from None
    return ssl.optionsForClientTLS(host, trustRoot=trust)


def first_error(connections: List[CheckedConnection]) -> Optional[str]:
    """The first failed connection's reason, by connection number."""
    for connection in sorted(connections, key=lambda c: c.number):
        if connection.error is not None:
            return connection.error
    return None
