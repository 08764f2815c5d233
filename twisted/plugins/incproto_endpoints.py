"""incproto's endpoint description: C{proxy:}, the PROXY protocol done right.

C{serverFromString(reactor, "proxy:tcp:9090")} gives an
L{incproto.proxy.ProxyEndpoint}.  Only the parser lives here (no reactor
import).
"""

from incproto.proxy import ProxyEndpointParser

proxy_endpoint = ProxyEndpointParser()
