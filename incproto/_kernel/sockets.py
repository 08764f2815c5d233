# -*- test-case-name: tests.unit.test_closing,tests.unit.test_limit -*-
"""What the kernel knows about a connection that Twisted does not say: how
many bytes the peer has yet to acknowledge, and whether the peer reset the
connection while it was not being read.
"""

from __future__ import annotations

import socket
import struct
from typing import Any, Optional

try:
    from fcntl import ioctl
    from termios import TIOCOUTQ  # the same request as SIOCOUTQ on sockets
except ImportError:  # not on POSIX
    ioctl = None  # type: ignore[assignment]

# Linux's TCP states (include/net/tcp_states.h), the first byte of TCP_INFO.
TCP_CLOSE = 7


def _socket_transport(transport: Any) -> Any:
    """The TCP or UNIX transport under C{transport} (TLS and PROXY layers
    keep it as their C{transport}), or C{None}."""
    while transport is not None and not hasattr(transport, "dataBuffer"):
        transport = getattr(transport, "transport", None)
    return transport


def unacknowledged(transport: Any) -> Optional[int]:
    """
    How many bytes written to C{transport} its peer has not acknowledged
    yet: those Twisted still buffers plus the kernel's send queue (on
    Linux).  A peer that reads makes this fall.

    @param transport: a TCP or UNIX transport, or one wrapping it (TLS,
        PROXY) as its C{transport} attribute.
    @return: the byte count, or C{None} for a transport with no socket.
    """
    transport = _socket_transport(transport)
    if transport is None:
        return None
    buffered = len(transport.dataBuffer) - transport.offset + transport._tempDataLen
    if ioctl is None:
        return int(buffered)
    try:
        queued = struct.unpack("i", ioctl(transport.fileno(), TIOCOUTQ, b"\0" * 4))[0]
    except (OSError, ValueError):
        queued = 0  # closed already, or not a socket
    return int(buffered + queued)


def reset_by_peer(transport: Any) -> bool:
    """
    Whether the peer reset the connection (Linux TCP only): the kernel
    knows it before a read does, which matters for a connection that is
    not being read.

    @param transport: a TCP transport, or one wrapping it.
    """
    transport = _socket_transport(transport)
    tcp_info = getattr(socket, "TCP_INFO", None)
    if transport is None or tcp_info is None:
        return False
    try:
        info = transport.getHandle().getsockopt(socket.IPPROTO_TCP, tcp_info, 1)
    except (OSError, AttributeError):
        return False
    return bool(info and info[0] == TCP_CLOSE)
