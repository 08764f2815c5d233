"""Tests for incproto._kernel.addresses over real TCP: a served connection's
peer is described from what accept returned, as getPeer() would give it."""

from __future__ import annotations

import socket
from typing import Any, Generator, List

import pytest
import pytest_twisted
from twisted.internet import tcp
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol

from incproto._kernel.addresses import describe, describe_peer
from incproto._kernel.leantransport import LeanServer, lean
from tests.support.helpers import Client, listen_on, within


class Built(Factory):
    def __init__(self) -> None:
        self.built: Deferred[Protocol] = Deferred()

    def buildProtocol(self, addr: Any) -> Protocol:
        protocol = Protocol()
        protocol.factory = self
        self.built.callback(protocol)
        return protocol


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.parametrize("leaned", [False, True], ids=["twisted", "lean"])
@pytest.mark.parametrize(
    "interface",
    ["127.0.0.1", pytest.param("::1", marks=pytest.mark.skipif(
        not has_ipv6_loopback(), reason="no IPv6 loopback"))],
)  # fmt: skip
@pytest_twisted.inlineCallbacks
def test_server_transport_described_without_get_peer(
    interface: str, leaned: bool, monkeypatch: pytest.MonkeyPatch
) -> Generator[Deferred[Any], Any, None]:
    """The reactor's TCP server transport, and incproto's lean one (what
    incproto's own ports accept into), are described without C{getPeer}."""
    from twisted.internet import reactor
    from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint

    factory = Built()
    escaped = interface.replace(":", "\\:")
    kind = "tcp6" if ":" in interface else "tcp"
    port = listen_on(factory, f"{kind}:0:interface={escaped}")
    if leaned:
        assert lean(port)
    served: List[Any] = [port]
    try:
        client = Client()
        endpoint_type: Any = (
            TCP6ClientEndpoint if kind == "tcp6" else TCP4ClientEndpoint
        )
        yield within(
            endpoint_type(reactor, interface, port.getHost().port).connect(
                Factory.forProtocol(lambda: client)
            )
        )
        protocol = yield within(factory.built)
        transport = protocol.transport
        assert type(transport) is (LeanServer if leaned else tcp.Server)
        expected = describe(transport.getPeer())
        assert expected.startswith("[::1]:" if kind == "tcp6" else "127.0.0.1:")

        def forbidden(self: Any) -> Any:
            raise AssertionError("getPeer called")

        monkeypatch.setattr(tcp.Server, "getPeer", forbidden)
        assert describe_peer(transport) == expected
        client.transport.loseConnection()
        yield within(client.closed)
    finally:
        yield served[0].stopListening()
