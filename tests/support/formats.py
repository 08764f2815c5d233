"""What incproto puts on the wire, built or read by the tests the simple way:
the per-byte model of docs/protocol.md, PROXY v1/v2 headers, and the samples
of a Prometheus text scrape."""

from __future__ import annotations

import re
import socket
import struct
from typing import Dict, Tuple

from incproto.proxy import V2_SIGNATURE


def reference(stream: bytes) -> bytes:
    """docs/protocol.md's two-state machine, one byte at a time."""
    out = bytearray()
    in_message = False
    for byte in stream:
        if not in_message:
            in_message = byte == ord("^")
        elif byte == ord("$"):
            in_message = False
        else:
            out.append((byte + 1) % 256)
    return bytes(out)


V1 = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n"


def v2(source: str, destination: str, ports: Tuple[int, int] = (1000, 2000)) -> bytes:
    """A PROXY v2 PROXY-command header for TCP over IPv4 or IPv6."""
    family = socket.AF_INET6 if ":" in source else socket.AF_INET
    addresses = socket.inet_pton(family, source) + socket.inet_pton(family, destination)
    body = addresses + struct.pack("!HH", *ports)
    kind = 0x21 if family == socket.AF_INET6 else 0x11
    return V2_SIGNATURE + struct.pack("!BBH", 0x21, kind, len(body)) + body


SAMPLE = re.compile(r"^(\w+)(\{[^}]*\})? (\S+)$")


def metric_samples(text: str) -> Dict[str, float]:
    """The samples of a Prometheus text scrape, by name and labels."""
    samples = {}
    for line in text.splitlines():
        match = SAMPLE.match(line)
        if match:
            samples[match.group(1) + (match.group(2) or "")] = float(match.group(3))
    return samples
