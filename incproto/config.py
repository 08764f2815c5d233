# -*- test-case-name: tests.test_tap -*-
"""What one incproto server is told to do, as plain values.

L{ServerConfig} holds every setting of the command line (L{incproto.tap}
checks and fills it in), so that the serving stack
(L{incproto.stack.serving_stack}) and the supervisor of C{--workers}
(L{incproto.supervisor.supervise}) read one object, and a worker process
receives the very same object (as JSON on its command line), not a command
line rebuilt from it: every option reaches the workers because every field
does.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Optional

DEFAULT_PORT = "9090"
DEFAULT_BACKLOG = 1024
DEFAULT_HANDLER = "incproto.handlers:increment_handler"
DEFAULT_DRAIN_TIMEOUT = 30.0


@dataclasses.dataclass(frozen=True)
class ServerConfig:
    """
    The settings of an incproto server; each field is the command line
    option of the same name (C{max_connections} is C{--max-connections}).

    @ivar port: C{--port} as given, to name the listener in messages.
    @ivar endpoint: the server endpoint description to listen on, built
        from C{port} and C{backlog} (see L{incproto.tap.endpoint_description}).
    @ivar backlog: the listen backlog, already part of C{endpoint}.
    @ivar handler: the payload handler, as C{module:name}.
    @ivar queue: with C{max_connections}, the queue's size (never C{None}
        then).
    @ivar workers: serving processes under a supervisor, or C{None} for one
        process.
    @ivar metrics: the metrics listener's endpoint description, or C{None}.
    @ivar access_log: C{-}, C{log}, a file name, or C{None} for the default
        (see L{incproto.accesslog.choose}).
    @ivar no_connection_log: log no line per connection.
    """

    port: str = DEFAULT_PORT
    endpoint: str = f"tcp:{DEFAULT_PORT}:backlog={DEFAULT_BACKLOG}"
    backlog: int = DEFAULT_BACKLOG
    max_connections: Optional[int] = None
    queue: Optional[int] = None
    queue_timeout: Optional[float] = None
    max_per_peer: Optional[int] = None
    handler: str = DEFAULT_HANDLER
    threads: Optional[int] = None
    processes: Optional[int] = None
    handler_timeout: Optional[float] = None
    metrics: Optional[str] = None
    idle_timeout: Optional[float] = None
    workers: Optional[int] = None
    access_log: Optional[str] = None
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT
    no_connection_log: bool = False

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
        access_log = "log" if self.access_log == "-" else self.access_log
        return dataclasses.replace(
            self, workers=None, metrics=None, access_log=access_log
        )

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
