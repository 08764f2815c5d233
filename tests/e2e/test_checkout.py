"""The checkout stays clean: what the documented commands write is ignored,
and nothing they generate is committed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
# Written by the README's trial command, twistd, pytest and the tools.
GENERATED = ["_trial_temp/test.log", "_trial_temp.lock", "twistd.pid", "dropin.cache"]


def git(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", *argv], cwd=ROOT, capture_output=True, text=True, timeout=60
    )


@pytest.fixture(scope="module")
def in_git() -> None:
    if shutil.which("git") is None or git("rev-parse").returncode != 0:
        pytest.skip("not a git checkout")


@pytest.mark.usefixtures("in_git")
def test_generated_files_are_ignored() -> None:
    result = git("check-ignore", "--no-index", *GENERATED)
    assert result.stdout.split() == GENERATED


@pytest.mark.usefixtures("in_git")
def test_no_generated_file_is_committed() -> None:
    assert git("ls-files", "_trial_temp", "dropin.cache", "twistd.pid").stdout == ""
