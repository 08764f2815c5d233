"""The increment protocol as the shortest Twisted server, for comparison.

What any Twisted server pays, with nothing of incproto's: a plain
``Protocol`` on Twisted's default reactor, the same pure parser as the
asyncio server, ``transport.write`` as Twisted provides it, no producer,
no timeouts, no log line per connection.  The gap between it and the
asyncio server is Twisted's own cost per event; the gap between it and
incproto is incproto's.

    python benchmarks/servers/twisted_server.py PORT [--backlog N]

It prints ``listening on 127.0.0.1:PORT`` once it accepts connections.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol
from zope.interface import implementer

from incproto.parser import IncrementParser


@implementer(IHalfCloseableProtocol)
class Increment(Protocol):
    def connectionMade(self) -> None:
        self.parser = IncrementParser()
        self.transport.write(b"*")

    def dataReceived(self, data: bytes) -> None:
        reply = self.parser.feed(data)
        if reply:
            self.transport.write(reply)

    def readConnectionLost(self) -> None:
        self.transport.loseConnection()  # after the buffered replies

    def writeConnectionLost(self) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("port", type=int)
    parser.add_argument("--backlog", type=int, default=1024)
    args = parser.parse_args()
    from twisted.internet import reactor

    factory = Factory.forProtocol(Increment)
    factory.noisy = False
    port = reactor.listenTCP(  # type: ignore[attr-defined]
        args.port, factory, backlog=args.backlog, interface="127.0.0.1"
    )
    address = port.getHost()
    print(f"listening on {address.host}:{address.port}", flush=True)
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
