# -*- test-case-name: tests.unit.test_client,tests.integration.test_client -*-
"""incproto-client: the series' client simulator, grown into a load tool for
any server of the increment protocol.

Run it as C{incproto-client} or C{python -m incproto.client}; from code, the
modes in L{incproto.client.modes} run on any reactor and fire their results.
"""

from incproto.client.check import ProtocolError, ReplyCheck
from incproto.client.cli import main
from incproto.client.connection import CheckedConnection, ClientError, Target

__all__ = [
    "CheckedConnection",
    "ClientError",
    "ProtocolError",
    "ReplyCheck",
    "Target",
    "main",
]
