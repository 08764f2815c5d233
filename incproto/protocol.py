# -*- test-case-name: tests.unit.test_protocol,tests.unit.test_ordered -*-
"""The increment protocol on a Twisted transport: greeting, flow control, close.

L{IncrementProtocol} is thin glue between a transport, the parser
(L{incproto.parser.extract_payload}) and a payload handler, run inline or in
a pool (L{incproto.pools}).  It is honest about flow control (it registers
as a streaming producer, so a client that does not read its replies stops
being read from) and about half-close (a client that shuts down its sending
side still gets every byte it is owed).
"""

from __future__ import annotations

from functools import cached_property
from typing import Any, Callable, Dict, List, Optional, Tuple

from twisted.internet import tcp
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IDelayedCall,
    IHalfCloseableProtocol,
    ILoggingContext,
    IProtocol,
    IPushProducer,
    IReactorTime,
)
from twisted.internet.protocol import Factory, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from incproto._kernel.addresses import describe, describe_peer
from incproto._kernel.closing import CloseDeadline, close_ended, close_politely
from incproto._kernel.histogram import CONNECTION_SECONDS, HANDLER_SECONDS, Histogram
from incproto._kernel.linkedset import LinkedSet
from incproto._kernel.memory import give_back
from incproto._kernel.ratelimit import RateLimitedLog
from incproto._kernel.reactors import global_reactor
from incproto._kernel.sockets import unacknowledged
from incproto._kernel.timers import cancel
from incproto._kernel.writethrough import direct, write_through
from incproto.accesslog import AccessLog, EventAccessLog
from incproto.handlers import (
    HandlerReplyError,
    IncrementHandler,
    IPayloadHandler,
    checked_reply,
    describe_handler,
)
from incproto.ordered import OrderedWork, ReplyRatio
from incproto.parser import GREETING, extract_payload
from incproto.pools import HandlerPool, HandlerTimeoutError, PoolProcessLostError

# Why a connection closed, as logged and counted by IncrementFactory.closedBy.
CLIENT_CLOSED = "client closed"
CONNECTION_LOST = "connection lost"
IDLE_TIMEOUT = "idle timeout"
CLOSE_TIMEOUT = "close timeout"
HANDLER_ERROR = "handler error"
HANDLER_TIMEOUT = "handler timeout"
POOL_PROCESS_LOST = "pool process lost"
SHUTDOWN = "shutdown"
SERVER_CLOSED = "server closed"

# A connection that moved more bytes than this gives memory back when it
# closes (at most once a second: see IncrementFactory.closed).
GIVE_BACK_AFTER = 1024 * 1024

# Why reading from the client is paused: bits of IncrementProtocol._readPauses.
# Reading resumes only once none is left.
WRITES_BLOCKED = 1  # the client is not reading its replies
WORK_BEHIND = 2  # the pool is behind on this connection's work
DRAINING = 4  # the server is stopping: answer what was read, read no more
CLOSING = 8  # closing (incproto._kernel.closing reads only to discard)


class IdleWatch:
    """
    A connection's idle timeout, kept apart from the protocol so that a
    connection without one holds none of it (issue 24): the timer, when
    traffic last went either way, and what the client had acknowledged at
    the last check (see L{IncrementProtocol._checkIdle}).
    """

    __slots__ = ("acknowledged", "lastActivity", "owed", "timer")

    def __init__(self, timer: IDelayedCall, now: float) -> None:
        self.timer: Optional[IDelayedCall] = timer
        self.lastActivity = now
        self.acknowledged = 0
        self.owed = False


@implementer(IProtocol, ILoggingContext, IHalfCloseableProtocol, IPushProducer)
class IncrementProtocol:
    """
    Serve one connection of the increment protocol.

    It provides C{IProtocol} itself rather than subclass Twisted's
    C{Protocol}, whose instances have a dictionary and weak references:
    held connections are many, and this one keeps all its state, Twisted's
    attributes included, in slots (issue 24).

    The protocol is its own transport's producer: when the transport's write
    buffer fills because the client is not reading, the transport pauses
    this protocol, which stops reading from the client; when the buffer
    drains, reading resumes.  With a pool, reading also pauses while more
    than C{factory.workBuffer} bytes wait for it.  Memory per connection is
    therefore bounded however much the client sends.

    @ivar factory: the L{IncrementFactory} that built this protocol.
    @ivar inMessage: whether the client's stream is inside a message.
    @ivar bytesReceived: how many bytes the client has sent.
    @ivar bytesSent: how many reply bytes (greeting included) were written.
    """

    factory: IncrementFactory
    # Twisted types this as ITransport; it is really a TCP, UNIX or TLS
    # transport that is also a consumer and a push producer.
    transport: Any
    # The TCP connection replies are written through to, or None: set when
    # connected (incproto._kernel.writethrough).
    _direct: Optional[tcp.Connection]
    # The inline handler's transform, the clock that times it and where its
    # time is counted: set when connected.
    _transform: Callable[[bytes], bytes]
    _now: Callable[[], float]
    _timeHandler: Callable[[float], None]
    log = Logger()
    __slots__ = (
        "_closeReason",
        "_direct",
        "_idle",
        "_inlineRatio",
        "_inputEnded",
        "_linger",
        "_next",
        "_now",
        "_openedAt",
        "_prev",
        "_producing",
        "_readPauses",
        "_timeHandler",
        "_transform",
        "_work",
        "bytesReceived",
        "bytesSent",
        "connected",
        "factory",
        "inMessage",
        "transport",
    )  # fmt: skip

    def __init__(self) -> None:
        self.factory = None  # type: ignore[assignment]  # set by buildProtocol
        self.transport = None
        self.connected = 0
        self.inMessage = False
        self.bytesReceived = 0
        self.bytesSent = 0
        # The connection's work: made when connected with a pool; inline,
        # once a message must wait or be cut up (_startWork).
        self._work: Optional[OrderedWork] = None
        # Inline only: what sizes the handler's calls (see OrderedWork).
        self._inlineRatio: Optional[ReplyRatio] = None
        self._producing = False
        self._readPauses = 0
        self._inputEnded = False
        self._closeReason: Optional[str] = None
        self._linger: Optional[CloseDeadline] = None
        self._idle: Optional[IdleWatch] = None  # with an idle timeout only
        self._openedAt = 0.0
        # Its neighbours in factory.connections (a LinkedSet).
        self._prev: Optional[IncrementProtocol] = None
        self._next: Optional[IncrementProtocol] = None

    def makeConnection(self, transport: Any) -> None:
        """Connected, on C{transport} (as Twisted's C{BaseProtocol})."""
        self.connected = 1
        self.transport = transport
        self.connectionMade()

    def logPrefix(self) -> str:
        """The class's name, as Twisted's C{Protocol} says."""
        return self.__class__.__name__

    def connectionMade(self) -> None:
        """
        Send the greeting (and start the idle timer, if there is one).
        """
        factory = self.factory
        factory.opened(self)
        self._openedAt = factory.clock.seconds()
        if factory.idleTimeout is not None:
            self._idle = IdleWatch(
                factory.clock.callLater(factory.idleTimeout, self._checkIdle),
                self._openedAt,
            )
        ratio = factory.replyRatio
        if ratio.limit != factory.workBuffer:  # set after the factory was made
            ratio = factory.replyRatio = ReplyRatio(factory.workBuffer)
        if factory.pool is not None:
            self._startWork()
        else:  # OrderedWork only once a message must wait or be cut up
            self._inlineRatio = ratio
            self._now, self._timeHandler = factory._inlineTiming
        self._direct = direct(self.transport)  # see incproto._kernel.writethrough
        self._transform = factory._transform
        self._write(GREETING)
        if self._idle is not None:  # the peer's kernel, not its reading
            self._idle.acknowledged = self.bytesSent

    def _startWork(self) -> OrderedWork:
        """This connection's L{OrderedWork}, made now."""
        factory = self.factory
        self._work = OrderedWork(
            factory.pool,
            self,
            limit=factory.workBuffer,
            handler=factory.handler,
            ratio=factory.replyRatio,
        )
        return self._work

    def dataReceived(self, data: bytes) -> None:
        """
        Answer the bytes that arrived; replies are owed as soon as read.
        Once closing, input is read only to be discarded.

        The first input registers the protocol as its transport's producer.
        Not earlier: under TLS a write before the handshake completes pauses
        the registered producer, and a producer that stops reading then never
        lets the handshake finish.  Input arrives only after the handshake,
        and before it the greeting is all there is to send.
        """
        if not self._producing:
            self._producing = True
            self.transport.registerProducer(self, True)
        self.bytesReceived += len(data)
        if self._idle is not None:
            self._idle.lastActivity = self.factory.clock.seconds()
        if self._readPauses & CLOSING:
            return
        payload, self.inMessage = extract_payload(data, self.inMessage)
        if not payload:
            return
        ratio = self._inlineRatio
        if ratio is None or self._readPauses or len(payload) > ratio.most:
            # In the pool, or inline in pieces (see OrderedWork).
            (self._work or self._startWork()).add(payload)
            return
        # Inline, and nothing waits (which reading unpaused implies): answer
        # now.  This is OrderedWork's inline path, kept here for speed.
        now = self._now
        started = now()
        try:
            reply = self._transform(payload)
            if reply.__class__ is not bytes:
                reply = checked_reply(self.factory.handler, reply)
        except Exception:
            self._handlerFailed(Failure())
            return
        self._timeHandler(now() - started)
        if len(reply) != len(payload) or ratio.value is None:
            ratio.update(len(payload), len(reply))
        self._write(reply)

    def readConnectionLost(self) -> None:
        """
        The client shut down its sending side: deliver what is owed (once
        the pool has answered, if there is one), then close.
        """
        self._inputEnded = True
        if self._readPauses & CLOSING:
            self.transport.loseConnection()
        elif not self._workBusy:
            # The reactor's own event for the end of input: a connection
            # with nothing left to send may close within it.
            self._close(CLIENT_CLOSED, atEndOfInput=True)

    def writeConnectionLost(self) -> None:
        """
        Our sending side was shut down by L{finish}; the client's end of
        input (or the linger timeout) completes the close.
        """

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        The connection is gone, cleanly or not (a reset costs nothing but this
        connection); work still in a pool is dropped quietly.
        """
        cancel(self._linger)
        if self._idle is not None:
            cancel(self._idle.timer)
        self._dropWork()
        why = self._closeReason
        if self._linger is not None and self._linger.expired:
            why = CLOSE_TIMEOUT
        elif why is None:
            clean = self._inputEnded or reason.check(ConnectionDone)
            why = CLIENT_CLOSED if clean else CONNECTION_LOST
        self.factory.closed(self, why, self.factory.clock.seconds() - self._openedAt)

    def shutdown(self) -> None:
        """
        The server is stopping: answer what was already read (waiting for the
        pool if it has work of this connection), read nothing more, then
        L{finish}.
        """
        if self._workBusy:
            self._pauseReading(DRAINING)
        else:
            self.finish(SHUTDOWN)

    def abort(self, why: str = SHUTDOWN) -> None:
        """
        Abort the connection now (a reset, nothing more is delivered); its
        close is logged and counted as C{why}, unless it was closing
        already, for a reason of its own.
        """
        if self._closeReason is None:
            self._closeReason = why
        self.transport.abortConnection()

    def finish(self, why: str = SERVER_CLOSED) -> None:
        """
        Close the connection after every byte already written is delivered,
        ending with a FIN, not a reset.  This is the one close path.  Work
        still in a pool is dropped.

        The producer is unregistered first: Twisted's C{loseConnection()}
        waits for the write buffer to drain, and while a paused producer is
        registered a drained buffer resumes the producer instead of closing.
        If the client is still sending, see L{incproto._kernel.closing}: the sending
        side is shut down and input discarded until the client closes.  A
        client that neither reads what it is owed nor closes for
        C{factory.closeTimeout} seconds is aborted.

        @param why: the reason, logged and counted when the connection closes.
        """
        self._close(why, atEndOfInput=False)

    def _close(self, why: str, atEndOfInput: bool) -> None:
        """
        L{finish}; C{atEndOfInput} when called from the transport's
        C{readConnectionLost} (see L{close_ended}'s C{endOfInput}).
        """
        if self._readPauses & CLOSING or self.transport is None:
            return
        # No pauseProducing: the close reads on, only to discard.
        self._readPauses |= CLOSING
        self._closeReason = why
        if self._idle is not None:
            cancel(self._idle.timer)
        self._dropWork()
        if self._producing:
            self.transport.unregisterProducer()
        clock, timeout = self.factory.clock, self.factory.closeTimeout
        if self._inputEnded:
            self._linger = close_ended(
                self.transport,
                clock,
                timeout,
                endOfInput=self if atEndOfInput else None,
            )
        else:
            self._linger = close_politely(self.transport, clock, timeout)

    # IPushProducer: the transport calls these as its write buffer fills and
    # drains; they stop and start reading from the client.

    def pauseProducing(self) -> None:
        """
        The client is not reading its replies: stop reading its requests
        (and, with a pool, submitting its work or writing its results).
        """
        self._pauseReading(WRITES_BLOCKED)

    def resumeProducing(self) -> None:
        """
        The client caught up with its replies: read its requests again
        (unless the pool is behind on this connection's work, or the
        connection is closing or draining).
        """
        self._resumeReading(WRITES_BLOCKED)
        if self._work is not None:
            self._work.writesResumed()

    def stopProducing(self) -> None:
        """
        The transport is going away; there is nothing of ours to stop.
        """

    def _pauseReading(self, reason: int) -> None:
        """Stop reading from the client, for C{reason} (a bit)."""
        if not self._readPauses:
            self.transport.pauseProducing()
        self._readPauses |= reason

    def _resumeReading(self, reason: int) -> None:
        """C{reason} no longer holds: read again unless another does."""
        if self._readPauses & reason:
            self._readPauses &= ~reason
            if not self._readPauses:
                self.transport.resumeProducing()

    # What OrderedWork needs of its connection (incproto.ordered).

    @property
    def writesPaused(self) -> bool:
        """Whether the client is not reading its replies now."""
        return bool(self._readPauses & WRITES_BLOCKED)

    def deliver(self, reply: bytes) -> None:
        """Write a reply of the pool's."""
        self._write(reply)

    def workFailed(self, failure: Failure) -> None:
        """A job of this connection's failed in the pool: close."""
        self._handlerFailed(failure)

    def workBehind(self, behind: bool) -> None:
        """Pause reading while the pool is behind on this connection."""
        if behind:
            self._pauseReading(WORK_BEHIND)
        else:
            self._resumeReading(WORK_BEHIND)

    def workDone(self) -> None:
        """Every reply of the pool's is written: finish a close that waited."""
        if self._inputEnded:
            self.finish(CLIENT_CLOSED)
        elif self._readPauses & DRAINING:
            self.finish(SHUTDOWN)

    @property
    def _workBusy(self) -> bool:
        return self._work is not None and self._work.busy

    def _dropWork(self) -> None:
        if self._work is not None:
            self._work.cancel()

    def _checkIdle(self) -> None:
        """
        Close the connection if no traffic went either way for
        C{idleTimeout} seconds.  A client reading what it is owed, however
        slowly, is traffic: if it acknowledged bytes since the last check
        while some were owed then or are still owed now, that counts as
        traffic now (a check cannot tell when).  Bytes acknowledged with
        none owed at the last check were written since, and their write
        counted already.
        """
        timeout, watch = self.factory.idleTimeout, self._idle
        assert timeout is not None and watch is not None
        now = self.factory.clock.seconds()
        left = unacknowledged(self.transport)
        if left is not None:
            acknowledged = self.bytesSent - left
            if acknowledged > watch.acknowledged and (left or watch.owed):
                watch.lastActivity = now
            watch.acknowledged, watch.owed = acknowledged, left > 0
        idle = now - watch.lastActivity
        if idle >= timeout:
            watch.timer = None
            self.finish(IDLE_TIMEOUT)
        else:
            watch.timer = self.factory.clock.callLater(timeout - idle, self._checkIdle)

    def _handlerFailed(self, failure: Failure) -> None:
        """
        The handler raised or returned no bytes, or its pool lost or timed
        out its job: log it (rate-limited, see
        L{IncrementFactory.handlerFailed}) and close.
        """
        peer = describe(self.transport.getPeer())
        pool_fault = failure.check(HandlerTimeoutError, PoolProcessLostError)
        self.factory.handlerFailed(failure, peer)
        if pool_fault is None:
            self.finish(HANDLER_ERROR)
        elif pool_fault is HandlerTimeoutError:
            self.finish(HANDLER_TIMEOUT)
        else:
            self.finish(POOL_PROCESS_LOST)

    def _write(self, data: bytes) -> None:
        self.bytesSent += len(data)
        if self._idle is not None:
            self._idle.lastActivity = self.factory.clock.seconds()
        if self._direct is None:
            self.transport.write(data)
        else:
            write_through(self._direct, data)


class IncrementFactory(Factory):
    """
    Build L{IncrementProtocol}s.  Drop it into any Twisted application:
    C{endpoint.listen(IncrementFactory())}.

    @ivar clock: the time source for timeouts; set it when making the
        factory (inline connections keep its C{seconds}, made once).
    @ivar closeTimeout: how long, in seconds, a connection being closed
        waits for the client to finish sending before it is aborted.
    @ivar idleTimeout: seconds without traffic either way after which a
        connection is closed, or C{None} for never.
    @ivar pool: the pool the handler runs in, or C{None} to run it
        inline on the reactor thread.
    @ivar workBuffer: payload bytes a connection may have waiting for its
        handler (in the pool, or inline while its client does not read)
        before reading from it pauses; also what sizes a job's reply (see
        L{OrderedWork}).
    @ivar replyRatio: the handler's last ratio of reply to payload bytes,
        which sizes every connection's jobs (L{ReplyRatio}).
    @ivar logConnections: whether each connection's close is logged (the
        access log).
    @ivar accessLog: where closes are logged: an L{AccessLog}.
    @ivar connections: the connections open now, oldest first (a set: a
        L{LinkedSet}, which holds a connection in 16 bytes where a C{set}
        takes 26 to 105).
    @ivar accepted: connections opened, in total.
    @ivar closedBy: connections closed, in total, by reason.
    @ivar bytesIn: bytes received on closed connections, in total.
    @ivar bytesOut: bytes sent on closed connections, in total.
    @ivar handlerErrors: how many times the handler raised or returned
        something other than bytes, in total.
    @ivar faultLogInterval: seconds between two logged handler faults; in
        between they are counted, and the count logged once.
    @ivar connectionSeconds: how long closed connections were open, a
        L{incproto._kernel.histogram.Histogram}.
    @ivar handlerSeconds: how long the inline handler took per read's
        payload, a L{incproto._kernel.histogram.Histogram} (a pool times its
        own jobs).
    """

    # Twisted types Factory.protocol through a generic that older Twisted
    # releases (still used on PyPy 3.9) cannot be subscripted with.
    protocol = IncrementProtocol  # type: ignore[assignment]
    noisy = False
    log = Logger()

    def __init__(
        self,
        clock: Optional[IReactorTime] = None,
        closeTimeout: float = 30.0,
        handler: Optional[IPayloadHandler] = None,
        pool: Optional[HandlerPool] = None,
        workBuffer: int = 256 * 1024,
        idleTimeout: Optional[float] = None,
        logConnections: bool = True,
        accessLog: Optional[AccessLog] = None,
        faultLogInterval: float = 10.0,
    ) -> None:
        """
        @param handler: runs inline; the increment by default.
        @param pool: a started L{HandlerPool} service (L{ThreadHandlerPool} or
            L{ProcessHandlerPool}) that runs its own handler; give one or the
            other, not both.
        @param accessLog: where closes are logged; Twisted log events
            (L{EventAccessLog}) by default, L{incproto.accesslog.FileAccessLog}
            for a buffered file at a fraction of the cost.
        @raise ValueError: if both a handler and a pool are given.
        """
        if handler is not None and pool is not None:
            raise ValueError("give a handler or a pool (which has one), not both")
        self.clock = clock if clock is not None else global_reactor()
        self.closeTimeout = closeTimeout
        self.idleTimeout = idleTimeout
        self.pool = pool
        self.handler = pool.handler if pool else handler or IncrementHandler()
        self.workBuffer = workBuffer
        self.replyRatio = ReplyRatio(workBuffer)
        self.logConnections = logConnections
        self.accessLog = accessLog if accessLog is not None else EventAccessLog()
        self.connections = LinkedSet()
        self.accepted = 0
        self.closedBy: Dict[str, int] = {}
        self.bytesIn = 0
        self.bytesOut = 0
        self.handlerErrors = 0
        self.faultLogInterval = faultLogInterval
        self._faults = RateLimitedLog(
            self.log,
            self.clock,
            faultLogInterval,
            "{count} more handler faults in the last {interval}s (not logged)",
        )
        self.connectionSeconds = Histogram(CONNECTION_SECONDS)
        self.handlerSeconds = Histogram(HANDLER_SECONDS)
        self._empty: List[Deferred[None]] = []
        self._giveBack: Optional[IDelayedCall] = None

    # Bound methods that every connection calls are made once, here: made
    # per connection, each is 64 bytes of every held connection (issue 24).

    @cached_property
    def _inlineTiming(self) -> Tuple[Callable[[], float], Callable[[float], None]]:
        """The clock's C{seconds} and C{handlerSeconds.observe}."""
        return (self.clock.seconds, self.handlerSeconds.observe)

    @property
    def handler(self) -> IPayloadHandler:
        """The L{IPayloadHandler} that answers payload."""
        return self._handler

    @handler.setter
    def handler(self, handler: IPayloadHandler) -> None:
        self._handler = handler
        self._transform = handler.transform

    def doStop(self) -> None:
        """Cancel the pending summary of handler faults."""
        self._faults.stop()
        cancel(self._giveBack)
        self._giveBack = None
        super().doStop()

    def _gaveBack(self) -> None:
        """Connections that held megabytes closed: give the memory back."""
        self._giveBack = None
        give_back()

    def handlerFailed(self, failure: Failure, peer: str) -> None:
        """
        Count a handler fault (C{failure}) that closes the connection from
        C{peer}, and log it: at most one every C{faultLogInterval} seconds,
        the others counted in one line at the end of the interval.

        A reply that is not bytes (L{HandlerReplyError}) and a pool's own
        fault (L{HandlerTimeoutError}, L{PoolProcessLostError}) are one line;
        an exception of the handler's comes with its traceback: from the
        pool process where it ran, if it ran in one (pebble sends it as the
        exception's C{traceback}), so that it shows the handler's frames.
        """
        pool_fault = failure.check(HandlerTimeoutError, PoolProcessLostError)
        if pool_fault is None:
            self.handlerErrors += 1
        if not self._faults.allow():
            return
        if pool_fault is not None:
            self.log.warn(
                "{error}; closing the connection from {peer}",
                error=failure.getErrorMessage(),
                peer=peer,
            )
        elif failure.check(HandlerReplyError):
            self.log.error(
                "{error}; closing the connection from {peer}",
                error=failure.getErrorMessage(),
                peer=peer,
            )
        else:
            remote = getattr(failure.value, "traceback", None)
            if isinstance(remote, str):
                self.log.error(
                    "handler {handler} failed; closing the connection from "
                    "{peer}\n{traceback}",
                    handler=describe_handler(self.handler),
                    peer=peer,
                    traceback=remote.rstrip(),
                )
                return
            self.log.failure(
                "handler {handler} failed; closing the connection from {peer}",
                failure,
                handler=describe_handler(self.handler),
                peer=peer,
            )

    def opened(self, protocol: IncrementProtocol) -> None:
        """
        Count a new connection (its close is logged, with everything known).
        """
        self.connections.add(protocol)
        self.accepted += 1

    def closed(self, protocol: IncrementProtocol, why: str, duration: float) -> None:
        """
        Count and log a connection that closed, with its totals.
        """
        self.connections.discard(protocol)
        self.closedBy[why] = self.closedBy.get(why, 0) + 1
        moved = protocol.bytesReceived + protocol.bytesSent
        if moved > GIVE_BACK_AFTER and self._giveBack is None:
            self._giveBack = self.clock.callLater(1.0, self._gaveBack)
        self.bytesIn += protocol.bytesReceived
        self.bytesOut += protocol.bytesSent
        self.connectionSeconds.observe(duration)
        if self.logConnections:
            self.accessLog.record(
                describe_peer(protocol.transport),
                why,
                duration,
                protocol.bytesReceived,
                protocol.bytesSent,
            )
        if not self.connections:
            empty, self._empty = self._empty, []
            for d in empty:
                d.callback(None)

    def drain(self) -> Deferred[None]:
        """
        Close every connection gracefully (L{IncrementProtocol.shutdown}):
        what was already read is answered, nothing more is read, and each
        connection ends with a FIN once its replies are flushed.

        @return: a Deferred that fires once no connection is left.
        """
        for protocol in list(self.connections):
            protocol.shutdown()
        return self.whenEmpty()

    def whenEmpty(self) -> Deferred[None]:
        """
        @return: a Deferred that fires once no connection is left (at once
            if none is open).
        """
        if not self.connections:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._empty.append(d)
        return d
