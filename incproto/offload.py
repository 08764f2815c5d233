"""Deprecated alias of L{incproto.pools}, kept so that imports written for
incproto 0.1 keep working; it goes in 1.0."""

import warnings

from incproto.ordered import OrderedWork  # noqa: F401
from incproto.pools import (  # noqa: F401
    HandlerPool,
    HandlerTimeoutError,
    PoolProcessLostError,
    ProcessHandlerPool,
    ThreadHandlerPool,
)

warnings.warn(
    "incproto.offload is deprecated: import from incproto.pools",
    DeprecationWarning,
    stacklevel=2,
)
