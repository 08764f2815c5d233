# -*- test-case-name: tests.unit.test_tap -*-
"""What one incproto server is told to do, as plain values.

L{ServerConfig} holds every setting of the command line (L{incproto.tap}
checks and fills it in), so that the serving stack
(L{incproto.serving.stack.serving_stack}) and the supervisor of C{--workers}
(L{incproto.workers.supervisor.supervise}) read one object, and a worker process
receives the very same object (as JSON on its command line), not a command
line rebuilt from it: every option reaches the workers because every field
does.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Optional

from incproto._kernel.preambles import DEFAULT_TIMEOUT as DEFAULT_HANDSHAKE_TIMEOUT
from incproto._kernel.words import counted
from incproto.accesslog import STANDARD_OUTPUT, TWISTED_LOG
from incproto.limit import DEFAULT_QUEUE_SIZE
from incproto.pools import DEFAULT_DRAIN_TIMEOUT
from incproto.proxy import TRUSTED, TrustedSources, from_haproxy, split_proxy

DEFAULT_PORT = "9090"
DEFAULT_BACKLOG = 1024
DEFAULT_HANDLER = "incproto.handlers:increment_handler"
# Seconds the reactor may not turn before --watchdog ends the process
# (incproto.serving.watchdog).
DEFAULT_WATCHDOG = 10.0
# The shortest --watchdog: below it, a reactor busy starting up, or with
# one read's work on a loaded machine, would count as stuck.
MIN_WATCHDOG = 1.0

# Endpoint kinds whose parsers accept a backlog= argument.
_BACKLOG_KINDS = frozenset({"tcp", "tcp6", "ssl", "unix"})


def endpoint_description(port: str, backlog: int) -> str:
    """
    Turn C{--port} into a Twisted server endpoint description.

    A bare number listens on TCP on all interfaces.  C{haproxy:} means
    incproto's C{proxy:} (see L{incproto.proxy}).  C{tcp:}, C{tcp6:},
    C{ssl:} and C{unix:} descriptions, alone or under C{proxy:}, get
    C{backlog} unless they name a backlog of their own.

    @param port: a port number or an endpoint description.
    @param backlog: the listen backlog to use where none is given.
    @raise ValueError: if a bare number is out of range.
    """
    if re.fullmatch("[0-9]+", port):
        if int(port) > 65535:
            raise ValueError(f"--port {port}: a port number is between 0 and 65535")
        return f"tcp:{int(port)}:backlog={backlog}"
    port = from_haproxy(port)
    _, inner = split_proxy(port)
    if inner.split(":", 1)[0] in _BACKLOG_KINDS and "backlog=" not in port:
        return f"{port}:backlog={backlog}"
    return port


@dataclasses.dataclass(frozen=True)
class ServerConfig:
    """
    The settings of an incproto server; each field but C{endpoint} is the
    command line option of the same name (C{max_connections} is
    C{--max-connections}), and means what C{--help} says.  Settings that
    exclude or need each other are checked as the command line checks
    them, and what depends on others is filled in: C{endpoint} from
    C{port} and C{backlog}, C{queue}'s default with C{max_connections},
    and a C{metrics} port number on the loopback interface.

    @ivar port: where to listen (C{--port}): a port number or an endpoint
        description; also names the listener in messages.
    @ivar endpoint: the server endpoint description listened on: unless
        given, built from C{port} and C{backlog} (L{endpoint_description}).
    @ivar backlog: the listen backlog, for a C{port} that sets none.
    @ivar handler: the payload handler, as C{module:name}.
    @ivar queue: with C{max_connections}, the queue's size (never C{None}
        then).
    @ivar workers: serving processes under a supervisor, or C{None} for one
        process.
    @ivar metrics: the metrics listener's endpoint description, or C{None}.
    @ivar access_log: C{-}, C{log}, a file name, or C{None} for the default
        (see L{incproto.accesslog.choose}).
    @ivar no_connection_log: log no line per connection.
    @ivar watchdog: seconds the reactor may go without turning before the
        process is ended (a worker: killed and replaced by its supervisor),
        or C{None} for never.
    """

    port: str = DEFAULT_PORT
    endpoint: str = ""
    backlog: int = DEFAULT_BACKLOG
    max_connections: Optional[int] = None
    queue: Optional[int] = None
    queue_timeout: Optional[float] = None
    max_per_peer: Optional[int] = None
    handler: str = DEFAULT_HANDLER
    threads: Optional[int] = None
    processes: Optional[int] = None
    handler_timeout: Optional[float] = None
    max_jobs_per_process: Optional[int] = None
    metrics: Optional[str] = None
    idle_timeout: Optional[float] = None
    workers: Optional[int] = None
    access_log: Optional[str] = None
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT
    no_connection_log: bool = False
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT
    proxy_trusted: Optional[str] = None
    watchdog: Optional[float] = DEFAULT_WATCHDOG

    def __post_init__(self) -> None:
        """
        Check the settings that exclude or need each other, and fill in
        what depends on others.

        @raise ValueError: naming the command line options at fault.
        """
        if self.max_connections is None:
            for option in ("queue", "queue_timeout", "max_per_peer"):
                if getattr(self, option) is not None:
                    raise ValueError(f"{_option(option)} needs --max-connections")
        elif self.queue is None:
            object.__setattr__(self, "queue", DEFAULT_QUEUE_SIZE)
        if self.threads is not None and self.processes is not None:
            raise ValueError("--threads and --processes exclude each other")
        if self.handler_timeout is not None and not self.pool_size:
            raise ValueError(
                "--handler-timeout needs --threads or --processes (an inline "
                "handler runs on the reactor thread, which nothing can interrupt)"
            )
        if self.max_jobs_per_process is not None and not self.processes:
            raise ValueError(
                "--max-jobs-per-process needs --processes (threads share the "
                "server's process, which is not recycled)"
            )
        if not self.endpoint:
            endpoint = endpoint_description(self.port, self.backlog)
            object.__setattr__(self, "endpoint", endpoint)
        if self.proxy_trusted is not None:
            self._check_proxy_trusted()
        if self.metrics is not None and re.fullmatch("[0-9]+", self.metrics):
            metrics = f"tcp:{self.metrics}:interface=127.0.0.1"
            object.__setattr__(self, "metrics", metrics)

    def _check_proxy_trusted(self) -> None:
        proxied, inner = split_proxy(self.endpoint)
        if not proxied:
            raise ValueError("--proxy-trusted needs a proxy: (or haproxy:) --port")
        if f"{TRUSTED}=" in inner:
            raise ValueError(
                f"--proxy-trusted and the port's {TRUSTED}= exclude each other"
            )
        try:
            TrustedSources.parse(str(self.proxy_trusted))
        except ValueError as e:
            raise ValueError(f"--proxy-trusted {self.proxy_trusted}: {e}") from None

    @property
    def pool_size(self) -> Optional[int]:
        """The handler pool's threads or processes, or C{None} (inline)."""
        return self.threads or self.processes

    def for_worker(self) -> ServerConfig:
        """
        This configuration as a worker of C{--workers} serves it: one
        process (no C{workers}), without the metrics listener, which the
        supervisor serves for all of them, and with an access log to
        standard output sent as log events instead (a worker's standard
        output carries its log to the supervisor, which writes it).
        """
        to_stdout = self.access_log == STANDARD_OUTPUT
        access_log = TWISTED_LOG if to_stdout else self.access_log
        return dataclasses.replace(
            self, workers=None, metrics=None, access_log=access_log
        )

    def summary(self) -> str:
        """
        What is in force, in one line for the startup log: the handler and
        where it runs, the limits and the timeouts (C{off} where none is
        set), and the workers.
        """
        where = "inline"
        if self.pool_size:
            if self.threads:
                where = f"in {counted(self.pool_size, 'thread')}"
            else:
                where = f"in {counted(self.pool_size, 'process', 'processes')}"
        limits = "connections unlimited"
        if self.max_connections is not None:
            limits = (
                f"at most {counted(self.max_connections, 'connection')}, "
                f"queue {self.queue}, queue timeout {_seconds(self.queue_timeout)}, "
                f"per peer {self.max_per_peer or 'unlimited'}"
            )
        parts = [
            f"handler {self.handler} {where}",
            limits,
            f"idle timeout {_seconds(self.idle_timeout)}",
        ]
        if self.pool_size:
            parts.append(f"handler timeout {_seconds(self.handler_timeout)}")
        if self.max_jobs_per_process:
            parts.append(
                f"pool processes recycled after {self.max_jobs_per_process} jobs"
            )
        parts.append(f"handshake timeout {_seconds(self.handshake_timeout)}")
        parts.append(f"drain timeout {_seconds(self.drain_timeout)}")
        parts.append(f"watchdog {_seconds(self.watchdog)}")
        if self.workers:
            parts.append(f"{counted(self.workers, 'worker')} (limits per worker)")
        return "; ".join(parts)

    def to_json(self) -> str:
        """This configuration as a JSON object (see L{from_json})."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ServerConfig:
        """
        The configuration that L{to_json} wrote.

        @raise TypeError: if C{text} names a field this version lacks.
        """
        return cls(**json.loads(text))


def _option(field: str) -> str:
    """The command line option of a field."""
    return "--" + field.replace("_", "-")


def _seconds(value: Optional[float]) -> str:
    """A timeout for the startup log: C{off}, or seconds."""
    return "off" if value is None else f"{value:g}s"
