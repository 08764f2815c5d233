# -*- test-case-name: tests.test_client_cli -*-
"""The C{incproto-client} command line: parse, run a mode on the reactor,
report, and exit 0 only if every reply byte was right."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from typing import Any, Dict, List, NoReturn, Optional, Sequence, Tuple, cast

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from incproto.client.connection import ClientError, Target, tls_options
from incproto.client.modes import Burst, Churn, Ping, Result, Run, Series, Stream
from incproto.client.report import ProgressLine, as_json, merge, summary
from incproto.client.timeline import timeline_svg

PROG = "incproto-client"
MODES = ("series", "ping", "stream", "burst", "churn")
DESCRIPTION = """\
Drive an increment protocol server and check every reply byte.

modes (the first argument; series if none is given):
  series  the series' client: N connections, each sends ^abc$de^abte$f,
          waits 1 s, xyz^123, waits 1 s, 25$^ab0000$abab, waits 0.2 s,
          and closes; every send and receive is logged with its time
  ping    C connections exchange messages of L bytes for S seconds:
          messages per second, latency p50/p99
  stream  one connection, one message of M MiB: MB/s
  burst   N connections at once, each greeted and answered once, then
          held: the time until all were served
  churn   C loops of connect, greeting, close for S seconds: connections
          per second

Exit status: 0 if every reply was right, 1 on a wrong byte, a refused
connection or a timeout (with a one-line reason), 2 on bad usage."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _positive(kind: type) -> Any:
    def convert(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text} is not more than 0")
        return value

    return convert


_CONNECTIONS = {"series": 1, "ping": 100, "burst": 1000, "churn": 8}
# (the modes that take it, its flags, add_argument's keywords)
_MODE_OPTIONS: List[Tuple[Tuple[str, ...], Tuple[str, ...], Dict[str, Any]]] = [
    (("series", "burst"), ("-n", "--connections"),
     {"type": _positive(int), "help": "connections to open at once"}),
    (("ping", "churn"), ("-c", "--connections"),
     {"type": _positive(int), "help": "concurrent connections"}),
    (("ping", "churn"), ("-d", "--duration"),
     {"type": _positive(float), "default": 5.0, "help": "seconds to run (default 5)"}),
    (("ping", "churn"), ("--processes",),
     {"type": _positive(int), "default": 1,
      "help": "spread the connections over this many load processes"}),
    (("ping",), ("-l", "--length"),
     {"type": _positive(int), "default": 8,
      "help": "message payload bytes (default 8)"}),
    (("burst",), ("--hold",),
     {"type": float, "default": 0.0,
      "help": "seconds to hold the connections once all are served (default 0)"}),
    (("stream",), ("-m", "--mebibytes"),
     {"type": _positive(float), "default": 64.0,
      "help": "message size in MiB (default 64)"}),
    (("series", "burst", "ping"), ("--timeline",),
     {"metavar": "FILE.svg",
      "help": "draw each connection's arrival, wait and service as SVG"}),
]  # fmt: skip


def parser(mode: str) -> argparse.ArgumentParser:
    """The argument parser for C{mode}."""
    usage = f"{PROG} [{'|'.join(MODES)}] [options] HOST PORT"
    p = _Parser(
        prog=PROG,
        usage=usage,
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("host", help="the server's name or address")
    p.add_argument("port", type=_positive(int), help="the server's TCP port")
    p.add_argument(
        "--timeout",
        type=_positive(float),
        default=10.0,
        help="fail a connection that waits this long for bytes (default 10 s)",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--tls", action="store_true", help="connect with TLS")
    p.add_argument(
        "--ca",
        metavar="FILE.pem",
        help="with --tls: trust this certificate authority, not the system's",
    )
    p.add_argument(
        "--insecure",
        action="store_true",
        help="with --tls: do not check the server's certificate",
    )
    p.add_argument(
        "--quiet", action="store_true", help="no event log, no progress line"
    )
    for modes, flags, options in _MODE_OPTIONS:
        if mode in modes:
            options = dict(options)
            if flags[-1] == "--connections":
                options["default"] = _CONNECTIONS[mode]
                options["help"] += f" (default {_CONNECTIONS[mode]})"
            p.add_argument(*flags, **options)
    return p


def parse(argv: Sequence[str]) -> argparse.Namespace:
    """Parse C{argv} (without the program name); the mode comes first."""
    argv = list(argv)
    mode = argv.pop(0) if argv and argv[0] in MODES else "series"
    args = parser(mode).parse_args(argv)
    args.mode = mode
    if getattr(args, "processes", 1) > 1 and getattr(args, "timeline", None):
        parser(mode).error("--timeline needs a single load process")
    if (args.ca or args.insecure) and not args.tls:
        parser(mode).error("--ca and --insecure go with --tls")
    return args


def make_run(args: argparse.Namespace, reactor: Any, say: Any = None) -> Run:
    """Build the L{Run} that C{args} ask for."""
    tls = tls_options(args.host, args.ca, not args.insecure) if args.tls else None
    target = Target(reactor, args.host, args.port, args.timeout, tls)
    common: dict[str, Any] = {"timeout": args.timeout}
    if args.mode == "series":
        return Series(target, args.connections, say=say, **common)
    if args.mode == "ping":
        return Ping(target, args.connections, args.length, args.duration, **common)
    if args.mode == "stream":
        return Stream(target, args.mebibytes, **common)
    if args.mode == "burst":
        return Burst(target, args.connections, args.hold, **common)
    return Churn(target, args.connections, args.duration, **common)


def _print_result(args: argparse.Namespace, result: Result) -> None:
    print(as_json(result) if args.json else summary(result), flush=True)


def _fan_out(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """Run the mode in C{args.processes} child processes and merge."""
    children = []
    for index in range(args.processes):
        share = args.connections // args.processes + (
            index < args.connections % args.processes
        )
        command = [sys.executable, "-m", "incproto.client", args.mode]
        command += [args.host, str(args.port), "--json", "--quiet"]
        command += ["--timeout", str(args.timeout), "-c", str(share)]
        command += ["--tls"] * args.tls + ["--insecure"] * args.insecure
        command += ["--ca", args.ca] if args.ca else []
        command += ["-d", str(args.duration)]
        if args.mode == "ping":
            command += ["-l", str(args.length)]
        children.append(
            subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        )
    results: List[Result] = []
    errors: List[str] = []
    for child in children:
        out, err = child.communicate()
        if child.returncode:
            lines = err.decode(errors="replace").strip().splitlines()
            errors.append(
                lines[-1]
                if lines
                else f"{PROG}: a load process exited with status {child.returncode}"
            )
        else:
            results.append(json.loads(out))
    if errors:
        print(errors[0], file=sys.stderr)
        return 1
    _print_result(args, merge(results))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """
    Run C{incproto-client}; the exit status is the return value.
    """
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    if getattr(args, "processes", 1) > 1:
        return _fan_out(args, argv)

    from twisted.internet import reactor
    from twisted.logger import ILogObserver, Logger

    from incproto.service import raise_file_limit

    raise_file_limit(0, Logger(observer=cast(ILogObserver, lambda event: None)))
    progress = ProgressLine(sys.stderr)
    interactive = sys.stderr.isatty() and not args.quiet and not args.json
    say = None if args.quiet or args.json else print
    outcome: List[int] = []

    def run() -> Deferred[None]:
        try:
            mode = make_run(args, reactor, say=say)
        except ClientError as e:
            print(f"{PROG}: {e}", file=sys.stderr)
            outcome.append(1)
            reactor.stop()
            return Deferred()
        if interactive:
            mode.progress = progress.show

        def succeeded(result: Result) -> None:
            progress.clear()
            if getattr(args, "timeline", None):
                title = f"incproto-client {args.mode} against {mode.target.label}"
                with open(args.timeline, "w", encoding="utf-8") as chart:
                    chart.write(timeline_svg(mode.connections, mode.began, title))
            _print_result(args, result)
            outcome.append(0)

        def failed(failure: Failure) -> None:
            progress.clear()
            reason = failure.value if failure.check(ClientError) else failure
            print(f"{PROG}: {reason}", file=sys.stderr)
            outcome.append(1)

        done = mode.run().addCallback(succeeded).addErrback(failed)
        done.addBoth(lambda _: reactor.stop())
        return done

    reactor.callWhenRunning(run)
    reactor.run()
    return outcome[0] if outcome else 1
