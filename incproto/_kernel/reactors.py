"""The reactor an incproto object uses when its caller injected none.

Every object that keeps time or listens takes C{reactor=} or C{clock=};
only when that is C{None} does it ask here, late, so that importing incproto
never installs a reactor (twistd and twist choose theirs first).
"""

from __future__ import annotations

from typing import Any


def global_reactor() -> Any:
    """
    The global reactor, imported only when a caller injected none (importing
    it installs the default reactor, which twistd and twist choose first).
    """
    from twisted.internet import reactor

    return reactor
