"""Tests for incproto.proxy: PROXY v1/v2 headers and the wrapper protocol."""

from __future__ import annotations

import shutil
import struct
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Tuple

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactor
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import providedBy

from incproto import ConnectionLimit, IncrementFactory, IncrementProtocol
from incproto.protocol import CONNECTION_LOST
from incproto.proxy import (
    REFUSAL_CLOSE_TIMEOUT,
    V2_SIGNATURE,
    ProxyEndpoint,
    ProxyEndpointParser,
    ProxyFactory,
    ProxyHeaderError,
    ProxyProtocol,
    TLSAfterProxyReactor,
    from_haproxy,
    parse_proxy_header,
    split_proxy,
    with_tls,
)
from tests.support.certificates import make_certificate
from tests.support.fakes import HalfCloseableTransport
from tests.support.formats import V1, v2
from tests.support.pools import ManualPool

DONE = Failure(ConnectionDone())


class ParserTests(SynchronousTestCase):
    def test_v1_tcp4(self) -> None:
        source, destination, length = parse_proxy_header(V1 + b"^abc") or (None,) * 3
        self.assertEqual(source, IPv4Address("TCP", "192.0.2.1", 56324))
        self.assertEqual(destination, IPv4Address("TCP", "198.51.100.2", 443))
        self.assertEqual(length, len(V1))

    def test_v1_tcp6(self) -> None:
        header = b"PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n"
        source = IPv6Address("TCP", "2001:db8::1", 1)
        destination = IPv6Address("TCP", "2001:db8::2", 2)
        self.assertEqual(parse_proxy_header(header), (source, destination, len(header)))

    def test_v1_unknown_keeps_the_connection_addresses(self) -> None:
        header = b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n"
        self.assertEqual(parse_proxy_header(header), (None, None, len(header)))

    def test_partial_headers_need_more(self) -> None:
        for header in (V1, v2("192.0.2.1", "192.0.2.2")):
            for cut in range(len(header)):
                self.assertIsNone(parse_proxy_header(header[:cut]), (header, cut))

    def test_invalid_headers(self) -> None:
        for data in (
            b"GET / HTTP/1.1\r\n",
            b"^abc$",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 56324\r\n",
            b"PROXY TCP4 2001:db8::1 198.51.100.2 1 2\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 1 70000\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 +1 2\r\n",
            b"PROXY " + b"x" * 200,
            V2_SIGNATURE + b"\x31\x11\x00\x0c" + bytes(12),  # version 3
            V2_SIGNATURE + b"\x21\x11\xff\xff",  # longer than any proxy sends
            V2_SIGNATURE + b"\x21\x51\x00\x00",  # unknown family
        ):
            self.assertRaises(ProxyHeaderError, parse_proxy_header, data)

    def test_v2_tcp4(self) -> None:
        header = v2("192.0.2.1", "192.0.2.2", (5555, 9090))
        self.assertEqual(
            parse_proxy_header(header + b"rest"),
            (IPv4Address("TCP", "192.0.2.1", 5555),
             IPv4Address("TCP", "192.0.2.2", 9090), len(header)),
        )  # fmt: skip

    def test_v2_tcp6_with_tlvs(self) -> None:
        header = v2("2001:db8::7", "2001:db8::8")
        tlv = b"\x04\x00\x02ok"
        header = header[:14] + struct.pack("!H", 36 + len(tlv)) + header[16:] + tlv
        source, _, length = parse_proxy_header(header) or (None,) * 3
        self.assertEqual(source, IPv6Address("TCP", "2001:db8::7", 1000))
        self.assertEqual(length, len(header))

    def test_v2_local_and_unspec(self) -> None:
        local = V2_SIGNATURE + b"\x20\x00\x00\x00"
        unspec = V2_SIGNATURE + b"\x21\x00\x00\x00"
        self.assertEqual(parse_proxy_header(local), (None, None, 16))
        self.assertEqual(parse_proxy_header(unspec), (None, None, 16))

    def test_v2_unix(self) -> None:
        body = b"/a".ljust(108, b"\0") + b"/b".ljust(108, b"\0")
        header = V2_SIGNATURE + b"\x21\x31" + struct.pack("!H", len(body)) + body
        self.assertEqual(
            parse_proxy_header(header), (UNIXAddress(b"/a"), UNIXAddress(b"/b"), 232)
        )


class ProxyProtocolTests(SynchronousTestCase):
    def connect(
        self,
    ) -> Tuple[ProxyProtocol, HalfCloseableTransport, List[IncrementProtocol]]:
        built: List[IncrementProtocol] = []

        class Recording(IncrementFactory):
            def buildProtocol(self, addr: object) -> IncrementProtocol:
                protocol = super().buildProtocol(addr)
                assert isinstance(protocol, IncrementProtocol)
                built.append(protocol)
                return protocol

        self.clock = Clock()
        protocol = ProxyFactory(
            Recording(clock=self.clock), self.clock, 5.0
        ).buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
        transport = HalfCloseableTransport(
            peerAddress=IPv4Address("TCP", "127.0.0.1", 1)
        )
        protocol.makeConnection(transport)
        return protocol, transport, built

    def test_starts_only_after_the_header_with_the_client_address(self) -> None:
        protocol, transport, built = self.connect()
        protocol.dataReceived(V1[:10])
        protocol.dataReceived(V1[10:30])
        self.assertEqual((built, transport.value()), ([], b""))
        protocol.dataReceived(V1[30:] + b"^abc$")
        [wrapped] = built
        self.assertEqual(transport.value(), b"*bcd")
        self.assertEqual(wrapped.transport.getPeer().host, "192.0.2.1")
        self.assertEqual(wrapped.transport.getHost().port, 443)
        self.assertEqual(
            list(providedBy(wrapped.transport)), list(providedBy(transport))
        )

    def test_writes_and_producer_go_to_the_real_transport(self) -> None:
        protocol, transport, built = self.connect()
        protocol.dataReceived(v2("192.0.2.1", "192.0.2.2") + b"^")
        [wrapped] = built
        self.assertIs(transport.producer, wrapped)
        wrapped.transport.pauseProducing()
        self.assertEqual(transport.producerState, "paused")

    def test_write_sequence_reaches_the_real_transport(self) -> None:
        protocol, transport, built = self.connect()
        protocol.dataReceived(V1)
        [wrapped] = built
        wrapped.transport.writeSequence([b"^a", b"b$"])
        wrapped.transport.write(b"c")
        self.assertEqual(transport.value(), b"*^ab$c")

    def test_half_close_passes_through(self) -> None:
        protocol, transport, _ = self.connect()
        protocol.dataReceived(V1 + b"^ab")
        protocol.readConnectionLost()
        self.assertEqual(transport.value(), b"*bc")
        self.assertTrue(transport.disconnecting)

    def test_bad_header_closes_fin_first(self) -> None:
        protocol, transport, built = self.connect()
        protocol.dataReceived(b"^abc$")
        # FIN first, reading on: closing with unread input would send a RST.
        self.assertEqual(
            (transport.write_closed, transport.disconnecting), (True, False)
        )
        protocol.dataReceived(b"more")
        self.assertEqual((built, transport.value()), ([], b""))
        protocol.readConnectionLost()  # the client closes too
        self.assertTrue(transport.disconnecting)

    def test_refused_client_that_never_closes_is_aborted(self) -> None:
        protocol, transport, _ = self.connect()
        protocol.dataReceived(b"^abc$")
        self.clock.advance(REFUSAL_CLOSE_TIMEOUT)
        self.assertTrue(transport.disconnected)

    def test_refused_client_that_closes_in_time_is_not_aborted(self) -> None:
        protocol, _, _ = self.connect()
        protocol.dataReceived(b"^abc$")
        protocol.readConnectionLost()
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_end_of_input_before_the_header_closes(self) -> None:
        protocol, transport, built = self.connect()
        protocol.dataReceived(b"PROX")
        protocol.readConnectionLost()
        self.assertTrue(transport.disconnecting)
        self.assertEqual(built, [])

    def test_header_timeout(self) -> None:
        protocol, transport, built = self.connect()
        protocol.dataReceived(b"PROXY TCP4")
        self.clock.advance(4.9)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(0.1)
        self.assertTrue(transport.write_closed)
        self.assertEqual(built, [])

    def test_header_in_time_cancels_the_timeout(self) -> None:
        protocol, _, built = self.connect()
        protocol.dataReceived(V1)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(len(built), 1)

    def test_log_prefix(self) -> None:
        factory = ProxyFactory(IncrementFactory(clock=Clock()), Clock())
        self.assertEqual(factory.logPrefix(), "IncrementFactory (PROXY)")
        protocol, _, _ = self.connect()
        self.assertEqual(protocol.logPrefix(), "IncrementProtocol")

    def test_connection_limit_sees_the_client_address(self) -> None:
        """Per-peer limits behind a proxy count proxied clients, not the proxy."""
        clock = Clock()
        limit = ConnectionLimit(
            IncrementFactory(clock=clock), 10, maxPerPeer=1, clock=clock
        )
        transports = []
        for header in (V1, V1, v2("192.0.2.99", "192.0.2.2")):
            protocol = ProxyFactory(limit, clock).buildProtocol(
                IPv4Address("TCP", "127.0.0.1", 1)
            )
            transport = HalfCloseableTransport(
                peerAddress=IPv4Address("TCP", "127.0.0.1", 1)
            )
            protocol.makeConnection(transport)
            protocol.dataReceived(header)
            transports.append(transport)
        self.assertEqual([t.value() for t in transports], [b"*", b"", b"*"])
        self.assertTrue(transports[1].write_closed)


class PendingHeaderTests(SynchronousTestCase):
    """Connections still waiting for their PROXY header are bounded."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.factory = ProxyFactory(
            IncrementFactory(clock=self.clock), self.clock, 5.0, maxPending=2
        )

    def connect(self) -> Tuple[ProxyProtocol, HalfCloseableTransport]:
        address = IPv4Address("TCP", "127.0.0.1", 1)
        protocol = self.factory.buildProtocol(address)
        transport = HalfCloseableTransport(peerAddress=address)
        protocol.makeConnection(transport)
        return protocol, transport

    def test_beyond_the_bound_connections_are_closed_at_once(self) -> None:
        (first, _), (_, second) = self.connect(), self.connect()
        _, third = self.connect()
        self.assertEqual(
            (second.write_closed, third.write_closed, self.factory.pending),
            (False, True, 2),
        )
        self.assertEqual(self.factory.refused, 1)
        first.dataReceived(V1)  # its header names the client: no longer pending
        _, fourth = self.connect()
        self.assertFalse(fourth.write_closed)

    def test_timeouts_and_losses_free_their_place(self) -> None:
        self.connect()
        self.connect()
        self.clock.advance(5.0)  # both time out
        self.assertEqual(self.factory.pending, 0)
        self.connect()[0].connectionLost(DONE)
        self.assertEqual(self.factory.pending, 0)

    def test_refusals_are_logged_at_a_limited_rate(self) -> None:
        events: List[Dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.factory.headerTimeout = 60.0
        for _ in range(2 + 100):
            self.connect()
        closing = [e for e in events if e.get("log_format", "").startswith("closing")]
        self.assertEqual(len(closing), 1)
        self.clock.advance(10.0)
        [summary] = [e for e in events if "in the last" in e["log_format"]]
        self.assertEqual(summary["count"], 99)


class HeaderErrorTests(SynchronousTestCase):
    """
    A refused header says why (the reason is logged with the peer).
    """

    def assertRefused(self, data: bytes, why: str) -> None:
        error = self.assertRaises(ProxyHeaderError, parse_proxy_header, data)
        self.assertEqual(str(error), why)

    def test_reasons(self) -> None:
        for data, why in (
            (b"GET / HTTP/1.1\r\n", "no PROXY header"),
            (b"PROXY " + b"x" * 200, "PROXY v1 header too long"),
            (b"PROXY TCP4 192.0.2.1 1 2\r\n", "malformed PROXY v1 header"),
            (
                b"PROXY TCP4 2001:db8::1 198.51.100.2 1 2\r\n",
                "PROXY v1 address family mismatch",
            ),
            (
                b"PROXY TCP4 192.0.2.1 192.0.2.2 1 65536\r\n",
                "malformed PROXY v1 header: bad port b'65536'",
            ),
            (
                V2_SIGNATURE + b"\x31\x11\x00\x0c" + bytes(12),
                "unsupported PROXY v2 version or command",
            ),
            (V2_SIGNATURE + b"\x21\x11\xff\xff", "PROXY v2 header too long"),
            (
                V2_SIGNATURE + b"\x21\x51\x00\x00",
                "unsupported PROXY v2 address family",
            ),
        ):
            self.assertRefused(data, why)

    def test_the_highest_port_is_allowed(self) -> None:
        header = b"PROXY TCP4 192.0.2.1 192.0.2.2 65535 65535\r\n"
        source, _, _ = parse_proxy_header(header) or (None,) * 3
        self.assertEqual(source, IPv4Address("TCP", "192.0.2.1", 65535))

    def test_a_v1_header_of_the_longest_length(self) -> None:
        """107 bytes, CRLF included, is the longest v1 header there is."""
        header = b"PROXY TCP4 192.0.2.1 192.0.2.2 1 2" + b" " * 71 + b"\r\n"
        self.assertEqual(len(header), 107)
        self.assertRaises(ProxyHeaderError, parse_proxy_header, header)
        self.assertIsNone(parse_proxy_header(header[:106]))
        self.assertRefused(header[:106] + b"x", "PROXY v1 header too long")

    def test_v2_high_ports_and_ipv6_destination(self) -> None:
        header = v2("2001:db8::1", "2001:db8::2", (65535, 40000))
        source, destination, _ = parse_proxy_header(header) or (None,) * 3
        self.assertEqual(source, IPv6Address("TCP", "2001:db8::1", 65535))
        self.assertEqual(destination, IPv6Address("TCP", "2001:db8::2", 40000))


class RecordingEndpoint:
    def __init__(self) -> None:
        self.factories: List[Any] = []

    def listen(self, factory: Any) -> Any:
        self.factories.append(factory)
        return "listening"


class EndpointTests(SynchronousTestCase):
    def test_listen_wraps_the_factory_with_the_settings(self) -> None:
        wrapped = RecordingEndpoint()
        clock = Clock()
        inner = IncrementFactory(clock=clock)
        endpoint = ProxyEndpoint(wrapped, clock, headerTimeout=3.0, maxPending=7)
        self.assertEqual(endpoint.listen(inner), "listening")
        [factory] = wrapped.factories
        self.assertIsInstance(factory, ProxyFactory)
        self.assertIs(factory.wrappedFactory, inner)
        self.assertEqual(
            (factory.clock, factory.headerTimeout, factory.maxPending),
            (clock, 3.0, 7),
        )


def v2_raw(command: int, family: int, body: bytes) -> bytes:
    """A PROXY v2 header with any version/command and family bytes."""
    return V2_SIGNATURE + struct.pack("!BBH", command, family, len(body)) + body


class LengthBoundaryTests(SynchronousTestCase):
    """Where a header's length decides, on both sides of the boundary."""

    def test_a_v1_crlf_beyond_the_longest_header_is_not_looked_for(self) -> None:
        data = b"PROXY TCP4 192.0.2.1 192.0.2.2 1 2" + b" " * 80 + b"\r\n"
        error = self.assertRaises(ProxyHeaderError, parse_proxy_header, data)
        self.assertEqual(str(error), "PROXY v1 header too long")

    def test_v1_ends_at_the_first_crlf(self) -> None:
        parsed = parse_proxy_header(V1 + b"^a\r\n")
        self.assertEqual(parsed and parsed.length, len(V1))

    def test_v2_of_the_greatest_length(self) -> None:
        header = v2_raw(0x20, 0x00, bytes(4096))
        self.assertEqual(parse_proxy_header(header), (None, None, 16 + 4096))
        self.assertRaises(
            ProxyHeaderError, parse_proxy_header, v2_raw(0x20, 0x00, bytes(4097))
        )

    def test_v2_unknown_command(self) -> None:
        body = bytes(12)
        for command in (0x22, 0x2F):
            error = self.assertRaises(
                ProxyHeaderError, parse_proxy_header, v2_raw(command, 0x11, body)
            )
            self.assertEqual(str(error), "unsupported PROXY v2 version or command")

    def test_v2_local_ignores_its_addresses(self) -> None:
        header = v2("192.0.2.1", "192.0.2.2")
        local = header[:12] + b"\x20" + header[13:]
        self.assertEqual(parse_proxy_header(local), (None, None, 28))

    def test_v2_tcp4_high_ports_and_tlvs(self) -> None:
        header = v2("192.0.2.1", "192.0.2.2", (40000, 65535))
        header = header[:14] + struct.pack("!H", 12 + 3) + header[16:] + b"\x04\x00\x00"
        self.assertEqual(
            parse_proxy_header(header),
            (IPv4Address("TCP", "192.0.2.1", 40000),
             IPv4Address("TCP", "192.0.2.2", 65535), 31),
        )  # fmt: skip

    def test_v2_addresses_too_short_for_their_family(self) -> None:
        for family, length in ((0x11, 11), (0x21, 35), (0x31, 215)):
            error = self.assertRaises(
                ProxyHeaderError,
                parse_proxy_header,
                v2_raw(0x21, family, bytes(length)),
            )
            self.assertEqual(str(error), "unsupported PROXY v2 address family")

    def test_v2_unspec_of_any_length_or_protocol(self) -> None:
        for family in (0x00, 0x01, 0x02):
            self.assertEqual(
                parse_proxy_header(v2_raw(0x21, family, bytes(216))),
                (None, None, 232),
            )

    def test_v2_unix_paths_of_the_greatest_length(self) -> None:
        source, destination = b"/" + b"s" * 107, b"/" + b"d" * 107
        header = v2_raw(0x21, 0x31, source + destination + b"\x04\x00\x00")
        self.assertEqual(
            parse_proxy_header(header),
            (UNIXAddress(source), UNIXAddress(destination), 16 + 219),
        )


class RefusalTests(SynchronousTestCase):
    """Refusals are counted and logged with the peer and the reason."""

    def setUp(self) -> None:
        self.events: List[Dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        self.clock = Clock()
        self.factory = ProxyFactory(
            IncrementFactory(clock=self.clock), self.clock, 5.0, maxPending=1
        )

    def connect(self) -> Tuple[ProxyProtocol, HalfCloseableTransport]:
        address = IPv4Address("TCP", "127.0.0.1", 1)
        protocol = self.factory.buildProtocol(address)
        transport = HalfCloseableTransport(
            peerAddress=IPv4Address("TCP", "203.0.113.9", 4567)
        )
        protocol.makeConnection(transport)
        return protocol, transport

    def logged(self) -> List[str]:
        return [formatEvent(e) for e in self.events if "log_format" in e]

    def test_a_bad_header_is_logged_with_its_reason(self) -> None:
        protocol, _ = self.connect()
        protocol.dataReceived(b"GET / HTTP/1.1\r\n")
        self.assertEqual(self.logged(), ["closing 203.0.113.9:4567: no PROXY header"])

    def test_a_missing_header_is_logged(self) -> None:
        self.connect()
        self.clock.advance(5.0)
        self.assertEqual(
            self.logged(), ["closing 203.0.113.9:4567: no PROXY header in time"]
        )

    def test_too_many_waiting_is_logged(self) -> None:
        self.connect()
        self.connect()
        self.assertEqual(
            self.logged(),
            [
                "closing 203.0.113.9:4567: too many connections waiting for a "
                "PROXY header"
            ],
        )

    def test_the_summary_says_how_many_were_not_logged(self) -> None:
        self.factory.headerTimeout = 60.0
        for _ in range(4):
            self.connect()
        self.clock.advance(10.0)
        self.assertEqual(
            self.logged()[1:],
            ["2 more connections closed for their PROXY header in the last 10.0s"],
        )
        self.assertEqual(self.factory.refused, 3)

    def test_input_after_a_refusal_is_discarded(self) -> None:
        built: List[Any] = []
        self.factory.wrappedFactory.buildProtocol = (  # type: ignore[method-assign]
            lambda addr: built.append(addr)
        )
        protocol, transport = self.connect()
        protocol.dataReceived(b"^abc$")
        protocol.dataReceived(b"junk")
        protocol.dataReceived(V1)
        self.assertEqual((built, transport.value(), self.factory.refused), ([], b"", 1))

    def test_stop_cancels_the_summary(self) -> None:
        for _ in range(3):
            self.connect()
        self.factory.doStart()
        self.factory.doStop()
        self.clock.advance(10.0)
        self.assertEqual([line for line in self.logged() if "more" in line], [])


class PassThroughTests(SynchronousTestCase):
    def connect(self, factory: Any) -> Tuple[ProxyProtocol, HalfCloseableTransport]:
        clock = Clock()
        protocol = ProxyFactory(factory, clock, 5.0).buildProtocol(
            IPv4Address("TCP", "127.0.0.1", 1)
        )
        transport = HalfCloseableTransport(
            peerAddress=IPv4Address("TCP", "127.0.0.1", 1)
        )
        protocol.makeConnection(transport)
        return protocol, transport

    def test_data_after_the_header_passes_through(self) -> None:
        protocol, transport = self.connect(IncrementFactory(clock=Clock()))
        protocol.dataReceived(V1)
        protocol.dataReceived(b"^abc$")
        self.assertEqual(transport.value(), b"*bcd")

    def test_the_wrapped_factory_is_asked_with_the_client_address(self) -> None:
        asked: List[Any] = []
        inner = IncrementFactory(clock=Clock())
        build = inner.buildProtocol
        inner.buildProtocol = lambda addr: (asked.append(addr), build(addr))[1]  # type: ignore[method-assign]
        protocol, _ = self.connect(inner)
        protocol.dataReceived(V1)
        self.assertEqual(asked, [IPv4Address("TCP", "192.0.2.1", 56324)])

    def test_the_loss_reaches_the_wrapped_protocol(self) -> None:
        inner = IncrementFactory(clock=Clock())
        protocol, _ = self.connect(inner)
        protocol.dataReceived(V1)
        protocol.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(inner.closedBy, {CONNECTION_LOST: 1})

    def test_end_of_input_after_the_header_is_the_wrapped_protocols(self) -> None:
        """The wrapped protocol decides: with work in its pool, it waits."""
        pool = ManualPool()
        inner = IncrementFactory(clock=Clock(), pool=pool)
        protocol, transport = self.connect(inner)
        protocol.dataReceived(V1 + b"^ab")
        protocol.readConnectionLost()
        self.assertFalse(transport.disconnecting)
        pool.finish()
        self.assertEqual(transport.value(), b"*bc")
        self.assertTrue(transport.disconnecting)

    def test_the_global_reactor_by_default(self) -> None:
        from twisted.internet import reactor

        self.assertIs(ProxyFactory(IncrementFactory(clock=Clock())).clock, reactor)


class DescriptionTests(SynchronousTestCase):
    def test_from_haproxy(self) -> None:
        self.assertEqual(from_haproxy("haproxy:tcp:9090"), "proxy:tcp:9090")
        for description in ("tcp:9090", "haproxy", "xhaproxy:tcp:1", "proxy:tcp:1"):
            self.assertEqual(from_haproxy(description), description)

    def test_split_proxy(self) -> None:
        self.assertEqual(split_proxy("proxy:tcp:9090"), (True, "tcp:9090"))
        for description in ("tcp:9090", "proxy", "haproxy:tcp:1", "unix:/a:proxy"):
            self.assertEqual(split_proxy(description), (False, description))

    def test_proxy_alone_is_a_clear_error(self) -> None:
        """C{proxy:} with nothing after it names the fix (the plugin's own
        lookup is tested by test_twistd and test_packaging)."""
        for args in [(), ("",)]:
            with self.assertRaisesRegex(ValueError, "proxy: needs an endpoint after"):
                ProxyEndpointParser().parseStreamServer(MemoryReactor(), *args)

    def test_the_endpoint_parser_wraps_the_endpoint_described(self) -> None:
        reactor = MemoryReactor()
        endpoint = ProxyEndpointParser().parseStreamServer(
            reactor, "tcp", "9090", interface="::1", backlog="7"
        )
        inner = endpoint.wrappedEndpoint
        self.assertIsInstance(inner, TCP4ServerEndpoint)
        self.assertEqual(
            (inner._port, inner._interface, inner._backlog),  # type: ignore[attr-defined]
            (9090, "::1", 7),
        )
        self.assertIs(endpoint.clock, reactor)
        endpoint.listen(IncrementFactory(clock=reactor))  # on the reactor given
        [(port, factory, backlog, interface)] = reactor.tcpServers
        self.assertEqual((port, backlog, interface), (9090, 7, "::1"))
        self.assertIsInstance(factory, ProxyFactory)
        unix = ProxyEndpointParser().parseStreamServer(reactor, "unix", "/run/a:b")
        self.assertEqual(unix.wrappedEndpoint._address, "/run/a:b")  # type: ignore[attr-defined]


class ParserTLSTests(SynchronousTestCase):
    """Under C{proxy:ssl:}, the PROXY header comes before TLS."""

    def test_proxy_ssl_listens_on_tcp_with_tls_inside_the_proxy(self) -> None:
        from twisted.protocols.tls import TLSMemoryBIOFactory

        directory = Path(tempfile.mkdtemp())  # not trial's mktemp: under
        self.addCleanup(shutil.rmtree, directory)  # pytest it writes to cwd
        key, certificate = make_certificate(directory)
        reactor = MemoryReactor()
        endpoint = ProxyEndpointParser().parseStreamServer(
            reactor,
            "ssl",
            "9443",
            interface="127.0.0.1",
            backlog="7",
            privateKey=str(key),
            certKey=str(certificate),
        )
        endpoint.maxPending = 3  # as incproto.serving.stack sets it, before listening
        inner = IncrementFactory(clock=reactor)
        endpoint.listen(inner)
        self.assertEqual(reactor.sslServers, [])
        [(port, factory, backlog, interface)] = reactor.tcpServers
        self.assertEqual((port, backlog, interface), (9443, 7, "127.0.0.1"))
        self.assertIsInstance(factory, ProxyFactory)
        self.assertEqual(
            (factory.clock, factory.headerTimeout, factory.maxPending),
            (reactor, 30.0, 3),
        )
        tls = factory.wrappedFactory
        self.assertIsInstance(tls, TLSMemoryBIOFactory)
        self.assertIs(tls.wrappedFactory, inner)

    def test_other_factories_and_endpoints_are_unchanged(self) -> None:
        from twisted.internet.ssl import CertificateOptions
        from twisted.protocols.tls import TLSMemoryBIOFactory

        reactor = MemoryReactor()
        shim = TLSAfterProxyReactor(reactor)
        inner = IncrementFactory(clock=reactor)
        shim.listenSSL(9443, inner, "context", 7, "::1")
        self.assertEqual(reactor.sslServers, [(9443, inner, "context", 7, "::1")])
        self.assertIs(shim.tcpServers, reactor.tcpServers)  # the rest is its own
        plain = with_tls(inner, CertificateOptions())
        self.assertIsInstance(plain, TLSMemoryBIOFactory)
        self.assertIs(plain.wrappedFactory, inner)  # type: ignore[attr-defined]

    def test_listen_ssl_defaults_are_twisteds(self) -> None:
        """Called without backlog and interface, as reactor.listenSSL may
        be: Twisted's defaults, 50 and all interfaces."""
        from twisted.internet.ssl import CertificateOptions

        reactor = MemoryReactor()
        shim = TLSAfterProxyReactor(reactor)
        factory = ProxyFactory(IncrementFactory(clock=reactor), Clock())
        shim.listenSSL(9443, factory, CertificateOptions())
        [(port, _, backlog, interface)] = reactor.tcpServers
        self.assertEqual((port, backlog, interface), (9443, 50, ""))
