"""The files of docs/deploy agree with each other and with setup.py: the
image's pinned requirements, its name in the manifests and the build
script, its base. (Building and running the image: tests/e2e/test_image.py.)"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, List

from incproto._version import __version__

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "docs" / "deploy"


def requirement_lines(path: Path) -> List[str]:
    """The requirements of a pip requirements file, without comments,
    continuation lines joined."""
    text = path.read_text().replace("\\\n", " ")
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return [line for line in lines if line]


def name_of(requirement: str) -> str:
    """A requirement's project name, normalised (PEP 503)."""
    match = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match.group(0)).lower()


def test_the_image_installs_what_setup_py_requires() -> None:
    """requirements.in is setup.py's install_requires, exactly."""
    setup = (ROOT / "setup.py").read_text()
    block = re.search(r"install_requires=\[(.*?)\]", setup, re.S)
    assert block
    required = re.findall(r'"([^"]+)"', block.group(1))
    assert requirement_lines(DEPLOY / "requirements.in") == required


def test_every_requirement_is_pinned_with_hashes() -> None:
    """requirements.txt pins each requirement of requirements.in and all
    they need to one version, each with at least one sha256 hash, so that
    pip install --require-hashes accepts it."""
    pins: Dict[str, str] = {}
    for line in requirement_lines(DEPLOY / "requirements.txt"):
        match = re.match(
            r"([A-Za-z0-9._-]+)==(\S+)((?:\s+--hash=sha256:[0-9a-f]{64})+)$", line
        )
        assert match, line
        pins[name_of(match.group(1))] = match.group(2)
    for requirement in requirement_lines(DEPLOY / "requirements.in"):
        assert name_of(requirement) in pins, requirement
    assert "incproto" not in pins


def test_the_manifests_pull_the_image_the_script_builds() -> None:
    """kubernetes.yaml's image is build-image.sh's default name for this
    version; the Dockerfile starts from the base the script makes."""
    image = f"ghcr.io/incproto/incproto:{__version__}"
    manifests = (DEPLOY / "kubernetes.yaml").read_text()
    assert re.findall(r"^\s+image: (\S+)$", manifests, re.M) == [image]
    script = (DEPLOY / "build-image.sh").read_text()
    assert "image=${1:-ghcr.io/incproto/incproto:$version}" in script
    assert "base=localhost/debian:bookworm-slim" in script
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert re.findall(r"^FROM (\S+)$", dockerfile, re.M) == ["debian:bookworm-slim"]
