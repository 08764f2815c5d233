# -*- test-case-name: tests.unit.test_proxy_trust -*-
"""Who may send a PROXY header: L{TrustedSources}, the networks a header is
believed from (C{trusted=} of a C{proxy:} port, C{--proxy-trusted}).

A PROXY header says who the client is, and anyone who can reach the port
can write one.  As HAProxy and nginx (C{set_real_ip_from}) do, a header is
believed only from listed sources; by default the loopback and private
networks, where a balancer usually is.  A connection from anywhere else
is closed before its header is read.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Iterable, Tuple, Union

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

# Loopback, and the private networks of RFC 1918 and RFC 4193.
DEFAULT_TRUSTED = "127.0.0.0/8,::1,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,fc00::/7"


class TrustedSources:
    """
    The networks a PROXY header is believed from.  UNIX socket peers are
    always trusted (the socket file's permissions say who may connect).

    @ivar networks: the networks.
    """

    def __init__(self, networks: Iterable[Network]) -> None:
        self.networks: Tuple[Network, ...] = tuple(networks)

    @classmethod
    def parse(cls, text: str) -> TrustedSources:
        """
        Sources from a comma-separated list of addresses and networks
        (C{10.0.0.0/8,127.0.0.1,::1}).

        @raise ValueError: naming the entry that is no address or network.
        """
        networks = []
        for entry in text.split(","):
            entry = entry.strip()
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                raise ValueError(
                    f"{entry!r} is not an address or network (as in "
                    "10.0.0.0/8,127.0.0.1)"
                ) from None
        return cls(networks)

    def trusts(self, address: Any) -> bool:
        """Whether a header from a peer at C{address} is believed."""
        if isinstance(address, UNIXAddress):
            return True
        if not isinstance(address, (IPv4Address, IPv6Address)):
            return False
        try:
            ip = ipaddress.ip_address(address.host.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in network for network in self.networks)

    def __str__(self) -> str:
        return ",".join(str(network) for network in self.networks)

    def __repr__(self) -> str:
        return f"TrustedSources.parse({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TrustedSources) and self.networks == other.networks

    def __hash__(self) -> int:
        return hash(self.networks)


DEFAULT = TrustedSources.parse(DEFAULT_TRUSTED)
