"""The twistd plugin, imported in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase


class PluginTests(SynchronousTestCase):
    def test_plugin_does_not_import_the_reactor(self) -> None:
        code = (
            "import sys, twisted.plugins.incproto_plugin; "
            "print('twisted.internet.reactor' in sys.modules)"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        )
        self.assertEqual(out.stdout.strip(), "False")
