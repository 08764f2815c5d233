# -*- test-case-name: tests.unit.test_tap -*-
"""The serving stack of one incproto process, built from a L{ServerConfig}.

A connection travels: endpoint (with its preamble: the PROXY header under
C{proxy:}, the TLS handshake under C{ssl:}) -> L{ConnectionLimit} ->
L{IncrementFactory}'s protocol -> parser -> handler, inline or in a handler
pool -> transport.  L{serving_stack} builds those
pieces from the inside out and returns them as one service, whose children
stop in order: the listener first, then a graceful drain of the
connections, then the handler pool, and the metrics listener and access log
last.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import (
    IProtocolFactory,
    IReactorTime,
    IStreamServerEndpoint,
)
from twisted.logger import Logger

from incproto._kernel.preambles import (
    DEFAULT_MAX_PREAMBLES,
    MIN_PREAMBLES,
    Preambles,
)
from incproto._kernel.reactors import global_reactor
from incproto._kernel.sdnotify import SystemdNotifier
from incproto.accesslog import FileAccessLog
from incproto.accesslog import choose as choose_access_log
from incproto.config import ServerConfig
from incproto.handlers import IPayloadHandler, load_handler
from incproto.handshake import HandshakeGate, is_tls
from incproto.limit import ConnectionLimit
from incproto.pools import HandlerPool, ProcessHandlerPool, ThreadHandlerPool
from incproto.protocol import IncrementFactory
from incproto.proxy import ProxyEndpoint, TrustedSources
from incproto.serving.health import service_readiness
from incproto.serving.metrics import IncprotoCollector
from incproto.serving.service import (
    DrainingService,
    FileLimitService,
    ListeningService,
    SequentialMultiService,
)
from incproto.serving.signals import STOP, SignalHandling
from incproto.serving.watchdog import Heartbeat, abort_stalled, with_last_words
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
    @ivar heartbeat: the reactor's heartbeat (C{--watchdog}), if any.
    @ivar config: what it serves, logged in one line as it starts (not by
        a C{--workers} worker: its supervisor does).
    """

    factory: IncrementFactory
    limit: Optional[ConnectionLimit] = None
    pool: Optional[HandlerPool] = None
    listener: ListeningService
    signals: SignalHandling
    collector: IncprotoCollector
    heartbeat: Optional[Heartbeat] = None
    config: Optional[ServerConfig] = None
    log = Logger()
    _announced = False

    def privilegedStartService(self) -> None:
        """Log the settings in force, then start (twistd listens here)."""
        self._announce()
        super().privilegedStartService()

    def startService(self) -> None:
        """Log the settings in force if not yet done (C{twist}), then start."""
        self._announce()
        super().startService()

    def _announce(self) -> None:
        if self.config is not None and not self._announced:
            self._announced = True
            self.log.info(
                "incproto settings: {settings}",
                settings=self.config.summary(),
                config=self.config.to_json(),
            )


def preamble_bound(config: ServerConfig) -> int:
    """
    How many connections may be in their preamble at once: as many as the
    limit serves and queues (but at least L{MIN_PREAMBLES}), or
    L{DEFAULT_MAX_PREAMBLES} without a limit.
    """
    if config.max_connections is None:
        return DEFAULT_MAX_PREAMBLES
    return max(MIN_PREAMBLES, config.max_connections + (config.queue or 0))


def as_proxy(endpoint: IStreamServerEndpoint) -> Optional[ProxyEndpoint]:
    """C{endpoint}, if it reads PROXY headers."""
    return endpoint if isinstance(endpoint, ProxyEndpoint) else None


def serving_stack(
    config: ServerConfig,
    reactor: Optional[IReactorTime] = None,
    *,
    endpoint: Optional[IStreamServerEndpoint] = None,
    hangup: Any = STOP,
    commandLine: Any = None,
    handler: Optional[IPayloadHandler] = None,
    abort: Optional[Callable[[float, float], None]] = abort_stalled,
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
    @param abort: what ends the process once its reactor has stalled for
        C{config.watchdog} seconds (see L{incproto.serving.watchdog});
        C{None} (a worker, whose supervisor watches it) only measures.
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
    if config.threads:
        pool = ThreadHandlerPool(
            handler,
            config.threads,
            reactor=reactor,
            drainTimeout=config.drain_timeout,
            handlerTimeout=config.handler_timeout,
        )
    elif config.processes:
        pool = ProcessHandlerPool(
            handler,
            config.processes,
            maxJobsPerProcess=config.max_jobs_per_process or 0,
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

    # The preamble (TLS handshake, PROXY header): bounded and timed on its
    # own, so that a connection takes a slot of the limit only once done.
    bound = preamble_bound(config)
    preambles = Preambles(bound, config.handshake_timeout, reactor)
    tls, proxy = is_tls(endpoint), as_proxy(endpoint)
    if tls:
        factory = HandshakeGate(factory, preambles)
    if proxy is not None:
        proxy.preambles = preambles
        if config.proxy_trusted is not None:
            proxy.trusted = TrustedSources.parse(config.proxy_trusted)
    listener = ListeningService(endpoint, factory, config.port, clock=reactor)
    listener.setName("incproto")

    # The services, in the order they start; they stop in reverse.
    if isinstance(access_log, FileAccessLog):
        access_log.setServiceParent(service)  # after the drain logs its closes
    heartbeat = None
    if config.watchdog is not None:  # stopped after the drain and the pool
        if abort is not None and isinstance(access_log, FileAccessLog):
            abort = with_last_words(abort, access_log.salvage)
        heartbeat = Heartbeat(config.watchdog, reactor, abort)
        heartbeat.setServiceParent(service)
    files = held + bound + SPARE_FILES if limit else 0
    FileLimitService(files).setServiceParent(service)
    if pool is not None:
        pool.setServiceParent(service)
    drainer = DrainingService(increment, config.drain_timeout, reactor)
    drainer.setServiceParent(service)
    service.collector = IncprotoCollector(
        increment,
        limit,
        pool,
        proxy,
        preambles if tls or proxy else None,
        listener,
        heartbeat,
    )
    if config.metrics is not None:
        ready = service_readiness(listener, drainer, pool)
        site = metrics_site(service.collector, reactor, ready)
        service.addServiceStoppedLast(metrics_listener(reactor, config.metrics, site))
    listener.setServiceParent(service)
    reopen = None
    if isinstance(access_log, FileAccessLog) and access_log.path is not None:
        reopen = access_log.reopen
    signals = SignalHandling(reactor, hangup, reopen)
    signals.setServiceParent(service)
    SystemdNotifier(reactor).setServiceParent(service)  # ready once listening
    service.factory, service.limit, service.pool = increment, limit, pool
    service.heartbeat = heartbeat
    service.listener, service.signals = listener, signals
    service.config = config
    return service
