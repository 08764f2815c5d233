"""The wheel: only incproto's two plugin files under twisted/, plugins
Twisted finds once installed, and an uninstall that leaves Twisted whole."""

from __future__ import annotations

import re
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
FIND_PLUGIN = (
    "from twisted.application.service import IServiceMaker; "
    "from twisted.plugin import getPlugins; "
    "print(sorted(p.tapname for p in getPlugins(IServiceMaker)"
    " if p.tapname == 'incproto'))"
)
PLUGIN_FILE = "import twisted.plugins.incproto_plugin as p; print(p.__file__)"
PROXY_ENDPOINT = (
    "from twisted.internet.endpoints import serverFromString; "
    "import incproto.proxy; "
    "endpoint = serverFromString(None, 'proxy:tcp:0'); "
    "print(type(endpoint) is incproto.proxy.ProxyEndpoint and 'incproto.proxy')"
)


def run(*argv: str) -> str:
    # Not from the project root, where python -c would find twisted/plugins.
    return subprocess.run(
        argv, capture_output=True, text=True, check=True, timeout=300, cwd="/"
    ).stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    run(
        sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
        "--no-build-isolation", "--wheel-dir", str(out), str(ROOT),
    )  # fmt: skip
    [built] = out.glob("incproto-*.whl")
    return built


def test_only_the_plugins_under_twisted(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert sorted(n for n in names if n.startswith("twisted/")) == [
        "twisted/plugins/incproto_endpoints.py",
        "twisted/plugins/incproto_plugin.py",
    ]
    assert not [n for n in names if "dropin.cache" in n or n.startswith("tests/")]


def test_install_then_uninstall(wheel: Path, tmp_path: Path) -> None:
    """
    Installed into a fresh environment (which sees this one's Twisted through
    a .pth file), the plugin is found and incproto-client runs; uninstalled,
    Twisted still imports and both are gone.
    """
    env = tmp_path / "env"
    run(sys.executable, "-m", "venv", "--without-pip", str(env))
    python = str(env / "bin" / "python")
    site = run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))")
    (Path(site.strip()) / "outer.pth").write_text(sysconfig.get_path("purelib") + "\n")
    pip = [sys.executable, "-m", "pip", "--python", python, "--quiet"]
    run(*pip, "install", "--no-deps", str(wheel))
    assert run(python, "-c", FIND_PLUGIN).strip() == "['incproto']"
    assert run(python, "-c", PLUGIN_FILE).startswith(site.strip())
    assert run(python, "-c", PROXY_ENDPOINT) == "incproto.proxy\n"
    client = env / "bin" / "incproto-client"
    assert "incproto-client" in run(str(client), "--help")
    run(*pip, "uninstall", "--yes", "incproto")
    assert not client.exists()
    assert run(python, "-c", FIND_PLUGIN).strip() == "[]"
    with pytest.raises(subprocess.CalledProcessError):
        run(python, "-c", PROXY_ENDPOINT)  # unknown endpoint type 'proxy'
    assert run(python, "-c", "import twisted.plugins, twisted; print('ok')") == "ok\n"


def test_metadata_for_the_package_index(wheel: Path) -> None:
    """Project URLs, the Python versions CI runs, and a README whose links
    work where the index shows it."""
    with zipfile.ZipFile(wheel) as archive:
        [name] = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = archive.read(name).decode()
    headers, _, readme = metadata.partition("\n\n")
    urls = [line for line in headers.splitlines() if line.startswith("Project-URL:")]
    assert {url.split(":", 1)[1].split(",")[0].strip() for url in urls} >= {
        "Source", "Documentation", "Changelog", "Issues"
    }  # fmt: skip
    for version in ("3.9", "3.11"):
        assert f"Classifier: Programming Language :: Python :: {version}" in headers
    assert "Requires-Python: >=3.9" in headers
    assert "# incproto" in readme
    links = re.findall(r"\]\(([^)\s]+)\)", readme)
    assert links and all(link.startswith(("https://", "#")) for link in links), [
        link for link in links if not link.startswith(("https://", "#"))
    ]


def test_api_reference_builds_without_warnings(tmp_path: Path) -> None:
    """pydoctor, configured in pyproject.toml, fails on any warning."""
    pydoctor = Path(sys.executable).parent / "pydoctor"
    if not pydoctor.exists():
        pytest.skip("needs pydoctor (the docs extra)")
    done = subprocess.run(
        [str(pydoctor), "--html-output", str(tmp_path / "api")],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "api" / "incproto.handlers.FunctionHandler.html").exists()
