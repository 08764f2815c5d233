# -*- test-case-name: tests.unit.test_client_cli,tests.e2e.test_client_cli -*-
"""The C{incproto-client} command line: parse, run a mode on the reactor,
report, and exit 0 only if every reply byte was right."""

from __future__ import annotations

import argparse
import difflib
import json
import os
import subprocess
import sys
from typing import Any, Dict, List, NoReturn, Optional, Sequence, Tuple, cast

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

import twisted
from incproto.client.connection import ClientError, Target, tls_options
from incproto.client.modes import Burst, Churn, Ping, Run, Series, Stream
from incproto.client.report import ProgressLine, Result, as_json, merge, summary
from incproto.client.timeline import timeline_svg

PROG = "incproto-client"
MODES = ("series", "ping", "stream", "burst", "churn")
_SUMMARIES = {
    "series": "the series' client, every send and receive logged (the default)",
    "ping": "C connections exchange messages: rate and latency",
    "stream": "one connection, one long message: MB/s",
    "burst": "N connections at once: the time until all are served",
    "churn": "C loops of connect, greeting, close: connections per second",
}
_DETAILS = {
    "series": "The series' client: N connections, each sends ^abc$de^abte$f, "
    "waits 1 s, sends xyz^123, waits 1 s, sends 25$^ab0000$abab, waits 0.2 s "
    "and closes; every send and receive is logged with its time.",
    "ping": "C connections exchange messages of L bytes for S seconds: "
    "messages per second, latency p50/p99.",
    "stream": "One connection, one message of M MiB: MB/s.",
    "burst": "N connections at once, each greeted and answered once, then "
    "held: the time until all were served.",
    "churn": "C loops of connect, greeting, close for S seconds: connections "
    "per second.",
}
_EXIT = """\
Exit status: 0 if every reply was right, 1 on a wrong byte, a refused
connection or a timeout (with a one-line reason), 2 on bad usage (checked
before anything connects)."""
DESCRIPTION = f"""\
Drive an increment protocol server and check every reply byte.
The mode comes first (series if none is given); "{PROG} MODE --help"
lists its options.

{_EXIT}"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _number(kind: type, smallest: float, problem: str) -> Any:
    def convert(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value < smallest or value != value:
            raise argparse.ArgumentTypeError(f"{text} {problem}")
        return value

    return convert


def _positive(kind: type) -> Any:
    return _number(kind, 1 if kind is int else 1e-300, "is not more than 0")


def _port(text: str) -> int:
    value: int = _positive(int)(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"{text} is not a TCP port (1 to 65535)")
    return value


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
     {"type": _number(float, 0, "is negative"), "default": 0.0,
      "help": "seconds to hold the connections once all are served (default 0)"}),
    (("stream",), ("-m", "--mebibytes"),
     {"type": _positive(float), "default": 64.0,
      "help": "message size in MiB (default 64)"}),
    (("series", "burst"), ("--timeline",),
     {"metavar": "FILE.svg",
      "help": "draw each connection's arrival, wait for the greeting and "
              "service as an SVG chart"}),
]  # fmt: skip


# The options every mode takes (see _add_common), and help.
_COMMON_OPTIONS = frozenset(
    {
        "--timeout",
        "--json",
        "--tls",
        "--ca",
        "--insecure",
        "--quiet",
        "-h",
        "--help",
        "--version",
    }
)


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("host", help="the server's name or address")
    p.add_argument("port", type=_port, help="the server's TCP port")
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


def parser() -> argparse.ArgumentParser:
    """The argument parser: one subcommand per mode."""
    from incproto._version import __version__

    top = _Parser(
        prog=PROG,
        usage=f"{PROG} [{{{','.join(MODES)}}}] [options] HOST PORT",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    top.add_argument(
        "--version",
        action="version",
        version=f"{PROG} {__version__} (Twisted {twisted.__version__})",
    )
    modes = top.add_subparsers(
        dest="mode", metavar="MODE", parser_class=_Parser, required=True
    )
    for mode in MODES:
        sub = modes.add_parser(
            mode,
            prog=f"{PROG} {mode}",
            help=_SUMMARIES[mode],
            description=_DETAILS[mode],
            epilog=_EXIT,
        )
        _add_common(sub)
        for takers, flags, options in _MODE_OPTIONS:
            if mode in takers:
                options = dict(options)
                if flags[-1] == "--connections":
                    options["default"] = _CONNECTIONS[mode]
                    options["help"] += f" (default {_CONNECTIONS[mode]})"
                sub.add_argument(*flags, **options)
    return top


def _options_of(mode: str) -> List[str]:
    """The mode-specific option strings C{mode} takes."""
    return [f for takers, flags, _ in _MODE_OPTIONS if mode in takers for f in flags]


def _takes_value(mode: str) -> List[str]:
    """Option strings of C{mode} that are followed by a value."""
    return [*_options_of(mode), "--timeout", "--ca"]


def _check_shape(argv: List[str], implied: bool) -> None:
    """
    Reject, in words, what argparse would misread as a host or port: a
    misspelt mode, and an option of another mode (argparse would take the
    option's value for the host).

    @param implied: whether the mode was not given (and is series).
    """
    mode = argv[0]
    values = _takes_value(mode)
    positional: List[str] = []
    skip = False
    for token in argv[1:]:
        if skip:
            skip = False
        elif token.startswith("-") and len(token) > 1 and not _is_number(token):
            name = token.split("=", 1)[0]
            others = [m for m in MODES if name in _options_of(m)]
            if others and mode not in others:
                fail(f"{mode} has no {name} option (it goes with {', '.join(others)})")
            if not others and name not in _COMMON_OPTIONS:
                fail(f"{mode} has no {name} option")
            skip = name in values and "=" not in token
        else:
            positional.append(token)
    if len(positional) > 2:
        if positional[0] in MODES:
            fail(f"the mode comes first: {PROG} {positional[0]} [options] HOST PORT")
        if implied and argv[1] == positional[0]:
            fail(f"unknown mode {positional[0]!r} (choose from {', '.join(MODES)})")
        fail(f"expected HOST PORT, got {' '.join(positional)}")


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def fail(message: str) -> NoReturn:
    """Exit 2 with a one-line usage error."""
    _Parser(prog=PROG).error(message)


def parse(argv: Sequence[str]) -> argparse.Namespace:
    """
    Parse C{argv} (without the program name); the mode comes first, and is
    C{series} if none is given.  Everything is checked here, before anything
    connects: bad usage exits 2 with one line.
    """
    argv = list(argv)
    implied = not argv or argv[0] not in (*MODES, "-h", "--help", "--version")
    if implied:
        guess = difflib.get_close_matches(argv[0], MODES, 1) if argv else []
        if guess and not argv[0].startswith("-"):
            fail(f"unknown mode {argv[0]!r} (did you mean {guess[0]}?)")
        argv.insert(0, "series")
    if argv[0] in MODES:
        _check_shape(argv, implied)
    args = parser().parse_args(argv)
    if getattr(args, "processes", 1) > 1 and getattr(args, "timeline", None):
        fail("--timeline needs a single load process")
    if (args.ca or args.insecure) and not args.tls:
        fail("--ca and --insecure go with --tls")
    if args.tls:
        try:
            tls_options(args.host, args.ca, not args.insecure)
        except ClientError as e:
            fail(str(e))
    if getattr(args, "timeline", None):
        problem = _unwritable(args.timeline)
        if problem:
            fail(f"--timeline {args.timeline}: {problem}")
    return args


def _unwritable(path: str) -> Optional[str]:
    """Why C{path} cannot be written, or C{None} if it can (so far as can be
    told without writing it)."""
    if os.path.isdir(path):
        return "is a directory"
    if os.path.exists(path):
        return None if os.access(path, os.W_OK) else "is not writable"
    folder = os.path.dirname(path) or "."
    if not os.path.isdir(folder):
        return f"no such directory: {folder}"
    if not os.access(folder, os.W_OK):
        return f"cannot create files in {folder}"
    return None


def make_run(
    args: argparse.Namespace,
    reactor: Any,
    say: Any = None,
    clock: Optional[IReactorTime] = None,
) -> Run:
    """
    Build the L{Run} that C{args} ask for.

    @param clock: what times the run (see L{incproto.client.clock}); by
        default C{perf_counter}'s seconds on C{reactor}.
    """
    tls = tls_options(args.host, args.ca, not args.insecure) if args.tls else None
    target = Target(reactor, args.host, args.port, args.timeout, tls)
    common: dict[str, Any] = {"timeout": args.timeout, "clock": clock}
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


def run_mode(
    args: argparse.Namespace, reactor: Any, clock: Optional[IReactorTime] = None
) -> Deferred[int]:
    """
    Run the mode C{args} ask for, in this process, on C{reactor} (running):
    print its result or its one-line failure, write the timeline if asked,
    and fire with the exit status.

    @param clock: what times the run; by default C{perf_counter}'s seconds
        on C{reactor}.
    """
    progress = ProgressLine(sys.stderr)
    interactive = sys.stderr.isatty() and not args.quiet and not args.json
    say = None if args.quiet or args.json else print
    try:
        mode = make_run(args, reactor, say=say, clock=clock)
    except ClientError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return succeed(1)
    if interactive:
        mode.progress = progress.show

    def succeeded(result: Result) -> int:
        progress.clear()
        _print_result(args, result)
        if getattr(args, "timeline", None):
            title = f"incproto-client {args.mode} against {mode.target.label}"
            try:
                with open(args.timeline, "w", encoding="utf-8") as chart:
                    chart.write(timeline_svg(mode.connections, mode.began, title))
            except OSError as e:
                print(f"{PROG}: --timeline: {e}", file=sys.stderr)
                return 1
        return 0

    def failed(failure: Failure) -> int:
        progress.clear()
        reason = failure.value if failure.check(ClientError) else failure
        print(f"{PROG}: {reason}", file=sys.stderr)
        return 1

    return mode.run().addCallback(succeeded).addErrback(failed)


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

    from incproto._kernel.filelimit import raise_file_limit

    raise_file_limit(0, Logger(observer=cast(ILogObserver, lambda event: None)))
    outcome: List[int] = []

    def run() -> Deferred[None]:
        done = run_mode(args, reactor).addCallback(outcome.append)
        return done.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(run)
    reactor.run()
    return outcome[0] if outcome else 1
