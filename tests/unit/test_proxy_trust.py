"""Tests for incproto.proxy._trust and the trusted= of a proxy: description,
and --proxy-trusted (issue 22)."""

from __future__ import annotations

import pytest
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.testing import MemoryReactor
from twisted.python import usage

from incproto.proxy import (
    DEFAULT_TRUSTED,
    ProxyEndpointParser,
    TrustedSources,
    trusted_in,
)
from incproto.tap import Options


def v4(host: str) -> IPv4Address:
    return IPv4Address("TCP", host, 1)


def test_networks_and_single_addresses() -> None:
    trusted = TrustedSources.parse("10.0.0.0/8, 127.0.0.1,2001:db8::/32")
    assert [trusted.trusts(v4(h)) for h in ("10.9.9.9", "127.0.0.1", "127.0.0.2")] == [
        True,
        True,
        False,
    ]
    assert trusted.trusts(IPv6Address("TCP", "2001:db8::7", 1))
    assert not trusted.trusts(IPv6Address("TCP", "2001:db9::7", 1))
    assert str(trusted) == "10.0.0.0/8,127.0.0.1/32,2001:db8::/32"


def test_ipv4_mapped_peers_count_as_ipv4() -> None:
    trusted = TrustedSources.parse("10.0.0.0/8")
    assert trusted.trusts(IPv6Address("TCP", "::ffff:10.1.2.3", 1))


def test_unix_peers_are_trusted_other_addresses_not() -> None:
    trusted = TrustedSources.parse("10.0.0.0/8")
    assert trusted.trusts(UNIXAddress(b"/run/x.sock"))
    assert not trusted.trusts(object())
    assert not trusted.trusts(v4("not-an-ip"))


def test_the_default_is_loopback_and_private_networks() -> None:
    default = TrustedSources.parse(DEFAULT_TRUSTED)
    trusted = ["127.0.0.1", "10.1.1.1", "172.31.0.1", "192.168.0.9"]
    assert all(default.trusts(v4(h)) for h in trusted)
    assert not any(default.trusts(v4(h)) for h in ["8.8.8.8", "172.32.0.1"])
    assert default.trusts(IPv6Address("TCP", "::1", 1))
    assert default.trusts(IPv6Address("TCP", "fd12::1", 1))
    assert not default.trusts(IPv6Address("TCP", "2001:db8::1", 1))


@pytest.mark.parametrize("text", ["", "10.0.0.0/33", "example.com", "10.0.0.1,,"])
def test_bad_entries_are_named(text: str) -> None:
    with pytest.raises(ValueError, match="is not an address or network"):
        TrustedSources.parse(text)


def test_the_parser_reads_trusted() -> None:
    endpoint = ProxyEndpointParser().parseStreamServer(
        MemoryReactor(), "tcp", "0", trusted="10.0.0.0/8,127.0.0.1"
    )
    assert endpoint.trusted == TrustedSources.parse("10.0.0.0/8,127.0.0.1")
    default = ProxyEndpointParser().parseStreamServer(MemoryReactor(), "tcp", "0")
    assert default.trusted is None  # the factory's default


def test_trusted_in_a_description_with_escaped_colons() -> None:
    found = trusted_in(r"proxy:tcp:0:trusted=fd00\:\:/8,127.0.0.1:backlog=5")
    assert found == TrustedSources.parse("fd00::/8,127.0.0.1")
    assert trusted_in("proxy:tcp:0") is None


def test_a_bad_trusted_is_a_one_line_usage_error() -> None:
    with pytest.raises(usage.UsageError) as raised:
        Options.parse(["--port", "proxy:tcp:0:trusted=10.0.0.0/99"])
    assert str(raised.value) == (
        "--port proxy:tcp:0:trusted=10.0.0.0/99: trusted=10.0.0.0/99: "
        "'10.0.0.0/99' is not an address or network (as in 10.0.0.0/8,127.0.0.1)"
    )


def test_proxy_trusted_option() -> None:
    options = Options.parse(["--port", "proxy:tcp:0", "--proxy-trusted", "10.0.0.0/8"])
    assert options.config.proxy_trusted == "10.0.0.0/8"
    with pytest.raises(
        usage.UsageError, match=r"needs a proxy: \(or haproxy:\) --port"
    ):
        Options.parse(["--port", "tcp:0", "--proxy-trusted", "10.0.0.0/8"])
    with pytest.raises(usage.UsageError, match="exclude each other"):
        Options.parse(
            ["--port", "proxy:tcp:0:trusted=::1", "--proxy-trusted", "10.0.0.0/8"]
        )
    with pytest.raises(usage.UsageError, match=r"^--proxy-trusted x: 'x' is not"):
        Options.parse(["--port", "proxy:tcp:0", "--proxy-trusted", "x"])


def test_handshake_timeout_option() -> None:
    assert Options.parse([]).config.handshake_timeout == 10.0
    options = Options.parse(["--handshake-timeout", "2.5"])
    assert options.config.handshake_timeout == 2.5
    with pytest.raises(usage.UsageError, match="--handshake-timeout 0 is not"):
        Options.parse(["--handshake-timeout", "0"])
