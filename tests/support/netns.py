"""Test helpers for a real, impaired network: a network namespace of the
test's own, with packet loss (and, where the kernel has netem, delay and
reordering) on its loopback, and sockets created inside it."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import uuid
from typing import Callable, List, Optional, Tuple, TypeVar

T = TypeVar("T")
CLONE_NEWNET = 0x40000000
NETEM = "delay 40ms 10ms loss 1% reorder 25% 50%"


def _run(*argv: str) -> Tuple[int, str]:
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return 1, str(e)
    return done.returncode, (done.stderr or done.stdout).strip()


class Namespace:
    """
    A network namespace named C{incproto-test-...}, its loopback up and
    impaired; L{delete} removes it.

    @ivar impairment: what was applied to its loopback, in words.
    """

    def __init__(self, name: str, impairment: str) -> None:
        self.name = name
        self.impairment = impairment

    @property
    def exec_prefix(self) -> List[str]:
        """Prefix a command with this to run it inside the namespace."""
        return ["ip", "netns", "exec", self.name]

    def call(self, function: Callable[[], T]) -> T:
        """Run C{function} in a thread that has joined the namespace; its
        sockets are the namespace's."""
        result: List[T] = []
        errors: List[BaseException] = []

        def run() -> None:
            try:
                _join(self.name)
                result.append(function())
            except BaseException as e:
                errors.append(e)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        thread.join(60)
        if errors:
            raise errors[0]
        assert result, "the namespace thread did not finish"
        return result[0]

    def connect(self, port: int, timeout: float = 30.0) -> socket.socket:
        """A TCP connection to 127.0.0.1:C{port} of the namespace."""
        return self.call(lambda: socket.create_connection(("127.0.0.1", port), timeout))

    def packets(self) -> Tuple[int, int]:
        """Packets sent on the loopback, and dropped, so far."""
        if self.impairment.startswith("netem"):
            _, text = _run(*self.exec_prefix, "tc", "-s", "qdisc", "show", "dev", "lo")
            sent = re.search(r"Sent \d+ bytes (\d+) pkt \(dropped (\d+)", text)
            return (int(sent[1]), int(sent[2])) if sent else (0, 0)
        _, text = _run(*self.exec_prefix, "nft", "list", "ruleset")
        counts = [int(n) for n in re.findall(r"counter packets (\d+)", text)]
        return (counts[0], counts[1]) if len(counts) == 2 else (0, 0)

    def delete(self) -> None:
        _run("ip", "netns", "del", self.name)


def _join(name: str) -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {name} failed")
    finally:
        os.close(fd)


def impaired_namespace() -> Tuple[Optional[Namespace], str]:
    """
    Create a namespace and impair its loopback: netem (40 ms +- 10 ms
    delay, 1% loss, reordering) where the kernel has it, else 1% random
    loss with nftables.

    @return: the namespace, or C{None} and why it cannot be had here.
    """
    if os.geteuid() != 0:
        return None, "network namespaces need root"
    if not shutil.which("ip"):
        return None, "needs iproute2 (ip)"
    name = f"incproto-test-{uuid.uuid4().hex[:8]}"
    status, error = _run("ip", "netns", "add", name)
    if status:
        return None, f"cannot create a network namespace: {error}"
    namespace = Namespace(name, "")
    # A real network's MTU, not loopback's 64 KiB: more, smaller packets,
    # so that loss and reordering hit every stream many times.
    # (GSO off, or netfilter would see 64 KiB super-packets.)
    status, error = _run(
        "ip", "-n", name, "link", "set", "lo",
        "mtu", "1500", "gso_max_size", "1500", "gso_max_segs", "1", "up",
    )  # fmt: skip
    if status:
        namespace.delete()
        return None, f"cannot bring up the namespace's loopback: {error}"
    status, netem = _run(
        *namespace.exec_prefix, "tc", "qdisc", "add", "dev", "lo", "root",
        "netem", *NETEM.split(),
    )  # fmt: skip
    if status == 0:
        namespace.impairment = f"netem {NETEM}"
        return namespace, ""
    # No netem (CONFIG_NET_SCH_NETEM unset, or no module): loss alone,
    # dropped at random by nftables on the way out of lo.
    rules = """table inet impair {
    chain out {
        type filter hook output priority 0; policy accept;
        oifname "lo" counter numgen random mod 100 < 1 counter drop
    }
}
"""
    status, nft = 1, "no nft"
    if shutil.which("nft"):
        with tempfile.NamedTemporaryFile("w", suffix=".nft") as ruleset:
            ruleset.write(rules)
            ruleset.flush()
            status, nft = _run(*namespace.exec_prefix, "nft", "-f", ruleset.name)
    if status == 0:
        namespace.impairment = (
            f"1% loss by nftables (no netem here: {netem}; so no delay or reordering)"
        )
        return namespace, ""
    namespace.delete()
    return None, f"cannot impair the loopback: netem: {netem}; nftables: {nft}"
