"""
The container image of docs/deploy/Dockerfile, built (docs/deploy/
build-image.sh) and run with podman as the pod of docs/deploy/kubernetes.yaml
would run it: a read-only root filesystem (without even a writable /tmp),
no capabilities, no privilege escalation. Through the container: the
protocol on 9090, /healthz and /metrics on 9100, the non-root user, and a
SIGTERM drain that completes a held session and exits 0 within the pod's
grace period.

Skipped where podman or the image is missing; failed instead when
INCPROTO_REQUIRE_IMAGE=1 (CI sets it after building the image).
INCPROTO_IMAGE names another image to test.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest

from incproto._version import __version__
from tests.support.processes import (
    TIMEOUT,
    ServerProcess,
    connect,
    receive_all,
    receive_exactly,
)

IMAGE = os.environ.get("INCPROTO_IMAGE", f"ghcr.io/incproto/incproto:{__version__}")
MANIFESTS = Path(__file__).resolve().parents[2] / "docs" / "deploy" / "kubernetes.yaml"
# crun, podman's default on Debian, fails on hybrid cgroup hosts.
RUNTIME = ["--runtime", "runc"]
NAMES = itertools.count()


def unavailable(reason: str) -> None:
    """Skip, or fail where CI requires the image."""
    if os.environ.get("INCPROTO_REQUIRE_IMAGE") == "1":
        pytest.fail(f"{reason} (INCPROTO_REQUIRE_IMAGE=1)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def podman() -> str:
    """podman, with the image built."""
    found = shutil.which("podman")
    if found is None:
        unavailable("podman is not installed (apt-get install podman buildah runc)")
        raise AssertionError("unreachable")
    exists = subprocess.run([found, "image", "exists", IMAGE], timeout=TIMEOUT)
    if exists.returncode != 0:
        unavailable(f"no image {IMAGE}: build it with docs/deploy/build-image.sh")
    return found


class Container:
    """
    The image run in the foreground as a pod would run it, its output read
    like a server process's; its ports published on ephemeral ports of
    127.0.0.1.
    """

    def __init__(self, podman: str, tmp_path: Path) -> None:
        self.podman = podman
        self.name = f"incproto-test-{os.getpid()}-{next(NAMES)}"
        self.server = ServerProcess(
            [podman, "run", "--rm", *RUNTIME, "--name", self.name,
             "--read-only", "--read-only-tmpfs=false",
             "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
             "-p", "127.0.0.1::9090", "-p", "127.0.0.1::9100", IMAGE],
            tmp_path,
        )  # fmt: skip

    def host_port(self, port: int) -> int:
        """The port of 127.0.0.1 where the container's C{port} is published."""
        done = self.podman_command("port", self.name, f"{port}/tcp")
        return int(done.stdout.strip().rsplit(":", 1)[1])

    def podman_command(self, *argv: str) -> subprocess.CompletedProcess[str]:
        """Run C{podman *argv}; fail the test if it fails."""
        done = subprocess.run(
            [self.podman, *argv], capture_output=True, text=True, timeout=TIMEOUT
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done

    def execute(self, *argv: str) -> subprocess.CompletedProcess[str]:
        """Run C{argv} in the container, as its user; return what it did."""
        return subprocess.run(
            [self.podman, "exec", self.name, *argv],
            capture_output=True, text=True, timeout=TIMEOUT,
        )  # fmt: skip

    def remove(self) -> None:
        subprocess.run(
            [self.podman, "rm", "--force", "--time", "0", self.name],
            capture_output=True, timeout=TIMEOUT,
        )  # fmt: skip
        if self.server.process.poll() is None:
            self.server.process.kill()
            self.server.process.wait(TIMEOUT)


@pytest.fixture
def container(podman: str, tmp_path: Path) -> Iterator[Container]:
    running = Container(podman, tmp_path)
    try:
        yield running
    finally:
        running.remove()


def get(port: int, path: str) -> Tuple[int, bytes]:
    """Status and body of an HTTP GET on 127.0.0.1."""
    url = f"http://127.0.0.1:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_the_protocol_on_9090_and_health_and_metrics_on_9100(
    container: Container,
) -> None:
    """Inside the container incproto listens on 9090 and --metrics on 9100;
    published, they serve the protocol, /healthz and /metrics."""
    assert container.server.port == 9090, container.server.output
    metrics = re.compile(r'"what": "metrics", "address": "[^"]+", "port": (\d+)')
    assert container.server.wait_for(metrics) == [("9100",)]
    sock = connect(container.host_port(9090))
    sock.sendall(b"^abc$")
    assert receive_exactly(sock, 4) == b"*bcd"
    sock.shutdown(1)
    assert receive_all(sock) == b""
    sock.close()
    web = container.host_port(9100)
    assert get(web, "/healthz") == (200, b"ok\n")
    status, body = get(web, "/metrics")
    assert status == 200
    assert re.search(rb"^incproto_connections_accepted_total 1\.0$", body, re.M), body


def test_runs_as_the_non_root_user_on_a_read_only_root(container: Container) -> None:
    """PID 1 (twist) is user and group 10001, the manifests' runAsUser; no
    file can be written anywhere on the root filesystem, /tmp included, and
    the service still serves."""
    status = container.execute("cat", "/proc/1/status")
    assert status.returncode == 0, status.stderr
    assert re.search(r"^Uid:\s+10001\s+10001\s+10001\s+10001$", status.stdout, re.M)
    assert re.search(r"^Gid:\s+10001\s+10001\s+10001\s+10001$", status.stdout, re.M)
    assert re.search(r"^CapEff:\s+0+$", status.stdout, re.M)
    command = container.execute("cat", "/proc/1/cmdline").stdout.split("\0")
    assert command[1:3] == ["/opt/incproto/bin/twist", "incproto"], command
    assert "runAsUser: 10001" in MANIFESTS.read_text()
    for where in ("/x", "/tmp/x", "/opt/incproto/x", "/nonexistent"):
        touched = container.execute("touch", where)
        assert touched.returncode != 0
        assert "Read-only file system" in touched.stderr, touched.stderr
    assert get(container.host_port(9100), "/healthz") == (200, b"ok\n")


def test_sigterm_drains_a_held_session_within_the_grace_period(
    container: Container,
) -> None:
    """
    podman stop with the pod's grace period sends the image's STOPSIGNAL
    (SIGTERM) and would SIGKILL at its end: the held connection, mid
    message, keeps its replies and gets a FIN; meanwhile /healthz answers
    503 and the container keeps running until that client has closed;
    then it exits 0 (twist as PID 1) well before the grace period.
    """
    grace = int(
        re.findall(r"terminationGracePeriodSeconds: (\d+)", MANIFESTS.read_text())[0]
    )
    web = container.host_port(9100)
    sock = connect(container.host_port(9090))
    sock.sendall(b"^abc")
    assert receive_exactly(sock, 4) == b"*bcd"
    started = time.monotonic()
    stopped: List[subprocess.CompletedProcess[str]] = []
    stopping = threading.Thread(
        target=lambda: stopped.append(
            container.podman_command("stop", "--time", str(grace), container.name)
        )
    )
    stopping.start()
    try:
        assert receive_all(sock) == b""
        assert container.server.process.poll() is None
        assert get(web, "/healthz") == (503, b"draining or stopped\n")
        sock.close()
        status = container.server.process.wait(grace)
    finally:
        stopping.join(grace + TIMEOUT)
    elapsed = time.monotonic() - started
    assert stopped, "podman stop failed"
    assert status == 0, container.server.output
    assert elapsed < grace - 10, elapsed
    assert '"log_format": "draining' in container.server.output
    assert "Traceback" not in container.server.output, container.server.output
