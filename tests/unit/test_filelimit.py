"""Tests for incproto._kernel.filelimit: the open files limit raised to the
hard limit, and a warning when that is too low."""

from __future__ import annotations

import resource
from typing import Any, Dict, List

from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase

from incproto._kernel.filelimit import raise_file_limit


class FileLimitTests(SynchronousTestCase):
    def test_raised_to_the_hard_limit(self) -> None:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        self.addCleanup(resource.setrlimit, resource.RLIMIT_NOFILE, (soft, hard))
        events: List[Dict[str, Any]] = []
        limit = raise_file_limit(10, Logger(observer=events.append))
        self.assertEqual(limit, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
        if hard != resource.RLIM_INFINITY:
            self.assertEqual(limit, hard)
        self.assertEqual([e["soft"] for e in events], [limit])

    def test_warns_when_too_low(self) -> None:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        self.addCleanup(resource.setrlimit, resource.RLIMIT_NOFILE, (soft, hard))
        events: List[Dict[str, Any]] = []
        raise_file_limit(10**9, Logger(observer=events.append))
        [warning] = [e for e in events if "needed" in e]
        self.assertEqual(warning["needed"], 10**9)
