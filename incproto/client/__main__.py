"""C{python -m incproto.client}: the same as C{incproto-client}."""

import sys

from incproto.client.cli import main

sys.exit(main())
