# -*- test-case-name: tests.unit.test_proxy,tests.integration.test_proxy -*-
"""PROXY protocol headers, v1 (text) and v2 (binary): L{parse_proxy_header},
pure bytes in, a L{ProxyHeader} out."""

from __future__ import annotations

import ipaddress
import struct
from typing import NamedTuple, Optional, Union

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress

V1_PREFIX = b"PROXY "
V1_MAX_LENGTH = 107  # the longest v1 header, CRLF included
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_MAX_LENGTH = 16 + 4096  # more address/TLV data than any proxy sends

Address = Union[IPv4Address, IPv6Address, UNIXAddress]


class ProxyHeader(NamedTuple):
    """
    A parsed PROXY header.

    @ivar source: the client's address, or C{None} where the connection's
        own peer address stands (v1 C{UNKNOWN}, v2 C{LOCAL} or an
        unspecified family).
    @ivar destination: the address the client connected to, or C{None}
        likewise.
    @ivar length: the header's length in bytes; the client's data follows.
    """

    source: Optional[Address]
    destination: Optional[Address]
    length: int


class ProxyHeaderError(ValueError):
    """
    The connection did not start with a valid PROXY header.
    """


def parse_proxy_header(
    data: bytes,
) -> Optional[ProxyHeader]:
    """
    Parse the PROXY header (v1 or v2) at the start of C{data}.

    @return: C{None} if more bytes are needed, else the header.
    @raise ProxyHeaderError: if C{data} cannot start a valid header.
    """
    if data[:12] == V2_SIGNATURE[: len(data)] and len(data) < 16:
        return None
    if data.startswith(V2_SIGNATURE):
        return _parse_v2(data)
    if V1_PREFIX.startswith(data[:6]) and len(data) < 6:
        return None
    if data.startswith(V1_PREFIX):
        return _parse_v1(data)
    raise ProxyHeaderError("no PROXY header")


def _parse_v1(
    data: bytes,
) -> Optional[ProxyHeader]:
    end = data.find(b"\r\n", 0, V1_MAX_LENGTH)
    if end < 0:
        if len(data) >= V1_MAX_LENGTH:
            raise ProxyHeaderError("PROXY v1 header too long")
        return None
    fields = data[:end].split(b" ")
    if fields[1:2] == [b"UNKNOWN"]:
        return ProxyHeader(None, None, end + 2)
    if len(fields) != 6 or fields[1] not in (b"TCP4", b"TCP6"):
        raise ProxyHeaderError("malformed PROXY v1 header")
    family = IPv4Address if fields[1] == b"TCP4" else IPv6Address
    try:
        source_ip, destination_ip = (
            ipaddress.ip_address(field.decode("ascii")) for field in fields[2:4]
        )
        source_port, destination_port = (_port(field) for field in fields[4:6])
    except ValueError as e:
        raise ProxyHeaderError(f"malformed PROXY v1 header: {e}") from None
    if {source_ip.version, destination_ip.version} != {
        4 if family is IPv4Address else 6
    }:
        raise ProxyHeaderError("PROXY v1 address family mismatch")
    return ProxyHeader(
        family("TCP", str(source_ip), source_port),
        family("TCP", str(destination_ip), destination_port),
        end + 2,
    )


def _port(field: bytes) -> int:
    if not field.isdigit() or int(field) > 65535:
        raise ValueError(f"bad port {field!r}")
    return int(field)


def _parse_v2(
    data: bytes,
) -> Optional[ProxyHeader]:
    version_command, family_protocol, length = struct.unpack("!BBH", data[12:16])
    total = 16 + length
    if version_command >> 4 != 2 or version_command & 0x0F not in (0, 1):
        raise ProxyHeaderError("unsupported PROXY v2 version or command")
    if total > V2_MAX_LENGTH:
        raise ProxyHeaderError("PROXY v2 header too long")
    if len(data) < total:
        return None
    body = data[16:total]
    if version_command & 0x0F == 0:  # LOCAL: the proxy's own connection
        return ProxyHeader(None, None, total)
    if family_protocol == 0x11 and length >= 12:  # TCP over IPv4
        src, dst, sport, dport = struct.unpack("!4s4sHH", body[:12])
        return ProxyHeader(
            IPv4Address("TCP", str(ipaddress.IPv4Address(src)), sport),
            IPv4Address("TCP", str(ipaddress.IPv4Address(dst)), dport),
            total,
        )
    if family_protocol == 0x21 and length >= 36:  # TCP over IPv6
        src, dst, sport, dport = struct.unpack("!16s16sHH", body[:36])
        return ProxyHeader(
            IPv6Address("TCP", str(ipaddress.IPv6Address(src)), sport),
            IPv6Address("TCP", str(ipaddress.IPv6Address(dst)), dport),
            total,
        )
    if family_protocol == 0x31 and length >= 216:  # UNIX stream
        src, dst = (raw.split(b"\0", 1)[0] for raw in (body[:108], body[108:216]))
        return ProxyHeader(UNIXAddress(src), UNIXAddress(dst), total)
    if family_protocol >> 4 == 0:  # UNSPEC: keep the connection's addresses
        return ProxyHeader(None, None, total)
    raise ProxyHeaderError("unsupported PROXY v2 address family")
