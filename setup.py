"""Packaging for incproto: the library and its twistd plugin file.

The plugin is shipped as the lone module of the namespace directory
twisted/plugins: the wheel must never carry twisted/__init__.py or
twisted/plugins/__init__.py, which would overwrite Twisted's own files.
"""

import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = re.search(
    r'__version__ = "([^"]+)"', (HERE / "incproto" / "_version.py").read_text()
).group(1)
# The project's home. The repository has no configured remote; change this
# one line if it is published elsewhere.
REPOSITORY = "https://github.com/incproto/incproto"


def long_description() -> str:
    """
    The README, with its relative links made absolute, so that they work
    where the package index shows it (off the repository).
    """
    readme = (HERE / "README.md").read_text(encoding="utf-8")
    return re.sub(
        r"\]\((?!https?://|#)([^)\s]+)\)",
        lambda link: f"]({REPOSITORY}/blob/main/{link.group(1)})",
        readme,
    )


# cryptography 44 and later ship no PyPy 3.9 wheels (building one needs Rust).
TLS_REQUIRES = [
    "twisted[tls]",
    'cryptography<44; platform_python_implementation == "PyPy"',
]
TEST_REQUIRES = [
    *TLS_REQUIRES,
    "pytest>=7",
    "pytest-twisted>=1.14",
    "hypothesis>=6",
    "setuptools>=70.1",  # builds wheels without the wheel package (packaging test)
]
LINT_REQUIRES = ["ruff>=0.5", "mypy-zope>=1.0"]
# Mutation testing (docs/testing.md; [tool.mutmut] in pyproject.toml). mutmut 3
# needs Python 3.10 and forks per mutant: CPython only, not run in CI.
MUTATION_REQUIRES = [
    'mutmut>=3.3,<4; python_version >= "3.10" and '
    'platform_python_implementation == "CPython"'
]
# The API reference (pydoctor reads its settings from pyproject.toml).
DOCS_REQUIRES = ["pydoctor>=23.9"]
# benchmarks/compare.py's uvloop reference server (no PyPy wheels).
BENCH_REQUIRES = ['uvloop>=0.17; platform_python_implementation == "CPython"']

setup(
    name="incproto",
    version=VERSION,
    description="The increment protocol as a production-grade Twisted service.",
    long_description=long_description(),
    long_description_content_type="text/markdown",
    license="MIT",
    url=REPOSITORY,
    project_urls={
        "Source": REPOSITORY,
        "Documentation": f"{REPOSITORY}/tree/main/docs",
        "Protocol": f"{REPOSITORY}/blob/main/docs/protocol.md",
        "Changelog": f"{REPOSITORY}/blob/main/CHANGELOG.md",
        "Issues": f"{REPOSITORY}/issues",
    },
    keywords=["twisted", "tcp", "server", "protocol", "twistd"],
    python_requires=">=3.9",
    # An explicit root package_dir makes editable installs add the project
    # root to sys.path (a static .pth), where Twisted's plugin scan finds
    # twisted/plugins; the import-hook editable mode would hide it.
    package_dir={"": "."},
    packages=[*find_packages(include=["incproto", "incproto.*"]), "twisted.plugins"],
    package_data={"incproto": ["py.typed"]},
    # pebble: process pools that survive their processes (docs/pools.md).
    install_requires=[
        "twisted>=22.10",
        "zope.interface>=5",
        "prometheus_client>=0.17",
        "pebble>=5.1",
    ],
    entry_points={"console_scripts": ["incproto-client = incproto.client.cli:main"]},
    extras_require={
        "tls": TLS_REQUIRES,
        "test": TEST_REQUIRES,
        "dev": TEST_REQUIRES + LINT_REQUIRES + DOCS_REQUIRES + MUTATION_REQUIRES,
        "docs": DOCS_REQUIRES,
        "mutation": TEST_REQUIRES + MUTATION_REQUIRES,
        "bench": BENCH_REQUIRES,
    },
    # The Python versions CI runs: CPython 3.11, and PyPy 3.9 (Debian's pypy3).
    classifiers=[
        "Development Status :: 4 - Beta",
        "Framework :: Twisted",
        "Intended Audience :: Developers",
        "Intended Audience :: System Administrators",
        "Operating System :: POSIX :: Linux",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3 :: Only",
        "Programming Language :: Python :: 3.9",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: Implementation :: CPython",
        "Programming Language :: Python :: Implementation :: PyPy",
        "Topic :: Internet",
        "Topic :: System :: Networking",
        "Typing :: Typed",
    ],
)
