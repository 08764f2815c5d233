"""
Prometheus for real (Debian's prometheus package: prometheus and promtool):
every exposition of a real server passes C{promtool check metrics}, single
process and C{--workers}; a real Prometheus scrapes a real server; the
alerting rules of docs/deploy/alerts.yml pass their unit tests
(C{promtool test rules}) and load into that Prometheus.

Skipped where Prometheus is not installed; failed instead when
INCPROTO_REQUIRE_PROMETHEUS=1 (CI installs it and sets it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Dict, List

import pytest

from tests.support.processes import (
    TIMEOUT,
    ServerProcess,
    connect,
    receive_all,
    receive_exactly,
    script,
    wait_until,
)

DEPLOY = Path(__file__).resolve().parents[2] / "docs" / "deploy"
METRICS_LISTENING = re.compile(r"metrics listening on 127\.0\.0\.1:(\d+)")
# Options that make every family of the exposition appear.
EVERY_FAMILY = ["--max-connections", "4", "--queue-timeout", "5", "--threads", "2"]


def tool(name: str) -> str:
    """A Prometheus program on PATH: skip without it, or fail where required."""
    found = shutil.which(name)
    if found is None:
        reason = f"{name} is not installed (apt-get install prometheus)"
        if os.environ.get("INCPROTO_REQUIRE_PROMETHEUS") == "1":
            pytest.fail(f"{reason} (INCPROTO_REQUIRE_PROMETHEUS=1)")
        pytest.skip(reason)
    return found


def start_server(tmp_path: Path, *options: str) -> ServerProcess:
    """twistd -n incproto on ephemeral ports of 127.0.0.1, with --metrics."""
    return ServerProcess(
        [script("twistd"), "-n", "--pidfile=", "incproto",
         "--port", "tcp:0:interface=127.0.0.1",
         "--metrics", "tcp:0:interface=127.0.0.1", *options],
        tmp_path,
    )  # fmt: skip


def serve_one(server: ServerProcess) -> None:
    """One connection, one message, closed; returns once its close is
    logged, so that the counters show it."""
    sock = connect(server.port)
    sock.sendall(b"^abc$")
    assert receive_exactly(sock, 4) == b"*bcd"
    sock.shutdown(1)
    assert receive_all(sock) == b""
    sock.close()
    server.wait_for(re.compile(r"connection from .* closed"))


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
        assert response.status == 200
        body: bytes = response.read()
        return body


@pytest.mark.parametrize(
    "options",
    [EVERY_FAMILY, ["--workers", "2", *EVERY_FAMILY]],
    ids=["single", "workers"],
)
def test_every_exposition_passes_promtool_check_metrics(
    tmp_path: Path, options: List[str]
) -> None:
    """promtool's linter (names, types, HELP, the _total suffix of counters,
    label syntax) finds nothing, after traffic, with a limit and a pool,
    in one process and merged from two workers."""
    promtool = tool("promtool")
    server = start_server(tmp_path, *options)
    try:
        (port,) = server.wait_for(METRICS_LISTENING)[0]
        serve_one(server)
        exposition = get(f"http://127.0.0.1:{port}/metrics")
    finally:
        server.stop()
    assert b"incproto_connections_accepted_total" in exposition
    assert b"incproto_pool_faults_total" in exposition
    if "--workers" in options:
        assert b'worker="2"' in exposition
    checked = subprocess.run(
        [promtool, "check", "metrics"],
        input=exposition, capture_output=True, timeout=TIMEOUT,
    )  # fmt: skip
    assert (checked.returncode, checked.stdout, checked.stderr) == (0, b"", b""), (
        checked.stdout + checked.stderr
    )


def test_the_alert_rules_pass_their_unit_tests() -> None:
    """promtool check rules, then promtool test rules with alerts_test.yml."""
    promtool = tool("promtool")
    for command in (
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts_test.yml"],
    ):
        done = subprocess.run(
            [promtool, *command],
            cwd=DEPLOY, capture_output=True, text=True, timeout=TIMEOUT,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        assert "SUCCESS" in done.stdout + done.stderr


def test_a_real_prometheus_scrapes_a_real_server(tmp_path: Path) -> None:
    """
    Prometheus on 127.0.0.1 (its data in a temporary directory, a 1 s
    scrape interval, alerts.yml loaded) scrapes a server that has served
    one connection; once Prometheus has stored two scrapes (the first one's
    samples are committed before the second begins), its HTTP API
    answers up == 1 and incproto's metrics with their values, and lists
    the alerting rules, healthy.
    """
    prometheus = tool("prometheus")
    server = start_server(tmp_path, "--max-connections", "4")
    try:
        (port,) = server.wait_for(METRICS_LISTENING)[0]
        serve_one(server)
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(DEPLOY / "alerts.yml")],
            "scrape_configs": [
                {"job_name": "incproto",
                 "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]},
            ],
        }  # fmt: skip
        # JSON is YAML: no YAML library needed.
        (tmp_path / "prometheus.yml").write_text(json.dumps(config))
        scraper = ServerProcess(
            [prometheus, "--config.file=prometheus.yml",
             f"--storage.tsdb.path={tmp_path / 'data'}",
             "--storage.tsdb.retention.time=1h",
             "--web.listen-address=127.0.0.1:0"],
            tmp_path,
            listening=re.compile(rb'msg="Listening on" address=127\.0\.0\.1:(\d+)'),
        )  # fmt: skip
        try:
            api = f"http://127.0.0.1:{scraper.port}/api/v1"
            wait_until(lambda: scrapes(api) >= 2, "two scrapes", every=0.2)
            up = query(api, 'up{job="incproto"}')
            found = query(api, '{__name__=~"incproto_.+"}')
            rules = json.loads(get(f"{api}/rules?type=alert"))["data"]["groups"]
        finally:
            scraper.stop()
    finally:
        server.stop()
    assert [sample["value"][1] for sample in up] == ["1"]
    assert up[0]["metric"]["instance"] == f"127.0.0.1:{port}"
    values = {sample["metric"]["__name__"]: sample["value"][1] for sample in found}
    assert values["incproto_connections_accepted_total"] == "1"
    assert values["incproto_connections_active"] == "0"
    assert values["incproto_received_bytes_total"] == "5"
    assert "incproto_connections_refused_total" in values
    alerts = [rule for group in rules for rule in group["rules"]]
    assert {rule["health"] for rule in alerts} == {"ok"}
    assert "IncprotoRejectingConnections" in {rule["name"] for rule in alerts}


def scrapes(api: str) -> int:
    """How many scrapes of incproto Prometheus has stored (none while its
    API answers 503: still starting)."""
    try:
        counted = query(api, 'count_over_time(up{job="incproto"}[1h])')
    except urllib.error.HTTPError as e:
        if e.code != 503:
            raise
        return 0
    return int(counted[0]["value"][1]) if counted else 0


def query(api: str, expression: str) -> List[Dict[str, Any]]:
    """An instant query's result vector."""
    answer = json.loads(get(f"{api}/query?query={urllib.parse.quote(expression)}"))
    assert answer["status"] == "success", answer
    result: List[Dict[str, Any]] = answer["data"]["result"]
    return result
