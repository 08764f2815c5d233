"""incproto against reference servers of the same protocol, with
incproto-client's load modes; one command, medians of several runs.

    python benchmarks/compare.py [--runs 3] [--servers a,b,...] [--modes ...]
        [--pypy-twistd PATH] [--load-processes 1] [--generator native|python]
        [--out DIR] [--server-cpus LIST --client-cpus LIST]

The load comes from a native generator (benchmarks/load/load.c, C and
epoll, every reply byte checked; built with cc -O2 on first use), so that
the generator is not what sets a Python server's figure: the C epoll server
(benchmarks/servers/epoll_server.c) in the same run shows its ceiling.
--generator python drives the same loads with incproto-client instead.

On a host with more cores than the servers use, --server-cpus and
--client-cpus (taskset CPU lists, e.g. 0-3 and 4-15) keep the servers and
the load generator on separate cores, so that worker scaling is measured
without the load generator competing for them.

Servers (all on 127.0.0.1, all started at once and kept up; runs are
interleaved across servers so that noise spreads evenly):

    incproto           twistd -n incproto (CPython, inline handler)
    incproto-threads   the same with --threads 2
    incproto-quiet     the same with --no-connection-log (the reference
                       servers log nothing; incproto logs every close)
    incproto-metrics   incproto with --metrics (on a port of its own)
    incproto-idle      incproto with --idle-timeout 300
    incproto-limit     incproto with --max-connections 10000
    incproto-pypy      twistd from a PyPy environment (--pypy-twistd, or
                       .venv-pypy/bin/twistd, made if pypy3 is installed)
    incproto-pypy-quiet  the same with --no-connection-log
    twisted-pypy       benchmarks/servers/twisted_server.py on that PyPy
    incproto-wN        incproto-quiet with --workers N (N = 1, 2, 4)
    asyncio            benchmarks/servers/asyncio_server.py (stdlib)
    uvloop             the same on uvloop, if uvloop is installed
    incproto-before    incproto (and incproto-pypy-before on PyPy) importing
                       incproto from the --before tree: A/B in one run
    twisted            benchmarks/servers/twisted_server.py: the shortest
                       Twisted server (the same parser, plain write, nothing
                       else): Twisted's own floor
    threadpool         benchmarks/servers/threadpool_server.py, 256 threads
                       (the series' design; it holds a thread per client, so
                       it takes no part in burst)
    epoll              benchmarks/servers/epoll_server.c, single-threaded C
                       epoll: the ceiling of the machine and the generator

Modes (ping and churn spread the load over --load-processes):

    stream   one connection, one 256 MiB message: MB/s
    ping     100 connections, 8-byte messages, 5 s: messages/s, p50, p99
    burst    10,000 connections at once, each answered once, held 1 s:
             seconds until all were served, and server KiB per connection
             (peak memory of the server's processes during the burst, less
             their memory when started)
    churn    50 loops of connect, greeting, close, 3 s: connections/s, p50
             and p99 of connect-to-greeting

Each run also records how idle the machine's CPUs were (/proc/stat), to
show the headroom left with the load generator on the same cores, and the
server's own CPU time (its processes' /proc/PID/stat) per unit of work: per
MB, message or connection.  That figure does not depend on how much of the
shared cores the load generator took.  The
load generator's ceiling is its figure against the fastest reference
server; a figure above it would mean the generator, not the server, set it.

Under each mode's table, the ratios of pairs measured in the same runs:
incproto as shipped against --no-connection-log (on both interpreters),
each of --metrics, --idle-timeout and --max-connections on against
incproto without it, incproto against the shortest Twisted server (on
both interpreters), and PyPy incproto against CPython's and uvloop.

Writes DIR/compare.json, DIR/compare.md and DIR/compare.svg (default
benchmarks/results/).

Kernel settings: burst's 10,000 connects need listen backlogs that hold
them, so where net.core.somaxconn or net.ipv4.tcp_max_syn_backlog is below
16384 (and /proc/sys is writable, as root), compare.py raises it for the
run, says so on standard error, and restores the old value when it ends.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.chart import bars_svg  # noqa: E402
from tests.support.processes import ServerProcess, descendants, memory_kib  # noqa: E402

# The service's port, not the metrics listener's.
LISTENING = re.compile(rb"(?<!metrics )listening on [^\s:]+:(\d+)")
PY = sys.executable
TWISTD = str(Path(PY).parent / "twistd")

# mode: (incproto-client's arguments, result key, unit, higher is better)
MODES: Dict[str, tuple[List[str], str, str, bool]] = {
    "stream": (["stream", "-m", "256"], "mb_per_s", "MB/s", True),
    "ping": (["ping", "-c", "100", "-l", "8", "-d", "5"], "rate", "messages/s", True),
    "burst": (["burst", "-n", "10000", "--hold", "1", "--timeout", "30"], "seconds",
              "s until all served", False),
    "churn": (["churn", "-c", "50", "-d", "3"], "rate", "connections/s", True),
}  # fmt: skip
# The same loads for the native generator (benchmarks/load/load.c).
NATIVE: Dict[str, List[str]] = {
    "stream": ["stream", "-m", "256"],
    "ping": ["ping", "-c", "100", "-l", "8", "-d", "5"],
    "burst": ["burst", "-n", "10000", "-H", "1", "-T", "30"],
    "churn": ["churn", "-c", "50", "-d", "3"],
}
LOAD_SOURCE = ROOT / "benchmarks" / "load" / "load.c"
EPOLL_SOURCE = ROOT / "benchmarks" / "servers" / "epoll_server.c"


# Burst opens 10,000 connections at once: every server gets a listen backlog
# that holds them all (and the kernel is asked to allow it), or the kernel
# drops handshakes and the run measures SYN-ACK retransmission timers.
BACKLOG = "16384"


def raise_kernel_backlogs(
    root: Path = Path("/proc/sys"),
) -> Callable[[], None]:
    """
    Raise the kernel's listen backlog limits to BACKLOG where they are
    lower, saying so; return the function that puts the old values back.
    """
    changed: List[tuple[Path, str]] = []
    for name in ("net/core/somaxconn", "net/ipv4/tcp_max_syn_backlog"):
        path = root / name
        setting = name.replace("/", ".")
        try:
            old = path.read_text().strip()
            if int(old) < int(BACKLOG):
                path.write_text(BACKLOG)
                changed.append((path, old))
                print(
                    f"raised {setting} from {old} to {BACKLOG} for this run "
                    "(restored at the end)",
                    file=sys.stderr,
                )
        except OSError as e:
            print(f"warning: cannot raise {setting}: {e}", file=sys.stderr)

    def restore() -> None:
        for path, old in changed:
            setting = str(path.relative_to(root)).replace("/", ".")
            try:
                path.write_text(old)
                print(f"restored {setting} to {old}", file=sys.stderr)
            except OSError as e:
                print(f"warning: cannot restore {setting}: {e}", file=sys.stderr)

    return restore


def built(source: Path, *flags: str) -> str:
    """
    The binary of a C source file beside it, compiled with C{cc -O2} first
    if it is missing or older than its source.
    """
    binary = source.with_suffix("")
    if not binary.exists() or binary.stat().st_mtime < source.stat().st_mtime:
        compiler = shutil.which("cc") or shutil.which("gcc")
        if compiler is None:
            sys.exit(f"compare.py needs a C compiler (cc) to build {source.name}")
        subprocess.run(
            [compiler, "-O2", *flags, "-o", str(binary), str(source)], check=True
        )
    return str(binary)


def incproto(twistd: str, *options: str) -> List[str]:
    return [twistd, "-n", "--pidfile=", "incproto", "--port",
            "tcp:0:interface=127.0.0.1", "--backlog", BACKLOG, *options]  # fmt: skip


def pypy_twistd() -> Optional[str]:
    """
    The twistd of .venv-pypy, made first (with this checkout installed) if
    pypy3 is on the PATH; C{None} without PyPy.
    """
    venv = ROOT / ".venv-pypy"
    twistd = venv / "bin" / "twistd"
    if not twistd.exists() and shutil.which("pypy3"):
        print("making .venv-pypy for the PyPy server ...", file=sys.stderr)
        subprocess.run(["pypy3", "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(venv / "bin" / "pip"), "install", "-q", "-e", str(ROOT)], check=True
        )
    return str(twistd) if twistd.exists() else None


def server_commands(pypy_twistd: Optional[str]) -> Dict[str, List[str]]:
    servers = ROOT / "benchmarks" / "servers"
    commands = {
        "incproto": incproto(TWISTD),
        "incproto-threads": incproto(TWISTD, "--threads", "2"),
        "incproto-quiet": incproto(TWISTD, "--no-connection-log"),
        "incproto-metrics": incproto(TWISTD, "--metrics", "tcp:0:interface=127.0.0.1"),
        "incproto-idle": incproto(TWISTD, "--idle-timeout", "300"),
        "incproto-limit": incproto(TWISTD, "--max-connections", "10000"),
        "asyncio": [PY, str(servers / "asyncio_server.py"), "0",
                    "--backlog", BACKLOG],
        "uvloop": [PY, str(servers / "asyncio_server.py"), "0", "--uvloop",
                   "--backlog", BACKLOG],
        "twisted": [PY, str(servers / "twisted_server.py"), "0",
                    "--backlog", BACKLOG],
        "threadpool": [PY, str(servers / "threadpool_server.py"), "0",
                       "--threads", "256", "--backlog", BACKLOG],
    }  # fmt: skip
    if shutil.which("cc") or shutil.which("gcc"):
        commands["epoll"] = [built(EPOLL_SOURCE), "0", "--backlog", BACKLOG]
    for count in (1, 2, 4):
        commands[f"incproto-w{count}"] = incproto(
            TWISTD, "--no-connection-log", "--workers", str(count)
        )
    if pypy_twistd:
        commands["incproto-pypy"] = incproto(pypy_twistd)
        commands["incproto-pypy-quiet"] = incproto(pypy_twistd, "--no-connection-log")
        pypy = str(Path(pypy_twistd).parent / "python")
        commands["twisted-pypy"] = [pypy, str(servers / "twisted_server.py"), "0",
                                    "--backlog", BACKLOG]  # fmt: skip
    return commands


STARTED_RSS: Dict[str, int] = {}


# CPU lists for taskset, to keep servers and load generator apart on a
# larger host (--server-cpus, --client-cpus).
PINNING: Dict[str, List[str]] = {"server": [], "client": []}


def pinned(role: str, command: List[str]) -> List[str]:
    return [*PINNING[role], *command]


# --before TREE: the *-before servers import incproto from TREE.
BEFORE: Dict[str, str] = {}


def start(name: str, command: List[str]) -> ServerProcess:
    saved = os.environ.get("PYTHONPATH")
    if name.endswith("-before"):
        os.environ["PYTHONPATH"] = BEFORE["tree"]
    try:
        server = ServerProcess(pinned("server", command), ROOT, listening=LISTENING)
    finally:
        os.environ.pop("PYTHONPATH", None)
        if saved is not None:
            os.environ["PYTHONPATH"] = saved
    workers = re.search(r"--workers (\d+)", " ".join(command))
    if workers:
        server.wait_for(
            re.compile(r"\[worker [\d.]+\] incproto listening"), int(workers.group(1))
        )
    STARTED_RSS[name] = tree_rss_kib(server.process.pid)
    return server


def tree_rss_kib(pid: int) -> int:
    return sum(memory_kib(p) or 0 for p in [pid, *descendants(pid)])


def tree_cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process and its descendants."""
    total = 0
    for process in [pid, *descendants(pid)]:
        try:
            fields = Path(f"/proc/{process}/stat").read_text().rsplit(")", 1)[1]
        except OSError:
            continue
        total += int(fields.split()[11]) + int(fields.split()[12])
    return total / os.sysconf("SC_CLK_TCK")


# What a mode's server CPU is divided by, and the unit of the quotient.
WORK: Dict[str, tuple[Callable[[Dict[str, Any]], float], str]] = {
    "stream": (lambda r: r["bytes"] / 1e6, "us/MB"),
    "ping": (lambda r: r["messages"], "us/message"),
    "burst": (lambda r: r["connections"], "us/connection"),
    "churn": (lambda r: r["connections"], "us/connection"),
}


def cpu_times() -> List[int]:
    with open("/proc/stat") as stat:
        return [int(n) for n in stat.readline().split()[1:]]


class PeakMemory:
    """Samples a process tree's RSS every 20 ms in a thread; keeps the peak."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, tree_rss_kib(self.pid))

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


# The load generator: the native one's binary, or None for incproto-client.
GENERATOR: Dict[str, Optional[str]] = {"native": None}


def run_client(mode: str, port: int, load_processes: int) -> Dict[str, Any]:
    native = GENERATOR["native"]
    if native:
        arguments = list(NATIVE[mode])
        if mode in ("ping", "churn") and load_processes > 1:
            arguments += ["-t", str(load_processes)]
        command = [native, *arguments, "127.0.0.1", str(port)]
    else:
        arguments = list(MODES[mode][0])
        if mode in ("ping", "churn") and load_processes > 1:
            arguments += ["--processes", str(load_processes)]
        command = [PY, "-m", "incproto.client", *arguments, "--json", "--quiet",
                   "127.0.0.1", str(port)]  # fmt: skip
    before = cpu_times()
    done = subprocess.run(
        pinned("client", command), capture_output=True, text=True, timeout=300
    )
    after = cpu_times()
    if done.returncode:
        return {"error": (done.stderr.strip().splitlines() or ["?"])[-1]}
    result: Dict[str, Any] = json.loads(done.stdout)
    spent = [b - a for a, b in zip(before, after)]
    result["cpu_idle"] = (spent[3] + spent[4]) / max(sum(spent), 1)
    return result


def measure(
    name: str, server: ServerProcess, mode: str, load_processes: int
) -> Dict[str, Any]:
    pid = server.process.pid
    # From the server's memory when it started: a process keeps what a burst
    # made it allocate, so a later burst's growth alone would say too little.
    peak = PeakMemory(pid) if mode == "burst" else None
    spent = tree_cpu_seconds(pid)
    result = run_client(mode, server.port, load_processes)
    spent = tree_cpu_seconds(pid) - spent
    if "error" not in result:
        # The server's CPU per unit of work does not depend on how much of
        # the shared cores the load generator took.
        result["server_cpu"] = spent * 1e6 / max(WORK[mode][0](result), 1e-9)
    if peak is not None:
        result["kib_per_connection"] = (peak.stop() - STARTED_RSS[name]) / 10000
    return result


def figure(value: float) -> str:
    """A figure for the table: whole numbers with separators, or 4 digits."""
    return f"{value:,.0f}" if value >= 1000 else f"{value:.4g}"


def median(values: List[float]) -> Optional[float]:
    return statistics.median(values) if values else None


def table(results: Dict[str, Dict[str, Any]], modes: List[str]) -> str:
    lines = []
    for mode in modes:
        _, _, unit, higher = MODES[mode]
        rows = results[mode]
        latency = mode in ("ping", "churn")
        extra_column = " KiB/conn |" if mode == "burst" else ""
        extra_column += " p50 ms | p99 ms |" if latency else ""
        header = (
            "| server | median | runs | vs twisted | vs asyncio | vs uvloop "
            f"| CPU idle | server CPU, {WORK[mode][1]} |"
        )
        rule = "|---" * (8 + extra_column.count("|")) + "|"
        lines += [f"### {mode} ({unit}, median)", "", header + extra_column, rule]
        for name, row in rows.items():
            value = row["median"]
            if value is None:
                lines.append(f"| {name} | {row.get('error', 'n/a')} | | | | | | |")
                continue
            ratios = []
            for peer in PEERS:
                other = rows.get(peer, {}).get("median")
                if other:
                    ratio = value / other if higher else other / value
                    ratios.append(f"{ratio:.2f}x")
                else:
                    ratios.append("")
            runs = ", ".join(figure(v) for v in row["values"])
            cpu = figure(row["server_cpu"]) if row.get("server_cpu") else ""
            extra = ""
            if mode == "burst":
                extra = f" {row['kib_per_connection']:.2f} |"
            if latency:
                p50 = row.get("p50") or 0.0
                extra = f" {p50 * 1e3:.2f} | {row['p99'] * 1e3:.2f} |"
            lines.append(
                f"| {name} | {figure(value)} | {runs} | {' | '.join(ratios)} | "
                f"{row['cpu_idle'] * 100:.0f}% | {cpu} |{extra}"
            )
        lines += ["", ceiling(mode, rows), ""]
        pairs = pair_ratios(mode, rows)
        if pairs:
            lines += ["Ratios in the same runs (above 1: as good or better):", ""]
            lines += [*pairs, ""]
    return "\n".join(lines)


REFERENCE_SERVERS = ("asyncio", "uvloop", "threadpool", "epoll")
# The servers every figure is set against, in the table's columns.
PEERS = ("twisted", "asyncio", "uvloop")

# (server, its peer): what the first adds to the second, measured in the same
# interleaved runs (the access log; options on against off).
PAIRS = (
    ("incproto", "incproto-quiet"),
    ("incproto-pypy", "incproto-pypy-quiet"),
    ("incproto-metrics", "incproto"),
    ("incproto-idle", "incproto"),
    ("incproto-limit", "incproto"),
    ("incproto", "twisted"),
    ("incproto-pypy", "twisted-pypy"),
    ("incproto-pypy", "incproto"),
    ("incproto-pypy", "uvloop"),
    ("incproto", "incproto-before"),
    ("incproto-pypy", "incproto-pypy-before"),
)


def pair_ratios(mode: str, rows: Dict[str, Any]) -> List[str]:
    """
    For each of L{PAIRS} measured in C{mode}: the server's figure over its
    peer's (above 1 is better) and its peer's server CPU over its own
    (above 1 means it needs less CPU per unit of work).
    """
    higher = MODES[mode][3]
    lines = []
    for name, peer in PAIRS:
        this, other = rows.get(name, {}), rows.get(peer, {})
        if not (this.get("median") and other.get("median")):
            continue
        ratio = this["median"] / other["median"]
        cpu = ""
        if this.get("server_cpu") and other.get("server_cpu"):
            cpu = f", server CPU {other['server_cpu'] / this['server_cpu']:.2f}x"
        lines.append(
            f"- {name} against {peer}: {ratio if higher else 1 / ratio:.2f}x{cpu}"
        )
    return lines


def ceiling(mode: str, rows: Dict[str, Any]) -> str:
    """
    The load generator's ceiling in C{mode}: its best figure against a
    reference server; a figure beyond it would be the generator's limit.
    """
    higher = MODES[mode][3]
    best = [(rows[n]["median"], n) for n in REFERENCE_SERVERS
            if rows.get(n, {}).get("median")]  # fmt: skip
    if not best:
        return "Load generator ceiling: no reference server measured."
    value, name = max(best) if higher else min(best)
    beyond = [n for n, r in rows.items() if r["median"] and n not in REFERENCE_SERVERS
              and (r["median"] > value if higher else r["median"] < value)]  # fmt: skip
    return f"Load generator ceiling (its figure against {name}): {figure(value)}; " + (
        f"beyond it: {', '.join(beyond)}." if beyond else "no figure beyond it."
    )


def write_reports(
    saved: Path, machine: str, runs: int, results: Dict[str, Dict[str, Any]]
) -> None:
    """Write the markdown table and the chart beside C{saved}; print the table."""
    modes = list(results)
    markdown = f"Machine: {machine}; {runs} runs each.\n\n" + table(results, modes)
    saved.with_suffix(".md").write_text(markdown)
    panels = [
        (f"{mode} ({MODES[mode][2]})",
         {n: r["median"] for n, r in results[mode].items() if r["median"]})
        for mode in modes
    ]  # fmt: skip
    saved.with_suffix(".svg").write_text(
        bars_svg("incproto vs reference servers (medians)", panels)
    )
    print(markdown)


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="benchmarks/compare.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--runs", type=int, default=3, help="runs per server and mode (default 3)"
    )
    parser.add_argument("--servers", default="incproto,incproto-quiet,"
                        "incproto-threads,incproto-pypy,twisted,twisted-pypy,"
                        "asyncio,uvloop,threadpool,epoll",
                        help="comma-separated servers (default: all but "
                        "incproto-wN)")  # fmt: skip
    parser.add_argument(
        "--modes",
        default="stream,ping,burst,churn",
        help="comma-separated modes (default: stream,ping,burst,churn)",
    )
    parser.add_argument(
        "--load-processes",
        type=int,
        default=1,
        help="threads of the native load generator (processes of "
        "incproto-client) for ping and churn (default 1)",
    )
    parser.add_argument(
        "--generator",
        choices=("native", "python"),
        default="native",
        help="the load generator: native (benchmarks/load/load.c, built with "
        "cc) or python (incproto-client) (default native)",
    )
    parser.add_argument(
        "--pypy-twistd",
        help="twistd of a PyPy environment with incproto (default: "
        ".venv-pypy/bin/twistd, made with pypy3 if it is installed)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=ROOT / "benchmarks" / "results",
        help="where to write compare.json, .md and .svg (default benchmarks/results)",
    )
    parser.add_argument(
        "--render", type=Path, help="only print the tables of a compare.json"
    )
    parser.add_argument(
        "--before",
        type=Path,
        help="a tree with an earlier incproto/ (e.g. from git archive): adds "
        "servers incproto-before and incproto-pypy-before that import it, for "
        "A/B runs interleaved with the current code",
    )
    parser.add_argument("--server-cpus", help="taskset CPU list for the servers")
    parser.add_argument("--client-cpus", help="taskset CPU list for the load")
    args = parser.parse_args()
    if args.render:
        saved = json.loads(args.render.read_text())
        write_reports(args.render, saved["machine"], saved["runs"], saved["results"])
        return
    if args.generator == "native":
        GENERATOR["native"] = built(LOAD_SOURCE, "-pthread")
    if args.server_cpus:
        PINNING["server"] = ["taskset", "-c", args.server_cpus]
    if args.client_cpus:
        PINNING["client"] = ["taskset", "-c", args.client_cpus]
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # inherited
    restore_kernel = raise_kernel_backlogs()
    atexit.register(restore_kernel)
    commands = server_commands(args.pypy_twistd or pypy_twistd())
    if args.before:
        BEFORE["tree"] = str(args.before.resolve())
        for name in ("incproto", "incproto-pypy"):
            if name in commands:
                commands[f"{name}-before"] = commands[name]
    names = [n for n in args.servers.split(",") if n in commands]
    if "uvloop" in names:
        try:
            import uvloop  # noqa: F401
        except ImportError:
            names.remove("uvloop")
    modes = args.modes.split(",")
    servers = {name: start(name, commands[name]) for name in names}
    say: Callable[[str], None] = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    results: Dict[str, Dict[str, Any]] = {}
    try:
        for server in servers.values():  # warm up (PyPy's JIT above all)
            run_client("ping", server.port, 1)
        for mode in modes:
            raw: Dict[str, List[Dict[str, Any]]] = {name: [] for name in names}
            for run in range(args.runs):
                for name in names:
                    if mode == "burst" and name == "threadpool":
                        continue
                    result = measure(name, servers[name], mode, args.load_processes)
                    raw[name].append(result)
                    shown = result.get("error") or figure(result[MODES[mode][1]])
                    say(f"{mode} run {run + 1} {name}: {shown}")
                    time.sleep(1)  # let TIME_WAIT and the CPUs settle
            key = MODES[mode][1]
            results[mode] = {}
            for name in names:
                good = [r for r in raw[name] if "error" not in r]
                errors = [r["error"] for r in raw[name] if "error" in r]
                results[mode][name] = {
                    "values": [r[key] for r in good],
                    "median": median([r[key] for r in good]),
                    "cpu_idle": median([r["cpu_idle"] for r in good]) or 0.0,
                    "server_cpu": median([r["server_cpu"] for r in good]),
                    "p50": median([r.get("latency_p50") or 0 for r in good]),
                    "p99": median([r.get("latency_p99") or 0 for r in good]),
                    "kib_per_connection": median(
                        [r.get("kib_per_connection", 0) for r in good]
                    ),
                    "error": errors[0] if errors else
                    ("n/a" if mode == "burst" and name == "threadpool" else None),
                }  # fmt: skip
    finally:
        for server in servers.values():
            server.process.terminate()
            server.process.wait(30)
    python = f"{platform.python_implementation()} {platform.python_version()}"
    machine = (
        f"{platform.node()}: {os.cpu_count()} CPUs, client and servers on {python}"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    saved = args.out / "compare.json"
    saved.write_text(
        json.dumps(
            {"machine": machine, "runs": args.runs, "results": results}, indent=1
        )
    )
    write_reports(saved, machine, args.runs, results)


if __name__ == "__main__":
    main()
