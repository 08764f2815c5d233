"""Deprecated alias of L{incproto.serving.service}, kept so that imports written for
incproto 0.1 keep working; it goes in 1.0."""

import warnings

from incproto.serving.service import (  # noqa: F401
    DrainingService,
    FileLimitService,
    ListenError,
    ListeningService,
    SequentialMultiService,
)

warnings.warn(
    "incproto.service is deprecated: import from incproto.serving.service",
    DeprecationWarning,
    stacklevel=2,
)
