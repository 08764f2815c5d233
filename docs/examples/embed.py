"""Serve incproto from your own Twisted program, without twistd.

.venv/bin/python docs/examples/embed.py tcp:9090 9091  # the venv's python
"""

import sys

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.task import react

from incproto import IncrementFactory
from incproto.tap import Options, makeService


async def main(reactor, factory_port="tcp:9090", service_port="9091"):
    # 1. The factory alone, on any endpoint, beside your own listeners.
    endpoint = serverFromString(reactor, factory_port)
    port = await endpoint.listen(IncrementFactory(clock=reactor))
    print(f"factory on port {port.getHost().port}", flush=True)

    # 2. The wiring of `twistd incproto`, as a service in your own tree.
    application = MultiService()
    options = Options.parse(["--port", service_port])
    service = makeService(options, reactor=reactor)
    service.setServiceParent(application)
    application.startService()
    reactor.addSystemEventTrigger("before", "shutdown", application.stopService)
    listening = service.getServiceNamed("incproto").port
    print(f"service on port {listening.getHost().port}", flush=True)

    await Deferred()  # serve until the process is stopped


if __name__ == "__main__":
    react(lambda reactor: ensureDeferred(main(reactor, *sys.argv[1:])))
