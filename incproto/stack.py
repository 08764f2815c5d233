"""Deprecated alias of L{incproto.serving.stack}, kept so that imports written for
incproto 0.1 keep working; it goes in 1.0."""

import warnings

from incproto.serving.stack import (  # noqa: F401
    IncprotoService,
    serving_stack,
)

warnings.warn(
    "incproto.stack is deprecated: import from incproto.serving.stack",
    DeprecationWarning,
    stacklevel=2,
)
