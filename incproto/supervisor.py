"""Deprecated alias of L{incproto.workers.supervisor}, kept so that imports written for
incproto 0.1 keep working; it goes in 1.0."""

import warnings

from incproto.workers.supervisor import (  # noqa: F401
    supervise,
)

warnings.warn(
    "incproto.supervisor is deprecated: import from incproto.workers.supervisor",
    DeprecationWarning,
    stacklevel=2,
)
