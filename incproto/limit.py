# -*- test-case-name: tests.unit.test_limit,tests.integration.test_limit -*-
"""ConnectionLimit: at most N connections to any factory, a bounded FIFO
queue for the rest, and a clean rejection beyond it.

Unlike Twisted's C{LimitTotalConnectionsFactory}, a rejected connection gets
a protocol that closes it (returning C{None} from C{buildProtocol} crashes
under TLS and PROXY wrappers), overflow can wait in a queue, and the wrapper
is transparent: an admitted protocol is connected to the real transport
itself, so writes, producers, C{getPeer}, C{getHost} and half-close are
exactly those of an unwrapped connection.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from typing import Dict, Hashable, List, Optional

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IProtocolFactory,
    IReactorTime,
)
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from incproto._kernel.accepting import AcceptControl
from incproto._kernel.addresses import describe
from incproto._kernel.closing import CloseDeadline, close_politely
from incproto._kernel.histogram import QUEUE_WAIT_SECONDS, Histogram
from incproto._kernel.ratelimit import RateLimitedLog
from incproto._kernel.reactors import global_reactor
from incproto._kernel.sockets import reset_by_peer
from incproto._kernel.timers import cancel
from incproto._kernel.wrapping import FactoryWrapper, PassThrough

UNIX_PEERS = "unix"
DEFAULT_QUEUE_SIZE = 1024
DEFAULT_REJECT_PAUSE = 0.05
FULL = "connection limit full"


def peer_group(address: IAddress) -> Hashable:
    """
    The group a peer address counts against for per-peer limits.

    IPv4 and IPv6 peers are grouped by host, with IPv4-mapped IPv6 addresses
    (C{::ffff:a.b.c.d}) counted as the IPv4 host they are; all UNIX-socket
    peers are one group; any other address is its own group.
    """
    if isinstance(address, (IPv4Address, IPv6Address)):
        try:
            ip = ipaddress.ip_address(address.host)
        except ValueError:
            return address.host
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        return ip
    if isinstance(address, UNIXAddress):
        return UNIX_PEERS
    return address


class ConnectionLimit(FactoryWrapper):
    """
    Wrap any protocol factory so that at most C{maxConnections} of its
    protocols are connected at once.

    A connection beyond the limit is accepted and held in a FIFO queue of at
    most C{queueSize}: its protocol is not built or started yet (incproto
    sends no greeting), its first C{holdBuffer} bytes are kept (then reading
    pauses) and its half-close is remembered, all delivered in order when a
    slot frees.  A held client that disconnects (resets, or closes without
    having sent anything) leaves the queue at once; one that sent bytes and
    then closed is kept, as a half-close owed replies; while reading is
    paused by the hold buffer, a read cannot see a disconnect, so every
    C{probeInterval} seconds the kernel is asked whether the client reset
    the connection (Linux), and one that did leaves the queue.  Beyond the
    queue, or beyond C{maxPerPeer} connections (active and held) from one
    peer, connections are rejected: closed with a FIN, never handed to the
    wrapped factory.

    Rejecting costs nearly what serving costs (accept, a transport, the
    close), so a flood against a full limit would still take the reactor
    from the admitted clients.  Given its listening port's
    L{AcceptControl} (L{watchAccepting}; incproto's
    L{incproto.serving.service.ListeningService} does this), the limit paces its
    rejections while full: after each, accepting stops for C{rejectPause}
    seconds, or until a slot or queue place frees.  Meanwhile new clients
    wait, ungreeted, in the kernel's listen queue (at most the listen
    backlog; beyond it their SYNs are dropped and retried).

    @ivar wrappedFactory: the factory whose protocols are limited.
    @ivar active: connections whose wrapped protocol is running.
    @ivar peak: the most connections that were active at once.
    @ivar peakHeld: the most connections that were held at once.
    @ivar admitted: connections handed to the wrapped factory, in total.
    @ivar rejected: connections closed on arrival, in total.
    @ivar timedOut: held connections closed after C{queueTimeout}, in total.
    @ivar abandoned: held connections whose client left the queue, in total.
    @ivar queueSeconds: how long each admitted connection waited in the
        queue (0 if admitted on arrival), a L{incproto._kernel.histogram.Histogram}.
    """

    log = Logger()

    def __init__(
        self,
        wrappedFactory: IProtocolFactory,
        maxConnections: int,
        queueSize: int = DEFAULT_QUEUE_SIZE,
        queueTimeout: Optional[float] = None,
        maxPerPeer: Optional[int] = None,
        clock: Optional[IReactorTime] = None,
        holdBuffer: int = 64 * 1024,
        closeTimeout: float = 10.0,
        rejectLogInterval: float = 10.0,
        probeInterval: float = 1.0,
        rejectPause: float = DEFAULT_REJECT_PAUSE,
    ) -> None:
        """
        @param wrappedFactory: any C{IProtocolFactory}.
        @param maxConnections: how many wrapped protocols may run at once.
        @param queueSize: how many connections may wait for a slot; 0
            rejects every connection beyond the limit.
        @param queueTimeout: seconds a connection may wait before it is
            closed, or C{None} to wait as long as it takes.
        @param maxPerPeer: how many connections (active and held) one peer
            address may have, or C{None} for no per-peer limit.
        @param clock: the time source; the global reactor by default.
        @param holdBuffer: bytes kept from a held connection before reading
            from it pauses.
        @param closeTimeout: seconds a rejected or timed-out connection may
            take to close after its FIN before it is aborted.
        @param rejectLogInterval: rejections and timeouts are logged at most
            once per this many seconds (with a count of those not logged).
        @param probeInterval: seconds between checks of held connections
            whose reading is paused for a reset by their client.
        @param rejectPause: while full, seconds to stop accepting after a
            rejection (see L{watchAccepting}).
        @raise ValueError: for a limit or size out of range.
        """
        if maxConnections < 1:
            raise ValueError(f"maxConnections must be at least 1, not {maxConnections}")
        if queueSize < 0:
            raise ValueError(f"queueSize must not be negative, not {queueSize}")
        if queueTimeout is not None and queueTimeout <= 0:
            raise ValueError(f"queueTimeout must be positive, not {queueTimeout}")
        if maxPerPeer is not None and maxPerPeer < 1:
            raise ValueError(f"maxPerPeer must be at least 1, not {maxPerPeer}")
        super().__init__(wrappedFactory)
        clock = clock if clock is not None else global_reactor()
        self.maxConnections = maxConnections
        self.queueSize = queueSize
        self.queueTimeout = queueTimeout
        self.maxPerPeer = maxPerPeer
        self.clock = clock
        self.holdBuffer = holdBuffer
        self.closeTimeout = closeTimeout
        self.probeInterval = probeInterval
        self.rejectPause = rejectPause
        self.accepting: Optional[AcceptControl] = None
        self._pacing: Optional[IDelayedCall] = None
        self.active = 0
        self.peak = 0
        self.peakHeld = 0
        self.admitted = 0
        self.rejected = 0
        self.timedOut = 0
        self.abandoned = 0
        self.queueSeconds = Histogram(QUEUE_WAIT_SECONDS)
        self._queue: OrderedDict[LimitedConnection, None] = OrderedDict()
        self._perPeer: Dict[Hashable, int] = {}
        self._refusals = RateLimitedLog(
            self.log,
            clock,
            rejectLogInterval,
            "{more} rejected or timed out in the last {interval}s",
            ("more connection", "more connections"),
        )
        self._probe: Optional[IDelayedCall] = None

    @property
    def held(self) -> int:
        """
        Connections waiting in the queue.
        """
        return len(self._queue)

    # IProtocolFactory

    def buildProtocol(self, addr: IAddress) -> LimitedConnection:
        """
        Every connection gets a L{LimitedConnection}, which decides on
        connection whether to admit, hold or reject it.
        """
        return LimitedConnection(self, addr)

    def doStop(self) -> None:
        """
        Close every held connection cleanly, then stop the wrapped factory.
        """
        for connection in list(self._queue):
            self._leaveQueue(connection)
            connection.refuse()
        cancel(self._probe)
        self._acceptAgain()
        self._refusals.stop()
        super().doStop()

    def watchAccepting(self, accepting: AcceptControl) -> None:
        """
        Pace rejections through the L{AcceptControl} of the port this limit
        listens on: while no slot and no queue place is free, stop accepting
        for C{rejectPause} seconds after each rejection.
        """
        self.accepting = accepting

    # Called by LimitedConnection.

    def arrived(self, connection: LimitedConnection) -> None:
        """
        Admit, hold or reject a connection that was just made.
        """
        group = connection.group
        if (
            self.maxPerPeer is not None
            and self._perPeer.get(group, 0) >= self.maxPerPeer
        ):
            self._reject(connection, "per-peer limit", full=False)
        elif self.active < self.maxConnections:
            self._count(group, 1)
            self._admit(connection)
        elif len(self._queue) < self.queueSize:
            self._count(group, 1)
            self._queue[connection] = None
            self.peakHeld = max(self.peakHeld, len(self._queue))
            if self.queueTimeout is not None:
                connection.holdTimer = self.clock.callLater(
                    self.queueTimeout, self._timeOut, connection
                )
        else:
            self._reject(
                connection, "queue full" if self.queueSize else "limit", full=True
            )

    def left(self, connection: LimitedConnection, wasActive: bool) -> None:
        """
        A connection that was admitted or held is gone.
        """
        self._count(connection.group, -1)
        if wasActive:
            self.active -= 1
            self._admitWaiting()
        else:
            self.abandoned += 1
            self._queue.pop(connection, None)
        self._acceptAgain()

    def readingPaused(self) -> None:
        """
        A held connection stopped being read (its hold buffer is full):
        probe held connections for resets until none is paused.
        """
        if self._probe is None or not self._probe.active():
            self._probe = self.clock.callLater(self.probeInterval, self._probeHeld)

    def _probeHeld(self) -> None:
        paused = [c for c in self._queue if c.readingPaused]
        for connection in paused:
            if reset_by_peer(connection.transport):
                connection.transport.abortConnection()
        if paused:
            self._probe = self.clock.callLater(self.probeInterval, self._probeHeld)

    def _admitWaiting(self) -> None:
        while self._queue and self.active < self.maxConnections:
            connection, _ = self._queue.popitem(last=False)
            cancel(connection.holdTimer)
            waited = self.clock.seconds() - connection.arrivedAt
            self.log.debug(
                "admitted {peer} after {waited:.3f}s in the queue",
                peer=describe(connection.peer),
                waited=waited,
            )
            self._admit(connection, waited)

    def _admit(self, connection: LimitedConnection, waited: float = 0.0) -> None:
        self.queueSeconds.observe(waited)
        self.active += 1
        self.admitted += 1
        self.peak = max(self.peak, self.active)
        connection.start()

    def _reject(self, connection: LimitedConnection, why: str, full: bool) -> None:
        self.rejected += 1
        if full and self.accepting is not None and self._pacing is None:
            self.accepting.pause(FULL)
            self._pacing = self.clock.callLater(self.rejectPause, self._acceptAgain)
        self._refuse(connection, "rejected", why)

    def _acceptAgain(self) -> None:
        """The pause after a rejection is over, or room freed: accept."""
        cancel(self._pacing)
        self._pacing = None
        if self.accepting is not None:
            self.accepting.resume(FULL)

    def _timeOut(self, connection: LimitedConnection) -> None:
        self._leaveQueue(connection)
        self._acceptAgain()
        self.timedOut += 1
        self._refuse(connection, "timed out", "queue timeout")

    def _refuse(self, connection: LimitedConnection, what: str, why: str) -> None:
        """Log (rate-limited) and close a connection without serving it."""
        self._refusals.warn(
            "{what} {peer}: {why}", what=what, peer=describe(connection.peer), why=why
        )
        connection.refuse()

    def _leaveQueue(self, connection: LimitedConnection) -> None:
        del self._queue[connection]
        cancel(connection.holdTimer)
        self._count(connection.group, -1)

    def _count(self, group: Hashable, delta: int) -> None:
        if self.maxPerPeer is None:
            return
        count = self._perPeer.get(group, 0) + delta
        if count:
            self._perPeer[group] = count
        else:
            del self._perPeer[group]


class LimitedConnection(PassThrough):
    """
    The protocol of one connection under a L{ConnectionLimit}: held until
    admitted, then a L{PassThrough} to the wrapped protocol, which is
    connected to the real transport.

    @ivar limit: the L{ConnectionLimit}.
    @ivar peer: the peer address, once connected.
    @ivar group: the peer's L{peer_group}, if there is a per-peer limit.
    @ivar state: L{HELD} (also before the limit decides), L{ACTIVE},
        L{CLOSING} (refused) or L{GONE}.
    @ivar readingPaused: whether reading stopped because the held bytes
        reached the hold buffer.
    """

    HELD, ACTIVE, CLOSING, GONE = "held", "active", "closing", "gone"

    def __init__(self, limit: ConnectionLimit, addr: IAddress) -> None:
        super().__init__(limit.wrappedFactory)
        self.limit = limit
        self.addr = addr
        self.state = self.HELD
        self.peer: Optional[IAddress] = None
        self.group: Hashable = None
        self.arrivedAt = 0.0
        self.holdTimer: Optional[IDelayedCall] = None
        self._closeTimer: Optional[CloseDeadline] = None
        self._heldData: List[bytes] = []
        self._heldBytes = 0
        self.readingPaused = False
        self._inputEnded = False

    def connectionMade(self) -> None:
        """
        Learn the peer and let the limit decide.
        """
        self.peer = self.transport.getPeer()
        if self.limit.maxPerPeer is not None:
            self.group = peer_group(self.peer)
        self.arrivedAt = self.limit.clock.seconds()
        self.limit.arrived(self)

    def dataReceived(self, data: bytes) -> None:
        """
        Pass data through once admitted; keep it while held (pausing reading
        past the hold buffer); discard it while closing.
        """
        if self.wrapped is not None:
            self.wrapped.dataReceived(data)
        elif self.state == self.HELD:
            self._heldData.append(data)
            self._heldBytes += len(data)
            if self._heldBytes >= self.limit.holdBuffer and not self.readingPaused:
                self.readingPaused = True
                self.transport.pauseProducing()
                self.limit.readingPaused()

    def readConnectionLost(self) -> None:
        """
        The client's end of input: forwarded once admitted; while held,
        remembered if the client sent anything (it is owed replies), else
        taken as the client leaving the queue; completing the close while
        closing.
        """
        if self.state == self.ACTIVE:
            super().readConnectionLost()
        elif self.state == self.HELD and self._heldBytes:
            self._inputEnded = True  # a half-close, owed replies on admission
        elif self.state == self.HELD:
            # Nothing sent, nothing owed: the client gave up waiting.
            self.state = self.CLOSING
            cancel(self.holdTimer)
            self.limit.left(self, wasActive=False)
            self.transport.loseConnection()
        else:
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        Forward the loss to the wrapped protocol and free the slot (or the
        place in the queue).
        """
        state, self.state = self.state, self.GONE
        cancel(self._closeTimer)
        if state == self.ACTIVE:
            try:
                super().connectionLost(reason)
            finally:
                self.limit.left(self, wasActive=True)
        elif state == self.HELD:
            cancel(self.holdTimer)
            self.limit.left(self, wasActive=False)

    def start(self) -> None:
        """
        Admit: build the wrapped protocol, connect it to the real transport,
        and deliver what the client sent (and its half-close) while held.
        """
        self.state = self.ACTIVE
        if self.readingPaused:
            self.readingPaused = False
            self.transport.resumeProducing()
        held, self._heldData = b"".join(self._heldData), []
        if not self.startWrapped(self.addr, self.transport, held):
            self.refuse()
            self.limit.left(self, wasActive=True)
        elif self._inputEnded:
            self.readConnectionLost()

    def refuse(self) -> None:
        """
        Close without starting the wrapped protocol: FIN, then discard input
        until the client closes (or C{closeTimeout} passes).
        """
        self.state = self.CLOSING
        self._heldData = []
        self._closeTimer = close_politely(
            self.transport, self.limit.clock, self.limit.closeTimeout
        )
