# -*- test-case-name: tests.test_tap -*-
"""twistd/twist command line and service wiring: C{twistd -n incproto}.

Wiring only: L{Options} turns the command line into an endpoint description
(rejecting bad input with a one-line usage error), and L{makeService} turns
options into an C{IService}, so the same wiring works from code::

    service = makeService(Options.parse(["--port", "9090"]))
"""

from __future__ import annotations

import os
import pickle
import re
import sys
from typing import Any, Callable, List, Optional, Sequence, cast

from twisted.application.service import MultiService, Service
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import (
    IProtocolFactory,
    IReactorTime,
    IStreamServerEndpoint,
)
from twisted.python import usage

import twisted
from incproto._version import __version__
from incproto.accesslog import AccessLog, FileAccessLog
from incproto.accesslog import choose as choose_access_log
from incproto.handlers import load_handler
from incproto.limit import DEFAULT_QUEUE_SIZE, ConnectionLimit
from incproto.offload import (
    DEFAULT_DRAIN_TIMEOUT,
    HandlerPool,
    ProcessHandlerPool,
    ThreadHandlerPool,
)
from incproto.protocol import IncrementFactory
from incproto.proxy import ProxyEndpoint
from incproto.service import (
    DrainingService,
    FileLimitService,
    ListeningService,
    SequentialMultiService,
)
from incproto.signals import STOP, SignalHandling
from incproto.wrapping import global_reactor

DEFAULT_PORT = "9090"
DEFAULT_BACKLOG = 1024
DEFAULT_HANDLER = "incproto.handlers:increment_handler"

# Endpoint kinds whose parsers accept a backlog= argument.
_BACKLOG_KINDS = frozenset({"tcp", "tcp6", "ssl", "unix"})


def _checked(
    convert: Callable[[str], Any], valid: Callable[[Any], bool], problem: str, doc: str
) -> Callable[[str], Any]:
    """An option coercer: C{convert}, then reject values not C{valid}."""

    def coerce(value: str) -> Any:
        number = convert(value)
        if not valid(number):
            raise ValueError(f"{value} {problem}")
        return number

    coerce.coerceDoc = doc  # type: ignore[attr-defined]
    return coerce


_positive_int = _checked(
    int, lambda n: n >= 1, "is not a positive integer", "A positive integer."
)
_non_negative_int = _checked(
    int, lambda n: n >= 0, "is negative", "A whole number, 0 or more."
)
_positive_float = _checked(
    float,
    lambda n: n > 0,
    "is not a positive number of seconds",
    "Seconds, more than 0.",
)


def endpoint_description(port: str, backlog: int) -> str:
    """
    Turn C{--port} into a Twisted server endpoint description.

    A bare number listens on TCP on all interfaces.  C{tcp:}, C{tcp6:},
    C{ssl:} and C{unix:} descriptions, alone or under C{haproxy:}, get
    C{backlog} unless they name a backlog of their own.

    @param port: a port number or an endpoint description.
    @param backlog: the listen backlog to use where none is given.
    @raise usage.UsageError: if a bare number is out of range.
    """
    if re.fullmatch("[0-9]+", port):
        if int(port) > 65535:
            raise usage.UsageError(
                f"--port {port}: a port number is between 0 and 65535"
            )
        return f"tcp:{int(port)}:backlog={backlog}"
    inner = port[len("haproxy:") :] if port.startswith("haproxy:") else port
    if inner.split(":", 1)[0] in _BACKLOG_KINDS and "backlog=" not in port:
        return f"{port}:backlog={backlog}"
    return port


class Options(usage.Options):
    """
    The command line of C{twistd incproto} and C{twist incproto}.

    After parsing, C{self["endpoint"]} holds the endpoint description that
    L{makeService} listens on.
    """

    synopsis = "[options]"
    # A worker's port is an inherited socket, whatever --port names.
    checkPort = True
    longdesc = (
        "Serve the increment protocol: greet each connection with '*', then "
        "send back every byte between '^' and '$' plus one."
    )
    optFlags = [
        [
            "no-connection-log",
            None,
            "Do not log each connection's close (peer, reason, duration, "
            "bytes); counters and metrics still count every connection.",
        ],
    ]
    optParameters = [
        [
            "port",
            "p",
            DEFAULT_PORT,
            "Where to listen: a TCP port number, or a Twisted server endpoint "
            "description (tcp:, tcp6:, unix:, ssl:, haproxy:, systemd:).",
        ],
        [
            "backlog",
            None,
            DEFAULT_BACKLOG,
            "Listen backlog for tcp:, tcp6:, ssl: and unix: ports that do not "
            "set backlog= themselves.",
            _positive_int,
        ],
        [
            "max-connections",
            None,
            None,
            "Serve at most this many connections at once; hold the rest in a "
            "queue (see --queue). No limit by default",
            _positive_int,
        ],
        [
            "queue",
            None,
            None,
            "With --max-connections: how many connections may wait, accepted "
            "but not greeted, for a free slot; beyond it they are closed. 0 "
            f"rejects at once. {DEFAULT_QUEUE_SIZE} by default",
            _non_negative_int,
        ],
        [
            "queue-timeout",
            None,
            None,
            "With --max-connections: close a connection that waited this long "
            "in the queue. No timeout by default",
            _positive_float,
        ],
        [
            "max-per-peer",
            None,
            None,
            "With --max-connections: at most this many connections (served and "
            "waiting) from one client address",
            _positive_int,
        ],
        [
            "handler",
            None,
            DEFAULT_HANDLER,
            "The payload handler, as module:name: a function bytes -> bytes, an "
            "IPayloadHandler, or a callable that returns one. The module is "
            "imported from sys.path or the current directory. "
            "incproto.handlers:hashing and incproto.handlers:pure_python are "
            "CPU-heavy demos.",
        ],
        [
            "threads",
            None,
            None,
            "Run the handler in a dedicated pool of this many threads (for "
            "handlers that release the GIL). Inline on the reactor by default",
            _positive_int,
        ],
        [
            "processes",
            None,
            None,
            "Run the handler in a pool of this many processes (for handlers "
            "that hold the GIL). Inline on the reactor by default",
            _positive_int,
        ],
        [
            "handler-timeout",
            None,
            None,
            "With --threads or --processes: close the connection of a handler "
            "call that runs longer than this many seconds (a process running "
            "it is killed and replaced; a thread cannot be: see docs/pools.md). "
            "No limit by default",
            _positive_float,
        ],
        [
            "metrics",
            None,
            None,
            "Serve Prometheus metrics at /metrics and health at /healthz "
            "(200 while listening and not draining, else 503) on this "
            "endpoint (a port number means tcp:PORT:interface=127.0.0.1). "
            "Off by default.",
        ],
        [
            "idle-timeout",
            None,
            None,
            "Close connections with no traffic either way for this many "
            "seconds. Off by default",
            _positive_float,
        ],
        [
            "workers",
            None,
            None,
            "Serve the port from this many worker processes, supervised by "
            "this one (restarted if they die, drained on shutdown). Limits "
            "apply per worker. One process by default",
            _positive_int,
        ],
        [
            "access-log",
            None,
            None,
            "Where each connection's close is logged: - (standard output) or "
            "a file to append to, buffered and written at least once a "
            "second; or log (an event in twistd's or twist's log, with "
            "fields, at several times the CPU). Default: standard output when "
            "the log is text there (twistd -n, twist on a terminal), else log.",
        ],
        [
            "drain-timeout",
            None,
            DEFAULT_DRAIN_TIMEOUT,
            "On shutdown (SIGTERM, SIGINT), give connections and handler work "
            "this many seconds to finish, then abort them.",
            _positive_float,
        ],
    ]

    @classmethod
    def parse(cls, argv: Sequence[str]) -> Options:
        """
        Parse C{argv} into new options: a shortcut for code and tests.

        @raise usage.UsageError: for bad input.
        """
        options = cls()
        options.parseOptions(list(argv))
        return options

    def opt_version(self) -> None:
        """
        Display incproto and Twisted versions and exit.
        """
        print(f"incproto {__version__} (Twisted {twisted.__version__})")
        sys.exit(0)

    def postOptions(self) -> None:
        """
        Check that C{--port} names an endpoint, without listening yet.
        """
        if self["max-connections"] is None:
            for option in ("queue", "queue-timeout", "max-per-peer"):
                if self[option] is not None:
                    raise usage.UsageError(f"--{option} needs --max-connections")
        elif self["queue"] is None:
            self["queue"] = DEFAULT_QUEUE_SIZE
        if self["threads"] is not None and self["processes"] is not None:
            raise usage.UsageError("--threads and --processes exclude each other")
        if self["handler-timeout"] is not None and not (
            self["threads"] or self["processes"]
        ):
            raise usage.UsageError(
                "--handler-timeout needs --threads or --processes (an inline "
                "handler runs on the reactor thread, which nothing can interrupt)"
            )
        self.handlerName: str = self["handler"]
        try:
            self["handler"] = load_handler(self["handler"])
        except ValueError as e:
            raise usage.UsageError(f"--handler {self['handler']}: {e}") from None
        if self["processes"] is not None:
            try:
                pickle.dumps(self["handler"])
            except Exception as e:
                raise usage.UsageError(
                    "--processes needs a picklable handler (a module-level "
                    f"function, or an instance of a module-level class): {_reason(e)}"
                ) from None
        self["endpoint"] = endpoint_description(self["port"], self["backlog"])
        metrics = self["metrics"]
        if metrics is not None and re.fullmatch("[0-9]+", metrics):
            self["metrics"] = f"tcp:{metrics}:interface=127.0.0.1"
        if metrics is not None:
            _check_endpoint("--metrics", metrics, self["metrics"])
        if self.checkPort:
            _check_endpoint("--port", self["port"], self["endpoint"])
        if self["access-log"] not in (None, "-", "log"):
            try:
                open(self["access-log"], "a").close()
            except OSError as e:
                raise usage.UsageError(
                    f"--access-log {self['access-log']}: {e.strerror}"
                ) from None

    def worker_options(self) -> List[str]:
        """
        The command line a worker runs with: these options, less
        C{--workers}.
        """
        argv = []
        parameters = cast(List[List[Any]], self.optParameters)
        for name, _, default, *_ in parameters:
            value = self.handlerName if name == "handler" else self[name]
            if name in ("workers", "metrics"):
                continue  # the supervisor serves the metrics of all workers
            if value is not None and value != default:
                argv.append(f"--{name}={value}")
        flags = cast(List[List[Any]], self.optFlags)
        argv += [f"--{flag[0]}" for flag in flags if self[flag[0]]]
        return argv


def _check_endpoint(option: str, given: str, description: str) -> None:
    """Parse an endpoint description now, to fail with a usage error."""
    try:
        # Endpoint parsers only store the reactor, so parsing with none
        # checks the description (and loads TLS keys) before twistd
        # daemonizes, without importing the global reactor here.
        serverFromString(cast(Any, None), description)
    except Exception as e:
        raise usage.UsageError(
            f"{option} {given}: {_explain(description, e)}"
        ) from None


def _explain(description: str, error: Exception) -> str:
    """Why an endpoint description failed to parse, in one line that names
    the fix where incproto knows it."""
    kind = description[8:] if description.startswith("haproxy:") else description
    kind = kind.split(":", 1)[0]
    if kind == "ssl" and isinstance(error, ImportError):
        return (
            "TLS needs pyOpenSSL, which is not installed: "
            f"pip install 'incproto[tls]' ({_reason(error)})"
        )
    if kind == "systemd" and isinstance(error, (KeyError, IndexError)):
        chosen = re.search("(name|index)=([^:]*)", description)
        which = f"{chosen.group(1)} {chosen.group(2)!r}" if chosen else "given"
        if "LISTEN_FDS" not in os.environ:
            return (
                f"systemd passed no socket of {which}: not started by systemd "
                "socket activation (LISTEN_FDS is not set)"
            )
        names = os.environ.get("LISTEN_FDNAMES", "")
        return (
            f"systemd passed no socket of {which} "
            f"(LISTEN_FDS={os.environ['LISTEN_FDS']}, LISTEN_FDNAMES={names})"
        )
    return _reason(error)


def _reason(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else repr(error)


class IncprotoService(SequentialMultiService):
    """
    The service L{makeService} returns.

    @ivar collector: the metrics collector of its connections (C{None} for
        a supervisor of workers, whose metrics come from them).
    """

    collector: Optional[Any] = None


def _metrics_listener(reactor: Any, description: str, site: Any) -> ListeningService:
    from incproto.metrics import MAX_SCRAPERS

    metrics = ListeningService(
        serverFromString(reactor, description),
        ConnectionLimit(site, MAX_SCRAPERS, queueSize=MAX_SCRAPERS, clock=reactor),
        f"{description} (--metrics)",
        what="metrics",
        clock=reactor,
    )
    metrics.setName("metrics")
    return metrics


def _stops_last(parent: MultiService, child: Service) -> None:
    """
    Add C{child} to C{parent} to be stopped last (and started first): the
    metrics listener outlives the drain, so /healthz answers 503 and
    /metrics shows the connections while it runs.
    """
    child.setServiceParent(parent)
    parent.services.remove(child)
    parent.services.insert(0, child)


def makeService(
    options: Options,
    reactor: Optional[IReactorTime] = None,
    endpoint: Optional[IStreamServerEndpoint] = None,
) -> IncprotoService:
    """
    Build the incproto service from parsed options.

    @param options: parsed L{Options}.
    @param reactor: the reactor to listen with and to time connections by;
        the global one by default.
    @param endpoint: where to listen, instead of the one C{--port} names
        (a worker's inherited socket).
    @return: a service that listens while it runs, and raises
        L{incproto.service.ListenError} from its start if it cannot.  Its
        children stop in order: the listener, then a graceful drain of the
        connections, then the handler pool, all within one
        C{--drain-timeout}.  With C{--workers}, it is a L{WorkerPool} that
        binds the port and runs that service in each worker process.  Once
        the reactor runs, L{SignalHandling} makes repeated stop signals
        quiet and SIGHUP graceful (a stop; with C{--workers} a rolling
        restart of the workers; ignored in a worker).
    """
    if reactor is None:
        reactor = global_reactor()
    in_worker = endpoint is not None
    description: str = options["endpoint"]
    service = IncprotoService(options["drain-timeout"], reactor)
    if options["workers"] is not None and endpoint is None:
        from incproto.health import supervisor_readiness
        from incproto.metrics import workers_metrics_site
        from incproto.workers import WorkerPool

        workers = WorkerPool(
            description,
            options["port"],
            options.worker_options(),
            options["workers"],
            reactor,
            killTimeout=options["drain-timeout"] + 5,
        )
        workers.setServiceParent(service)
        if options["metrics"] is not None:
            site = workers_metrics_site(
                workers.scrape, reactor, supervisor_readiness(workers)
            )
            _metrics_listener(reactor, options["metrics"], site).setServiceParent(
                service
            )
        _signals(reactor, workers.reload).setServiceParent(service)
        return service
    if endpoint is None and description.startswith("haproxy:"):
        # incproto's PROXY support starts the protocol with the client's
        # address known and keeps half-close; Twisted's does neither.
        endpoint = ProxyEndpoint(serverFromString(reactor, description[8:]), reactor)
    elif endpoint is None:
        endpoint = serverFromString(reactor, description)
    access_log: Optional[AccessLog] = None
    if not options["no-connection-log"]:
        access_log = choose_access_log(options["access-log"], options.parent, reactor)
    if isinstance(access_log, FileAccessLog):
        # Added first, so stopped last: after the drain logs its closes.
        access_log.setServiceParent(service)
    limit = options["max-connections"]
    if isinstance(endpoint, ProxyEndpoint) and limit is not None:
        # The limit counts a connection once its header names the client;
        # until then, hold no more than the limit would admit and queue.
        endpoint.maxPending = limit + options["queue"]
    FileLimitService(limit + options["queue"] + 64 if limit else 0).setServiceParent(
        service
    )
    pool: Optional[HandlerPool] = None
    pool_kind = ThreadHandlerPool if options["threads"] else ProcessHandlerPool
    pool_size = options["threads"] or options["processes"]
    if pool_size:
        pool = pool_kind(
            options["handler"],
            pool_size,
            reactor=reactor,
            drainTimeout=options["drain-timeout"],
            handlerTimeout=options["handler-timeout"],
        )
        pool.setServiceParent(service)
    increment = IncrementFactory(
        clock=reactor,
        handler=None if pool else options["handler"],
        pool=pool,
        idleTimeout=options["idle-timeout"],
        logConnections=not options["no-connection-log"],
        accessLog=access_log,
    )
    drainer = DrainingService(increment, options["drain-timeout"], reactor)
    drainer.setServiceParent(service)
    factory: IProtocolFactory = increment
    if limit is not None:
        factory = ConnectionLimit(
            factory,
            limit,
            queueSize=options["queue"],
            queueTimeout=options["queue-timeout"],
            maxPerPeer=options["max-per-peer"],
            clock=reactor,
        )
    from incproto.health import service_readiness
    from incproto.metrics import IncprotoCollector, metrics_site

    service.collector = IncprotoCollector(
        increment, factory if isinstance(factory, ConnectionLimit) else None, pool
    )
    listener = ListeningService(endpoint, factory, options["port"], clock=reactor)
    listener.setName("incproto")
    if options["metrics"] is not None:
        site = metrics_site(
            service.collector, reactor, service_readiness(listener, drainer)
        )
        _stops_last(service, _metrics_listener(reactor, options["metrics"], site))
    listener.setServiceParent(service)
    # A worker's SIGHUP is its supervisor's business.
    _signals(reactor, None if in_worker else STOP).setServiceParent(service)
    return service


def _signals(reactor: Any, hangup: Any) -> SignalHandling:
    signals = SignalHandling(reactor, hangup)
    signals.setName("signals")
    return signals
