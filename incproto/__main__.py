# -*- test-case-name: tests.e2e.test_twistd -*-
"""C{python -m incproto [options]}: the server, exactly as C{twist incproto
[options]} runs it (the same options, logs, signals and exit statuses)."""

from __future__ import annotations

import sys
from typing import Optional, Sequence

from twisted.application.twist._twist import Twist


def main(argv: Optional[Sequence[str]] = None) -> None:
    """
    Run C{twist incproto} with C{argv} (the command line by default) as
    incproto's options.
    """
    options = sys.argv[1:] if argv is None else argv
    Twist.main(["twist", "incproto", *options])


if __name__ == "__main__":
    main()
