#!/usr/bin/env python3
"""Restart every incproto backend behind HAProxy, one at a time, failing no
client session.

For each server of the backend, through HAProxy's runtime API (the admin
socket that docs/deploy/haproxy.cfg opens):

  1. set server BACKEND/NAME state drain   (no new sessions go to it)
  2. wait until it has no sessions left     (show stat: scur = 0)
  3. run the restart command                (SIGTERM, then start again)
  4. wait for its health: HAProxy's own check reports it up, and
     --health, if given, answers 200
  5. set server BACKEND/NAME state ready    (it takes sessions again)

The restart command is a shell command with {server}, {address} and {port}
replaced by the server's name, address and port, for example
'systemctl restart incproto@{server}'. It must return once the new process
listens (systemctl restart and a daemonizing twistd both do). If a step
fails or times out, the script stops with a one-line message and exit
status 1, leaving that server drained (no traffic goes to it) for a person
to look at; the servers before it are already back.

Standard library only: it runs on the load balancer's host as is.

  rolling-restart.py --socket /run/haproxy/incproto.sock \\
      --restart 'systemctl restart incproto@{server}' \\
      --health 'http://{address}:9100/healthz'
"""

from __future__ import annotations

import argparse
import csv
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Callable, Dict, List, Optional

# How often the state is polled while waiting, in seconds.
POLL = 0.1


class StepError(Exception):
    """A step failed; its message is the one line to print."""


def admin(path: str, command: str, timeout: float = 10.0) -> str:
    """One command to HAProxy's runtime API; its answer."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(path)
            sock.sendall(command.encode() + b"\n")
            chunks = []
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        except OSError as e:
            raise StepError(f"HAProxy admin socket {path}: {e}") from None
    return b"".join(chunks).decode(errors="replace")


def servers(path: str, backend: str) -> List[Dict[str, str]]:
    """The backend's servers, from C{show servers state}, in order."""
    answer = admin(path, f"show servers state {backend}")
    lines = answer.splitlines()
    header = next((line for line in lines if line.startswith("# be_id")), None)
    if header is None:
        raise StepError(f"no backend {backend!r}: {answer.strip() or 'no answer'}")
    names = header[2:].split()
    found = []
    for line in lines:
        fields = line.split()
        if len(fields) == len(names) and not line.startswith("#"):
            found.append(dict(zip(names, fields)))
    if not found:
        raise StepError(f"backend {backend!r} has no servers")
    return found


def server(path: str, backend: str, name: str) -> Dict[str, str]:
    for state in servers(path, backend):
        if state["srv_name"] == name:
            return state
    raise StepError(f"server {backend}/{name} is gone")


def sessions(path: str, backend: str, name: str) -> int:
    """The server's current sessions (scur), from C{show stat}."""
    answer = admin(path, "show stat").lstrip("# ")
    for row in csv.DictReader(answer.splitlines()):
        if row.get("pxname") == backend and row.get("svname") == name:
            return int(row["scur"] or 0)
    raise StepError(f"server {backend}/{name} is not in show stat")


def set_state(path: str, backend: str, name: str, state: str) -> None:
    answer = admin(path, f"set server {backend}/{name} state {state}").strip()
    if answer:
        raise StepError(f"set server {backend}/{name} state {state}: {answer}")


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise StepError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(POLL)


def restart_one(args: argparse.Namespace, state: Dict[str, str]) -> None:
    name = state["srv_name"]
    where = f"{args.backend}/{name}"
    fill = {"server": name, "address": state["srv_addr"], "port": state["srv_port"]}
    log(f"{where}: drain")
    set_state(args.socket, args.backend, name, "drain")
    wait(
        lambda: sessions(args.socket, args.backend, name) == 0,
        args.drain_timeout,
        f"{where} to have no sessions",
    )
    command = args.restart.format(**fill)
    log(f"{where}: no sessions; restarting: {command}")
    done = subprocess.run(command, shell=True, timeout=args.timeout)
    if done.returncode != 0:
        raise StepError(f"{where}: {command!r} exited {done.returncode}")
    health: Optional[str] = args.health.format(**fill) if args.health else None
    if health is not None:
        wait(lambda: healthy(health), args.timeout, f"{health} to answer 200")
    wait(
        lambda: server(args.socket, args.backend, name)["srv_op_state"] == "2",
        args.timeout,
        f"HAProxy's check to report {where} up",
    )
    set_state(args.socket, args.backend, name, "ready")
    log(f"{where}: healthy; ready")


def log(message: str) -> None:
    print(f"rolling-restart: {message}", flush=True)


def parse(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Restart HAProxy's incproto backends one at a time: "
        "drain, wait for no sessions, restart, wait for health, re-enable."
    )
    parser.add_argument(
        "--socket", required=True, help="HAProxy's admin socket (level admin)"
    )
    parser.add_argument("--backend", default="incproto", help="default: incproto")
    parser.add_argument(
        "--restart",
        required=True,
        help="shell command that restarts one backend ({server}, {address}, "
        "{port} are filled in); it must return once the new one listens",
    )
    parser.add_argument(
        "--health",
        help="URL answering 200 once a backend is ready, e.g. "
        "http://{address}:9100/healthz (HAProxy's check is always waited for)",
    )
    parser.add_argument(
        "--servers", help="comma-separated server names (default: all, in order)"
    )
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=60.0,
        help="seconds to wait for a server's sessions to end (default 60)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        help="seconds for a restart, and for health after it (default 60)",
    )
    args = parser.parse_args(argv)
    for template in (args.restart, args.health or ""):
        try:
            template.format(server="", address="", port="")
        except (KeyError, IndexError, ValueError) as e:
            parser.error(f"bad placeholder in {template!r}: {e}")
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse(argv)
    try:
        states = servers(args.socket, args.backend)
        if args.servers:
            wanted = args.servers.split(",")
            unknown = set(wanted) - {s["srv_name"] for s in states}
            if unknown:
                raise StepError(f"no such servers: {', '.join(sorted(unknown))}")
            states = [s for s in states if s["srv_name"] in wanted]
        for state in states:
            restart_one(args, state)
    except (StepError, subprocess.TimeoutExpired) as e:
        print(f"rolling-restart: {e}", file=sys.stderr)
        return 1
    log(f"restarted {len(states)} servers")
    return 0


if __name__ == "__main__":
    sys.exit(main())
