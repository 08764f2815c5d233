# -*- test-case-name: tests.unit.test_tap -*-
"""The serving stack of one incproto process, built from a L{ServerConfig}.

A connection travels: endpoint (with the PROXY header, under C{proxy:}) ->
L{ConnectionLimit} -> L{IncrementFactory}'s protocol -> parser -> handler,
inline or in a handler pool -> transport.  L{serving_stack} builds those
pieces from the inside out and returns them as one service, whose children
stop in order: the listener first, then a graceful drain of the
connections, then the handler pool, and the metrics listener and access log
last.
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import (
    IProtocolFactory,
    IReactorTime,
    IStreamServerEndpoint,
)

from incproto._kernel.reactors import global_reactor
from incproto.accesslog import FileAccessLog
from incproto.accesslog import choose as choose_access_log
from incproto.config import ServerConfig
from incproto.handlers import IPayloadHandler, load_handler
from incproto.limit import ConnectionLimit
from incproto.pools import HandlerPool, ProcessHandlerPool, ThreadHandlerPool
from incproto.protocol import IncrementFactory
from incproto.proxy import ProxyEndpoint
from incproto.serving.health import service_readiness
from incproto.serving.metrics import IncprotoCollector
from incproto.serving.service import (
    DrainingService,
    FileLimitService,
    ListeningService,
    SequentialMultiService,
)
from incproto.serving.signals import STOP, SignalHandling
from incproto.serving.web import metrics_listener, metrics_site

# Descriptors a process needs beyond one per connection it may hold.
SPARE_FILES = 64


class IncprotoService(SequentialMultiService):
    """
    The service of an incproto server: its children stop one after the
    other, within one C{drain_timeout}.  L{serving_stack} gives it its
    parts, for code that runs it (a C{--workers} worker) to reach them.

    @ivar factory: the protocol factory its connections are served by.
    @ivar limit: the L{ConnectionLimit} around it, if any.
    @ivar pool: the handler pool, if any.
    @ivar listener: the listening service.
    @ivar signals: its signal handling.
    @ivar collector: the metrics collector of its connections.
    """

    factory: IncrementFactory
    limit: Optional[ConnectionLimit] = None
    pool: Optional[HandlerPool] = None
    listener: ListeningService
    signals: SignalHandling
    collector: IncprotoCollector


def serving_stack(
    config: ServerConfig,
    reactor: Optional[IReactorTime] = None,
    *,
    endpoint: Optional[IStreamServerEndpoint] = None,
    hangup: Any = STOP,
    commandLine: Any = None,
    handler: Optional[IPayloadHandler] = None,
) -> IncprotoService:
    """
    Build the service that serves C{config} in this process.

    @param config: what to serve, and how.
    @param reactor: listens, keeps time and runs the handler pool; the
        global reactor by default.
    @param endpoint: where to listen, instead of C{config.endpoint} (a
        worker's inherited socket).
    @param hangup: what SIGHUP does (see L{SignalHandling}): by default a
        graceful stop; C{None} (a worker) ignores it.
    @param commandLine: twistd's or twist's options, which pick the
        default access log (see L{incproto.accesslog.choose}).
    @param handler: C{config.handler}, already loaded (by L{incproto.tap},
        which checks it): a handler factory then runs once, not twice.
    @return: a service that listens while it runs, and raises
        L{incproto.serving.service.ListenError} from its start if it cannot.
    """
    if reactor is None:
        reactor = global_reactor()
    service = IncprotoService(config.drain_timeout, reactor)

    # The handler, inline or in a pool of threads or processes.
    if handler is None:
        handler = load_handler(config.handler)
    pool: Optional[HandlerPool] = None
    if config.pool_size:
        kind = ThreadHandlerPool if config.threads else ProcessHandlerPool
        pool = kind(
            handler,
            config.pool_size,
            reactor=reactor,
            drainTimeout=config.drain_timeout,
            handlerTimeout=config.handler_timeout,
        )

    # The protocol, and the access log its connections write at close.
    access_log = None
    if not config.no_connection_log:
        access_log = choose_access_log(config.access_log, commandLine, reactor)
    increment = IncrementFactory(
        clock=reactor,
        handler=None if pool else handler,
        pool=pool,
        idleTimeout=config.idle_timeout,
        logConnections=not config.no_connection_log,
        accessLog=access_log,
    )

    # Admission: at most max_connections served, the rest queued or closed.
    factory: IProtocolFactory = increment
    limit: Optional[ConnectionLimit] = None
    if config.max_connections is not None:
        factory = limit = ConnectionLimit(
            increment,
            config.max_connections,
            queueSize=config.queue or 0,
            queueTimeout=config.queue_timeout,
            maxPerPeer=config.max_per_peer,
            clock=reactor,
        )

    # The endpoint; under proxy: it reads each PROXY header first.
    if endpoint is None:
        endpoint = serverFromString(reactor, config.endpoint)
    held = (config.max_connections or 0) + (config.queue or 0)  # served + queued
    if isinstance(endpoint, ProxyEndpoint) and limit is not None:
        # The limit counts a connection once its header names the client;
        # until then, hold no more than the limit would serve and queue.
        endpoint.maxPending = held
    listener = ListeningService(endpoint, factory, config.port, clock=reactor)
    listener.setName("incproto")

    # The services, in the order they start; they stop in reverse.
    if isinstance(access_log, FileAccessLog):
        access_log.setServiceParent(service)  # after the drain logs its closes
    FileLimitService(held + SPARE_FILES if limit else 0).setServiceParent(service)
    if pool is not None:
        pool.setServiceParent(service)
    drainer = DrainingService(increment, config.drain_timeout, reactor)
    drainer.setServiceParent(service)
    proxy = endpoint if isinstance(endpoint, ProxyEndpoint) else None
    service.collector = IncprotoCollector(increment, limit, pool, proxy)
    if config.metrics is not None:
        site = metrics_site(
            service.collector, reactor, service_readiness(listener, drainer)
        )
        service.addServiceStoppedLast(metrics_listener(reactor, config.metrics, site))
    listener.setServiceParent(service)
    reopen = None
    if isinstance(access_log, FileAccessLog) and access_log.path is not None:
        reopen = access_log.reopen
    signals = SignalHandling(reactor, hangup, reopen)
    signals.setServiceParent(service)
    service.factory, service.limit, service.pool = increment, limit, pool
    service.listener, service.signals = listener, signals
    return service
