"""Tests for incproto._kernel.wrapping: the pass-through every wrapper shares, on its
own (ConnectionLimit and the PROXY wrapper test it in their settings)."""

from __future__ import annotations

from typing import Any, List, Optional

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IHalfCloseableProtocol, IProtocolFactory
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from incproto._kernel.wrapping import FactoryWrapper, PassThrough
from tests.support.fakes import HalfCloseableTransport

ADDRESS = IPv4Address("TCP", "10.0.0.3", 40000)


class Recorder(Protocol):
    """A protocol that records the events it gets, without half-close."""

    def __init__(self) -> None:
        self.events: List[Any] = []

    def connectionMade(self) -> None:
        self.events.append("connectionMade")

    def dataReceived(self, data: bytes) -> None:
        self.events.append(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.events.append(reason)

    def logPrefix(self) -> str:
        return "recorder 10.0.0.3"


@implementer(IHalfCloseableProtocol)
class HalfCloseableRecorder(Recorder):
    def readConnectionLost(self) -> None:
        self.events.append("readConnectionLost")

    def writeConnectionLost(self) -> None:
        self.events.append("writeConnectionLost")


class RecordingFactory(Factory):
    """Builds C{protocol}s and remembers the addresses it was asked for."""

    def __init__(self, protocol: type = HalfCloseableRecorder) -> None:
        self.protocol = protocol
        self.addresses: List[Any] = []

    def buildProtocol(self, addr: Any) -> Optional[Protocol]:
        self.addresses.append(addr)
        return super().buildProtocol(addr)


@implementer(IProtocolFactory)
class BareFactory:
    """An IProtocolFactory with neither C{protocol} nor C{logPrefix}."""

    def buildProtocol(self, addr: Any) -> None:
        return None

    def doStart(self) -> None:
        pass

    def doStop(self) -> None:
        pass


class PassThroughTests(SynchronousTestCase):
    def connect(
        self, protocol: type = HalfCloseableRecorder
    ) -> tuple[PassThrough, HalfCloseableTransport, RecordingFactory]:
        factory = RecordingFactory(protocol)
        wrapper = PassThrough(factory)
        transport = HalfCloseableTransport()
        wrapper.makeConnection(transport)
        return wrapper, transport, factory

    def wrapped(self, wrapper: PassThrough) -> Recorder:
        assert isinstance(wrapper.wrapped, Recorder)
        return wrapper.wrapped

    def test_nothing_reaches_a_protocol_not_started(self) -> None:
        wrapper, transport, factory = self.connect()
        wrapper.dataReceived(b"early")
        wrapper.writeConnectionLost()
        wrapper.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(factory.addresses, [])
        self.assertFalse(transport.disconnecting)

    def test_started_protocol_gets_the_address_and_the_real_transport(self) -> None:
        wrapper, transport, factory = self.connect()
        self.assertTrue(wrapper.startWrapped(ADDRESS, transport))
        self.assertEqual(factory.addresses, [ADDRESS])
        self.assertIs(self.wrapped(wrapper).transport, transport)
        self.assertEqual(self.wrapped(wrapper).events, ["connectionMade"])

    def test_bytes_read_before_the_start_are_delivered_after_it(self) -> None:
        wrapper, transport, _ = self.connect()
        wrapper.startWrapped(ADDRESS, transport, b"^ab")
        wrapper.dataReceived(b"c$")
        self.assertEqual(
            self.wrapped(wrapper).events, ["connectionMade", b"^ab", b"c$"]
        )

    def test_a_refusing_factory_starts_nothing(self) -> None:
        wrapper = PassThrough(BareFactory())
        transport = HalfCloseableTransport()
        wrapper.makeConnection(transport)
        self.assertFalse(wrapper.startWrapped(ADDRESS, transport, b"^a$"))
        self.assertIsNone(wrapper.wrapped)

    def test_half_close_is_forwarded(self) -> None:
        """
        The client's end of input and the end of the server's output reach
        a half-closeable wrapped protocol, which decides when to close.
        """
        wrapper, transport, _ = self.connect()
        wrapper.startWrapped(ADDRESS, transport)
        wrapper.readConnectionLost()
        wrapper.writeConnectionLost()
        self.assertEqual(
            self.wrapped(wrapper).events,
            ["connectionMade", "readConnectionLost", "writeConnectionLost"],
        )
        self.assertFalse(transport.disconnecting)

    def test_end_of_input_closes_for_a_protocol_without_half_close(self) -> None:
        wrapper, transport, _ = self.connect(Recorder)
        wrapper.startWrapped(ADDRESS, transport)
        wrapper.readConnectionLost()
        wrapper.writeConnectionLost()
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.wrapped(wrapper).events, ["connectionMade"])

    def test_connection_lost_is_forwarded_once(self) -> None:
        wrapper, transport, _ = self.connect()
        wrapper.startWrapped(ADDRESS, transport)
        recorder = self.wrapped(wrapper)
        reason = Failure(ConnectionLost())
        wrapper.connectionLost(reason)
        wrapper.connectionLost(reason)
        self.assertEqual(recorder.events, ["connectionMade", reason])
        self.assertIsNone(wrapper.wrapped)

    def test_log_prefix_is_the_wrapped_protocols_once_started(self) -> None:
        wrapper, transport, _ = self.connect()
        self.assertEqual(wrapper.logPrefix(), "HalfCloseableRecorder")
        wrapper.startWrapped(ADDRESS, transport)
        self.assertEqual(wrapper.logPrefix(), "recorder 10.0.0.3")

    def test_log_prefix_without_a_protocol_class(self) -> None:
        self.assertEqual(PassThrough(BareFactory()).logPrefix(), "PassThrough")


class NamedFactory(RecordingFactory):
    def logPrefix(self) -> str:
        return "named"


class FactoryWrapperTests(SynchronousTestCase):
    def test_log_prefix_is_the_wrapped_factorys(self) -> None:
        self.assertEqual(FactoryWrapper(NamedFactory()).logPrefix(), "named")

    def test_log_prefix_of_a_factory_without_one_is_its_class(self) -> None:
        self.assertEqual(FactoryWrapper(BareFactory()).logPrefix(), "BareFactory")

    def test_start_and_stop_reach_the_wrapped_factory(self) -> None:
        factory = RecordingFactory()
        wrapper = FactoryWrapper(factory)
        wrapper.doStart()
        self.assertEqual(factory.numPorts, 1)
        wrapper.doStop()
        self.assertEqual(factory.numPorts, 0)

    def test_building_is_for_subclasses(self) -> None:
        self.assertRaises(
            NotImplementedError, FactoryWrapper(RecordingFactory()).buildProtocol, None
        )
