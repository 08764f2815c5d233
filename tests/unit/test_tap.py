"""Tests for incproto.tap (command line and wiring) and the twistd plugin
(its import in a fresh interpreter: tests/e2e/test_tap.py)."""

from __future__ import annotations

import io
import os
from contextlib import redirect_stdout

from twisted.application.service import IServiceMaker
from twisted.internet.error import CannotListenError
from twisted.internet.testing import (
    MemoryReactor,
    MemoryReactorClock,
    RaisingMemoryReactor,
)
from twisted.plugin import getPlugins
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

import incproto
from incproto.config import ServerConfig, endpoint_description
from incproto.handlers import IncrementHandler, IPayloadHandler, hashing
from incproto.limit import DEFAULT_QUEUE_SIZE, ConnectionLimit
from incproto.pools import HandlerPool, ProcessHandlerPool, ThreadHandlerPool
from incproto.protocol import IncrementFactory
from incproto.proxy import ProxyEndpoint
from incproto.serving.service import ListenError, ListeningService
from incproto.tap import Options, makeService


class EndpointDescriptionTests(SynchronousTestCase):
    def test_bare_number_is_tcp_with_backlog(self) -> None:
        self.assertEqual(endpoint_description("9090", 1024), "tcp:9090:backlog=1024")

    def test_backlog_added_where_accepted(self) -> None:
        for given in (
            "tcp:9090:interface=127.0.0.1",
            "tcp6:9090",
            "unix:/tmp/incproto.sock",
            "ssl:9443:privateKey=k.pem",
            "proxy:tcp:9090",
        ):
            self.assertEqual(endpoint_description(given, 77), f"{given}:backlog=77")

    def test_haproxy_means_incprotos_proxy_endpoint(self) -> None:
        self.assertEqual(
            endpoint_description("haproxy:unix:/run/a.sock", 77),
            "proxy:unix:/run/a.sock:backlog=77",
        )

    def test_explicit_backlog_wins(self) -> None:
        self.assertEqual(
            endpoint_description("tcp:9090:backlog=5", 77), "tcp:9090:backlog=5"
        )

    def test_systemd_untouched(self) -> None:
        given = "systemd:domain=INET:index=0"
        self.assertEqual(endpoint_description(given, 77), given)


class OptionsTests(SynchronousTestCase):
    def test_defaults(self) -> None:
        options = Options.parse([])
        self.assertEqual(options["port"], "9090")
        self.assertEqual(options["backlog"], 1024)
        self.assertEqual(options.config.endpoint, "tcp:9090:backlog=1024")

    def test_port_and_backlog(self) -> None:
        options = Options.parse(
            ["--port", "tcp:0:interface=127.0.0.1", "--backlog", "9"]
        )
        self.assertEqual(options.config.endpoint, "tcp:0:interface=127.0.0.1:backlog=9")

    def assertUsageError(self, argv: list[str], message: str) -> None:
        error = self.assertRaises(usage.UsageError, Options.parse, argv)
        self.assertIn(message, str(error))
        self.assertNotIn("\n", str(error))

    def test_unix_socket_in_a_missing_directory(self) -> None:
        self.assertUsageError(
            ["--port", "unix:/nonexistent/x.sock"],
            "--port unix:/nonexistent/x.sock: no such directory: /nonexistent",
        )

    def test_unescaped_ipv6_interface_names_the_escaping(self) -> None:
        self.assertUsageError(
            ["--port", "tcp6:9090:interface=::1"],
            "a colon inside a value must be escaped with a backslash, as in "
            "tcp6:9090:interface=\\:\\:1",
        )

    def test_unknown_endpoint_type(self) -> None:
        self.assertUsageError(
            ["--port", "banana"], "--port banana: Unknown endpoint type: 'banana'"
        )

    def test_metrics_on_the_ports_own_port(self) -> None:
        """It failed only once listening, without naming --metrics."""
        self.assertUsageError(
            ["--port", "9377", "--metrics", "9377"],
            "--metrics 9377 and --port 9377 both listen on TCP port 9377: "
            "give --metrics a port of its own",
        )
        self.assertUsageError(
            ["--port", "tcp:9377:interface=127.0.0.1", "--metrics", "9377"],
            "both listen on TCP port 9377",
        )

    def test_metrics_beside_the_port(self) -> None:
        for argv in (
            ["--port", "9377", "--metrics", "9378"],
            ["--port", "0", "--metrics", "tcp:0"],  # ephemeral ports
            ["--port", "tcp:9377:interface=127.0.0.1",
             "--metrics", "tcp:9377:interface=127.0.0.2"],
            ["--port", "unix:/tmp/incproto-test.sock", "--metrics", "9377"],
        ):  # fmt: skip
            self.assertEqual(Options.parse(argv)["metrics"], argv[3])

    def test_port_out_of_range(self) -> None:
        self.assertUsageError(["--port", "70000"], "between 0 and 65535")

    def test_bad_endpoint_argument(self) -> None:
        self.assertUsageError(["--port", "tcp:http"], "--port tcp:http:")

    def test_missing_tls_key(self) -> None:
        self.assertUsageError(
            ["--port", "ssl:9443:privateKey=/nonexistent/key.pem"], "--port ssl:9443"
        )

    def test_backlog_must_be_positive(self) -> None:
        self.assertUsageError(["--backlog", "0"], "not a positive integer")
        self.assertUsageError(["--backlog", "many"], "many")

    def test_unknown_option(self) -> None:
        self.assertUsageError(["--bogus"], "bogus")

    def test_version_is_incproto(self) -> None:
        out = io.StringIO()
        with redirect_stdout(out):
            self.assertRaises(SystemExit, Options.parse, ["--version"])
        self.assertTrue(out.getvalue().startswith(f"incproto {incproto.__version__} "))

    def test_help_has_no_doubled_periods(self) -> None:
        """Twisted appends ". " and the coercer's doc to the help string."""
        self.assertNotRegex(str(Options()), r"\.\s*\.")

    def test_systemd_port_outside_systemd(self) -> None:
        self.patch(os, "environ", {})
        self.assertUsageError(
            ["--port", "systemd:domain=INET:name=incproto"],
            "--port systemd:domain=INET:name=incproto: systemd passed no socket "
            "of name 'incproto': not started by systemd socket activation "
            "(LISTEN_FDS is not set)",
        )
        self.assertUsageError(
            ["--port", "systemd:domain=INET:index=0"],
            "systemd passed no socket of index '0'",
        )

    def test_systemd_port_not_passed(self) -> None:
        self.patch(
            os,
            "environ",
            {"LISTEN_FDS": "1", "LISTEN_PID": str(os.getpid()), "LISTEN_FDNAMES": "a"},
        )
        self.assertUsageError(
            ["--port", "systemd:domain=INET:name=incproto"],
            "systemd passed no socket of name 'incproto' "
            "(LISTEN_FDS=1, LISTEN_FDNAMES=a)",
        )

    def test_a_usage_error_under_twistd_keeps_the_reason_in_sight(self) -> None:
        """twistd prints the usage text, then the reason: after a parse
        failure the usage text is one line that points to --help, not
        every option; --help still documents every option."""
        from twisted.scripts.twistd import ServerOptions

        from incproto.tap import HELP_HINT

        for argv in (["--port", "nope:x"], ["--bogus"], ["--backlog", "0"]):
            config = ServerOptions()
            with self.assertRaises(usage.UsageError):
                config.parseOptions(["-n", "incproto", *argv])
            self.assertEqual(
                str(config).splitlines(), ["Usage: twistd [options]", HELP_HINT]
            )
        self.assertGreater(len(str(Options()).splitlines()), 40)

    def test_help_says_which_interfaces_a_bare_port_binds(self) -> None:
        """A bare --port listens on every interface, a bare --metrics on
        loopback only: --help says so next to each."""
        text = " ".join(str(Options()).split())
        port = text[text.index("--port=") :]
        metrics = text[text.index("--metrics=") :]
        self.assertIn("port number, which listens on every IPv4 interface", port)
        self.assertIn("port number listens on loopback only (unlike --port)", metrics)
        self.assertEqual(ServerConfig(port="9090").endpoint, "tcp:9090:backlog=1024")
        self.assertEqual(
            ServerConfig(metrics="9100").metrics, "tcp:9100:interface=127.0.0.1"
        )

    def test_help_documents_every_option(self) -> None:
        """
        Every declared option (parameters and flags) is named in --help, with
        its short form if it has one and the start of its description.
        """
        lines = str(Options()).splitlines()
        text = " ".join(" ".join(lines).split())
        declared = [*Options.optParameters, *Options.optFlags]
        self.assertGreaterEqual(len(declared), 15)
        for name, short, *rest in declared:
            parameter = len(rest) > 1
            description = rest[-1] if not parameter else rest[1]
            named = [
                line
                for line in lines
                if f"--{name}{'=' if parameter else ' '}" in f"{line} "
            ]
            self.assertEqual(len(named), 1, name)
            if short:
                self.assertIn(f"-{short}, --{name}", named[0])
            self.assertIn(" ".join(description.split()[:6]), text, name)
        for builtin in ("--help", "--version"):
            self.assertIn(builtin, text)


class MakeServiceTests(SynchronousTestCase):
    def test_listens_on_start(self) -> None:
        reactor = MemoryReactor()
        service = makeService(Options.parse(["--port", "9191"]), reactor=reactor)
        service.privilegedStartService()
        service.startService()
        [(port, factory, backlog, interface)] = reactor.tcpServers
        self.assertEqual((port, backlog, interface), (9191, 1024, ""))
        self.assertIsInstance(factory, IncrementFactory)
        service.stopService()

    def test_twist_path_listens_in_start_service(self) -> None:
        """C{twist} never calls privilegedStartService."""
        reactor = MemoryReactor()
        service = makeService(Options.parse(["--port", "9191"]), reactor=reactor)
        service.startService()
        self.assertEqual(len(reactor.tcpServers), 1)

    def test_settings_logged_once_before_listening(self) -> None:
        """One line says the handler, pool, limits and timeouts in force,
        before the listening line, however the service is started."""
        from twisted.logger import globalLogPublisher

        argv = ["--port", "9191", "--threads", "1", "--max-connections", "5"]
        for privileged in (True, False):
            events: list = []
            globalLogPublisher.addObserver(events.append)
            try:
                reactor = MemoryReactor()
                service = makeService(Options.parse(argv), reactor=reactor)
                if privileged:
                    service.privilegedStartService()
                service.startService()
                service.stopService()
            finally:
                globalLogPublisher.removeObserver(events.append)
            formats = [e.get("log_format") for e in events]
            settings = [e for e in events if "settings" in e]
            self.assertEqual(len(settings), 1)
            self.assertIn("in 1 thread; at most 5 connections", settings[0]["settings"])
            self.assertLess(
                formats.index("incproto settings: {settings}"),
                formats.index("{what} listening on {address}"),
            )

    def test_nothing_listens_before_start(self) -> None:
        """twistd calls makeService before daemonizing: no sockets yet."""
        reactor = MemoryReactor()
        makeService(Options.parse(["--port", "9191"]), reactor=reactor)
        self.assertEqual(reactor.tcpServers, [])

    def test_listen_failure_is_one_line_exit(self) -> None:
        reactor = RaisingMemoryReactor(
            listenException=CannotListenError("", 9191, OSError(98, "in use"))
        )
        service = makeService(Options.parse(["--port", "9191"]), reactor=reactor)
        error = self.assertRaises(ListenError, service.privilegedStartService)
        self.assertIsInstance(error, SystemExit)
        self.assertIsInstance(error, Exception)
        self.assertTrue(str(error).startswith("incproto: cannot listen on 9191: "))
        self.assertNotIn("\n", str(error))

    def test_service_is_named(self) -> None:
        service = makeService(Options.parse([]), reactor=MemoryReactor())
        self.assertIsInstance(service.getServiceNamed("incproto"), ListeningService)


class LimitOptionsTests(SynchronousTestCase):
    def test_limit_wraps_the_factory(self) -> None:
        reactor = MemoryReactor()
        argv = ["--port", "9191", "--max-connections", "2", "--queue", "5"]
        argv += ["--queue-timeout", "1.5", "--max-per-peer", "3"]
        service = makeService(Options.parse(argv), reactor=reactor)
        service.startService()
        [(_, limit, _, _)] = reactor.tcpServers
        self.assertIsInstance(limit, ConnectionLimit)
        self.assertIsInstance(limit.wrappedFactory, IncrementFactory)
        self.assertEqual(
            (
                limit.maxConnections,
                limit.queueSize,
                limit.queueTimeout,
                limit.maxPerPeer,
            ),
            (2, 5, 1.5, 3),
        )
        self.assertIs(limit.clock, reactor)

    def test_no_limit_by_default(self) -> None:
        reactor = MemoryReactor()
        makeService(Options.parse(["--port", "9191"]), reactor=reactor).startService()
        [(_, factory, _, _)] = reactor.tcpServers
        self.assertIsInstance(factory, IncrementFactory)

    def test_limit_options_need_max_connections(self) -> None:
        for option in ("--queue", "--queue-timeout", "--max-per-peer"):
            error = self.assertRaises(usage.UsageError, Options.parse, [option, "1"])
            self.assertEqual(str(error), f"{option} needs --max-connections")

    def test_queue_default_with_max_connections(self) -> None:
        options = Options.parse(["--max-connections", "2"])
        self.assertEqual(options.config.queue, DEFAULT_QUEUE_SIZE)
        self.assertEqual(options.config.queue, DEFAULT_QUEUE_SIZE)

    def test_bad_limit_values(self) -> None:
        for argv in (
            ["--max-connections", "0"],
            ["--max-connections", "2", "--queue", "-1"],
            ["--max-connections", "2", "--queue-timeout", "0"],
            ["--max-connections", "2", "--queue-timeout", "soon"],
        ):
            self.assertRaises(usage.UsageError, Options.parse, argv)

    def test_haproxy_uses_incprotos_proxy_endpoint(self) -> None:
        service = makeService(
            Options.parse(["--port", "haproxy:tcp:9191"]), reactor=MemoryReactor()
        )
        listener = service.getServiceNamed("incproto")
        self.assertIsInstance(listener.endpoint, ProxyEndpoint)


class HandlerOptionsTests(SynchronousTestCase):
    def test_inline_increment_by_default(self) -> None:
        reactor = MemoryReactor()
        service = makeService(Options.parse(["--port", "9191"]), reactor=reactor)
        service.startService()
        [(_, factory, _, _)] = reactor.tcpServers
        self.assertIsInstance(factory.handler, IncrementHandler)
        self.assertIsNone(factory.pool)

    def test_handler_by_name(self) -> None:
        options = Options.parse(["--handler", "incproto.handlers:hashing"])
        self.assertEqual(options.config.handler, "incproto.handlers:hashing")

    def test_threads(self) -> None:
        reactor = MemoryReactorClock()
        argv = ["--handler", "incproto.handlers:hashing", "--threads", "3"]
        service = makeService(
            Options.parse([*argv, "--drain-timeout", "7", "--handler-timeout", "2"]),
            reactor=reactor,
        )
        [pool] = [child for child in service if isinstance(child, HandlerPool)]
        self.assertIsInstance(pool, ThreadHandlerPool)
        self.assertEqual(
            (pool.size, pool.handler, pool.drainTimeout), (3, hashing, 7.0)
        )
        self.assertEqual(pool.handlerTimeout, 2.0)
        service.startService()
        [(_, factory, _, _)] = reactor.tcpServers
        self.assertIs(factory.pool, pool)
        self.assertTrue(pool.executor.started)
        service.stopService()
        self.assertFalse(pool.executor.started)

    def test_processes_are_built_not_started(self) -> None:
        """twistd calls makeService before daemonizing: nothing starts yet."""
        service = makeService(
            Options.parse(["--processes", "2"]), reactor=MemoryReactor()
        )
        [pool] = [child for child in service if isinstance(child, HandlerPool)]
        self.assertIsInstance(pool, ProcessHandlerPool)
        self.assertIsNone(pool.executor)
        self.assertEqual(pool.maxJobsPerProcess, 0)  # never recycled

    def test_max_jobs_per_process(self) -> None:
        """--max-jobs-per-process reaches the process pool (issue 22)."""
        argv = ["--processes", "2", "--max-jobs-per-process", "100"]
        service = makeService(Options.parse(argv), reactor=MemoryReactor())
        [pool] = [child for child in service if isinstance(child, HandlerPool)]
        assert isinstance(pool, ProcessHandlerPool)
        self.assertEqual(pool.maxJobsPerProcess, 100)

    def test_handler_errors(self) -> None:
        for argv, message in [
            (["--handler", "nowhere:thing"], "--handler nowhere:thing: cannot import"),
            (["--threads", "2", "--processes", "2"], "exclude each other"),
            (["--handler-timeout", "5"], "--handler-timeout needs --threads"),
            (["--threads", "2", "--handler-timeout", "0"], "not a positive number"),
            (["--threads", "0"], "not a positive integer"),
            (
                ["--max-jobs-per-process", "5"],
                "--max-jobs-per-process needs --processes",
            ),
            (
                ["--threads", "2", "--max-jobs-per-process", "5"],
                "--max-jobs-per-process needs --processes",
            ),
            (["--processes", "2", "--max-jobs-per-process", "0"], "not a positive"),
            (
                ["--handler", "tests.unit.test_tap:unpicklable", "--processes", "2"],
                "--processes needs a picklable handler",
            ),
        ]:
            error = self.assertRaises(usage.UsageError, Options.parse, argv)
            self.assertIn(message, str(error))


@implementer(IPayloadHandler)
class _Local:
    def transform(self, payload: bytes) -> bytes:
        return payload


def unpicklable() -> IPayloadHandler:
    class Inner(_Local):
        pass

    return Inner()


class PluginTests(SynchronousTestCase):
    def test_discovered(self) -> None:
        [maker] = [p for p in getPlugins(IServiceMaker) if p.tapname == "incproto"]
        self.assertIn("increment protocol", maker.description)
        self.assertIs(maker.options, Options)
        service = maker.makeService(Options.parse(["--port", "0"]))
        self.assertIsNotNone(service.getServiceNamed("incproto"))


class ServerConfigTests(SynchronousTestCase):
    """
    The configuration checks and fills in as the command line does, so that
    code building one directly cannot get what it did not ask for.
    """

    def test_the_endpoint_follows_the_port_and_backlog(self) -> None:
        config = ServerConfig(port="9193", backlog=7)
        self.assertEqual(config.endpoint, "tcp:9193:backlog=7")
        self.assertEqual(ServerConfig().endpoint, "tcp:9090:backlog=1024")
        given = ServerConfig(port="x", endpoint="unix:/run/a.sock")
        self.assertEqual(given.endpoint, "unix:/run/a.sock")

    def test_the_queue_defaults_with_a_limit(self) -> None:
        self.assertEqual(ServerConfig(max_connections=5).queue, DEFAULT_QUEUE_SIZE)
        self.assertEqual(ServerConfig(max_connections=5, queue=0).queue, 0)
        self.assertIsNone(ServerConfig().queue)

    def test_a_metrics_port_number_is_on_loopback(self) -> None:
        self.assertEqual(
            ServerConfig(metrics="9100").metrics, "tcp:9100:interface=127.0.0.1"
        )

    def test_settings_that_exclude_or_need_each_other(self) -> None:
        for settings, message in (
            ({"queue": 3}, "--queue needs --max-connections"),
            ({"max_per_peer": 3}, "--max-per-peer needs --max-connections"),
            ({"threads": 1, "processes": 1}, "--threads and --processes exclude"),
            ({"handler_timeout": 1.0}, "--handler-timeout needs --threads"),
            ({"port": "70000"}, "--port 70000: a port number is between"),
        ):
            with self.assertRaises(ValueError) as raised:
                ServerConfig(**settings)  # type: ignore[arg-type]
            self.assertTrue(str(raised.exception).startswith(message), settings)

    def test_summary_says_what_is_in_force(self) -> None:
        self.assertEqual(
            ServerConfig().summary(),
            "handler incproto.handlers:increment_handler inline; connections "
            "unlimited; idle timeout off; handshake timeout 10s; drain timeout "
            "30s; watchdog 10s",
        )
        config = ServerConfig(
            handler="m:f", processes=4, handler_timeout=2.5, max_connections=100,
            queue=10, queue_timeout=5, max_per_peer=3, idle_timeout=300,
            drain_timeout=20, workers=2, max_jobs_per_process=50, watchdog=None,
        )  # fmt: skip
        self.assertEqual(
            config.summary(),
            "handler m:f in 4 processes; at most 100 connections, queue 10, "
            "queue timeout 5s, per peer 3; idle timeout 300s; handler timeout "
            "2.5s; pool processes recycled after 50 jobs; handshake timeout "
            "10s; drain timeout 20s; watchdog off; 2 workers (limits per worker)",
        )
        self.assertIn(
            "at most 1 connection,", ServerConfig(max_connections=1).summary()
        )

    def test_the_json_round_trip_is_exact(self) -> None:
        config = ServerConfig(
            port="proxy:tcp:0", max_connections=2, threads=3, handler_timeout=1.5
        )
        self.assertEqual(ServerConfig.from_json(config.to_json()), config)
