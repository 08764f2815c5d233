# -*- test-case-name: tests.unit.test_tap -*-
"""The twistd/twist command line: C{twistd -n incproto}.

L{Options} checks the command line (bad input is a one-line usage error)
and turns it into a L{ServerConfig}; L{makeService} hands that to the
serving stack (L{incproto.serving.stack.serving_stack}) or, with C{--workers}, to
their supervisor (L{incproto.workers.supervisor.supervise}).  The same works from
code::

    service = makeService(Options.parse(["--port", "9090"]))
"""

from __future__ import annotations

import math
import os
import pickle
import re
import sys
from typing import Any, Callable, List, Optional, Sequence, Tuple, cast

from twisted.application.service import IService
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IReactorTime
from twisted.python import usage

import twisted
from incproto._kernel.preambles import DEFAULT_TIMEOUT as DEFAULT_HANDSHAKE_TIMEOUT
from incproto._version import __version__
from incproto.accesslog import STANDARD_OUTPUT, TWISTED_LOG
from incproto.config import (
    DEFAULT_BACKLOG,
    DEFAULT_HANDLER,
    DEFAULT_PORT,
    DEFAULT_WATCHDOG,
    MIN_WATCHDOG,
    ServerConfig,
)
from incproto.handlers import load_handler
from incproto.limit import DEFAULT_QUEUE_SIZE
from incproto.pools import DEFAULT_DRAIN_TIMEOUT
from incproto.proxy import split_proxy


def _checked(
    convert: Callable[[str], Any], valid: Callable[[Any], bool], problem: str, doc: str
) -> Callable[[str], Any]:
    """An option coercer: C{convert}, then reject values not C{valid}."""

    def coerce(value: str) -> Any:
        try:
            number = convert(value)
        except ValueError:
            raise ValueError(f"{value!r} {problem}") from None
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


def _watchdog(value: str) -> Optional[float]:
    """
    C{--watchdog}: seconds, at least L{MIN_WATCHDOG} and finite (a shorter
    limit aborts a process whose reactor is merely starting, or busy), or
    C{0} or C{off} for none.
    """
    if value.strip().lower() in ("0", "off"):
        return None
    seconds = cast(float, _positive_float(value))
    if not MIN_WATCHDOG <= seconds < math.inf:
        raise ValueError(
            f"{value} is not a number of seconds from {MIN_WATCHDOG:g} up (or 0 or off)"
        )
    return seconds


_watchdog.coerceDoc = (  # type: ignore[attr-defined]
    f"Seconds, {MIN_WATCHDOG:g} or more; 0 or off disables it."
)


def _naming(option: str, coerce: Callable[[str], Any]) -> Callable[[str], Any]:
    """C{coerce}, with errors that name C{--option} (Twisted's do not)."""

    def named(value: str) -> Any:
        try:
            return coerce(value)
        except ValueError as e:
            raise ValueError(f"--{option} {e}") from None

    named.coerceDoc = getattr(coerce, "coerceDoc", None)  # type: ignore[attr-defined]
    return named


def _with_named_errors(parameters: List[List[Any]]) -> List[List[Any]]:
    """C{optParameters} whose coercers' errors name their option."""
    return [
        [*option[:4], _naming(option[0], option[4])] if len(option) > 4 else option
        for option in parameters
    ]


# What getUsage answers after a parse failure.
HELP_HINT = "--help (after incproto) lists incproto's options."


class Options(usage.Options):
    """
    The command line of C{twistd incproto} and C{twist incproto}.

    After parsing, C{self.config} holds what the options say (a
    L{ServerConfig}, with what derives from them filled in), and
    C{self.handler} the handler loaded.
    """

    synopsis = "[options]"
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
    optParameters = _with_named_errors(
        [
            [
                "port",
                "p",
                DEFAULT_PORT,
                "Where to listen: a TCP port number, which listens on every "
                "IPv4 interface (tcp:PORT:interface=127.0.0.1 for loopback "
                "only), or a Twisted server endpoint description (tcp:, tcp6:, "
                "unix:, ssl:, systemd:; under proxy: (or haproxy:) each "
                "connection starts with a PROXY header).",
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
                "max-jobs-per-process",
                None,
                None,
                "With --processes: replace a pool process by a fresh one after it "
                "ran this many handler calls, so that a handler that leaks memory "
                "cannot grow it for ever (gunicorn's --max-requests). Never by "
                "default",
                _positive_int,
            ],
            [
                "metrics",
                None,
                None,
                "Serve Prometheus metrics at /metrics, readiness at /healthz "
                "(200 while listening, not draining and able to run the "
                "handler, else 503) and liveness at /livez on this endpoint. "
                "A port number listens on loopback only (unlike --port): "
                "tcp:PORT:interface=127.0.0.1; tcp:PORT for every interface. "
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
                "a file to append to (SIGUSR1 reopens it), buffered and written "
                "at least once a second; or log (an event in twistd's or twist's "
                "log, with fields, at several times the CPU). Default: standard "
                "output when the log is text there (twistd -n, twist on a "
                "terminal), else log.",
            ],
            [
                "handshake-timeout",
                None,
                DEFAULT_HANDSHAKE_TIMEOUT,
                "Close a connection that has not completed its TLS handshake "
                "(ssl:) and its PROXY header (proxy:) within this many seconds "
                "of connecting. Until then it holds no --max-connections slot.",
                _positive_float,
            ],
            [
                "proxy-trusted",
                None,
                None,
                "With a proxy: port: the sources PROXY headers are believed from, "
                "comma-separated addresses and networks (10.0.0.0/8,127.0.0.1); "
                "other sources are closed. Default: loopback and private "
                "networks, or the port's own trusted=.",
            ],
            [
                "drain-timeout",
                None,
                DEFAULT_DRAIN_TIMEOUT,
                "On shutdown (SIGTERM, SIGINT, SIGQUIT; SIGHUP in one process), "
                "give connections and handler work this many seconds to finish, "
                "then abort them.",
                _positive_float,
            ],
            [
                "watchdog",
                None,
                DEFAULT_WATCHDOG,
                "End a process whose reactor has not turned for this many seconds "
                "(a handler that never returns on it, a SIGSTOP): one process "
                "aborts (SIGABRT) for its supervisor (systemd, Kubernetes) to "
                "restart; a --workers supervisor kills and replaces the worker. "
                "0 or off: never.",
                _watchdog,
            ],
        ]
    )

    # Set when parsing failed: see getUsage.
    failed = False

    def parseOptions(self, options: Optional[Sequence[str]] = None) -> None:
        """
        Parse the command line; remember a failure, for L{getUsage}.

        @raise usage.UsageError: for bad input.
        """
        try:
            super().parseOptions(options)
        except usage.UsageError:
            self.failed = True
            raise

    def getUsage(self, width: Optional[int] = None) -> str:
        """
        Every option, as C{--help} shows them; after a parse failure, one
        line that points to C{--help}.

        twistd answers a usage error with the usage text, then the
        reason: the reason stays in sight, the last of three lines, not
        below some seventy lines of options.
        """
        if not self.failed:
            return super().getUsage(width)
        return HELP_HINT

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
        try:
            declared = [option[0] for option in self.optParameters + self.optFlags]
            self.config = ServerConfig(
                **{name.replace("-", "_"): self[name] for name in declared}
            )
        except ValueError as e:
            raise usage.UsageError(str(e)) from None
        config = self.config
        try:
            self.handler = handler = load_handler(self["handler"])
        except ValueError as e:
            raise usage.UsageError(f"--handler {self['handler']}: {e}") from None
        if self["processes"] is not None:
            try:
                pickle.dumps(handler)
            except Exception as e:
                raise usage.UsageError(
                    "--processes needs a picklable handler (a module-level "
                    f"function, or an instance of a module-level class): {_reason(e)}"
                ) from None
        port = _check_endpoint("--port", self["port"], config.endpoint)
        if config.metrics is not None:
            metrics = _check_endpoint("--metrics", self["metrics"], config.metrics)
            if _same_tcp_port(port, metrics):
                raise usage.UsageError(
                    f"--metrics {self['metrics']} and --port {self['port']} "
                    f"both listen on TCP port {_tcp_address(port)[0]}: give "
                    "--metrics a port of its own"
                )
        if self["access-log"] not in (None, STANDARD_OUTPUT, TWISTED_LOG):
            try:
                open(self["access-log"], "a").close()
            except OSError as e:
                raise usage.UsageError(
                    f"--access-log {self['access-log']}: {e.strerror}"
                ) from None


def _check_endpoint(option: str, given: str, description: str) -> Any:
    """Parse an endpoint description now, to fail with a usage error;
    return the endpoint."""
    try:
        # Endpoint parsers only store the reactor, so parsing with none
        # checks the description (and loads TLS keys) before twistd
        # daemonizes, without importing the global reactor here.
        endpoint = serverFromString(cast(Any, None), description)
        _check_unix_directory(description)
    except Exception as e:
        raise usage.UsageError(
            f"{option} {given}: {_explain(description, e)}"
        ) from None
    return endpoint


def _tcp_address(endpoint: Any) -> Tuple[int, str]:
    """A TCP (or TLS) server endpoint's port and interface; port 0 for
    others (Twisted's endpoints keep them in C{_port} and C{_interface})."""
    port = getattr(endpoint, "_port", 0)
    interface = getattr(endpoint, "_interface", "")
    return (port if isinstance(port, int) else 0), str(interface)


def _same_tcp_port(first: Any, second: Any) -> bool:
    """
    Whether two endpoints would listen on the same TCP port, where one
    fails with "address already in use" once the other listens: the same
    port (not 0, an ephemeral one) on the same interface, or on any.
    """
    (port, interface), (other, other_interface) = map(_tcp_address, (first, second))
    anywhere = {"", "0.0.0.0", "::"}
    return (
        port != 0
        and port == other
        and (
            interface == other_interface
            or bool({interface, other_interface} & anywhere)
        )
    )


def _check_unix_directory(description: str) -> None:
    """
    A C{unix:} socket's directory must exist: Twisted would fail only when
    listening, and then with the internals of its lock file.
    """
    kind, _, rest = split_proxy(description)[1].partition(":")
    if kind != "unix":
        return
    path = rest.split(":", 1)[0]
    if path.startswith("address="):
        path = path[len("address=") :]
    directory = os.path.dirname(path) or "."
    if not os.path.isdir(directory):
        raise ValueError(f"no such directory: {directory}")


def _explain(description: str, error: Exception) -> str:
    """Why an endpoint description failed to parse, in one line that names
    the fix where incproto knows it."""
    inner = split_proxy(description)[1]
    kind = inner.split(":", 1)[0]
    if "got multiple values for argument" in str(error):
        return (
            "a colon inside a value must be escaped with a backslash, as in "
            "tcp6:9090:interface=\\:\\:1 (an IPv6 address)"
        )
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


def makeService(options: Options, reactor: Optional[IReactorTime] = None) -> IService:
    """
    Build the incproto service from parsed options.

    @param options: parsed L{Options}.
    @param reactor: the reactor to listen with and to time connections by;
        the global one by default.
    @return: the serving stack (L{incproto.serving.stack.serving_stack}), which
        listens while it runs and raises L{incproto.serving.service.ListenError}
        from its start if it cannot; with C{--workers}, their supervisor
        (L{incproto.workers.supervisor.supervise}), which binds the port and runs
        that stack in each worker process.  Its children stop in order,
        within one C{--drain-timeout}; once the reactor runs, repeated stop
        signals are quiet and SIGHUP is graceful (a stop; with C{--workers}
        a rolling restart of the workers).
    """
    if options.parent is not None:
        from incproto._kernel.logpipe import protect_twisted_log
        from incproto._kernel.reactors import global_reactor

        # Before twistd or twist starts its log: a stdout pipe whose reader
        # stops must cost log lines, not the reactor.
        protect_twisted_log(options.parent, reactor or global_reactor())
    if options.config.workers is not None:
        from incproto.workers.supervisor import supervise

        return supervise(options.config, reactor)
    from incproto.serving.stack import serving_stack

    return serving_stack(
        options.config, reactor, commandLine=options.parent, handler=options.handler
    )
