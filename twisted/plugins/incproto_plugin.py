"""The twistd plugin: C{twistd -n incproto --port 9090}.

Only a ServiceMaker lives here (no reactor import): incproto.tap holds the
options and the wiring.
"""

from twisted.application.service import ServiceMaker

incproto = ServiceMaker(
    "incproto",
    "incproto.tap",
    "Serve the increment protocol: bytes inside ^...$ come back plus one.",
    "incproto",
)
