# -*- test-case-name: tests.unit.test_sdnotify,tests.integration.test_sdnotify -*-
"""systemd's C{Type=notify} protocol, without a dependency: C{READY=1} once
listening, C{STOPPING=1} when the stop begins, and C{WATCHDOG=1} from the
reactor every half of C{WatchdogSec=}, so that PID 1 restarts a process
whose reactor no longer turns.

Each is one datagram to the C{AF_UNIX} socket named by C{$NOTIFY_SOCKET}
(a leading C{@} names the abstract namespace); with no such variable, as
outside systemd, nothing is sent.  See C{sd_notify(3)}.
"""

from __future__ import annotations

import os
import socket
from typing import Any, Callable, Mapping, Optional

from twisted.application.service import Service
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

# What a notifier's child process must not inherit: only the main process
# may notify (NotifyAccess=main), and the watchdog is the main process's.
NOTIFY_VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


def notify_address(environ: Mapping[str, str]) -> Optional[str]:
    """
    The address of the notification socket, C{$NOTIFY_SOCKET} with a
    leading C{@} turned into the NUL of an abstract address, or C{None}.
    """
    address = environ.get("NOTIFY_SOCKET", "")
    if not address:
        return None
    if address.startswith("@"):
        return "\0" + address[1:]
    return address


def watchdog_interval(environ: Mapping[str, str], pid: int) -> Optional[float]:
    """
    Seconds between C{WATCHDOG=1} pings: half of C{$WATCHDOG_USEC}, if set
    for this process (C{$WATCHDOG_PID}, if set, is C{pid}), else C{None}.
    """
    usec = environ.get("WATCHDOG_USEC", "")
    watched = environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if watched and watched != str(pid):
        return None
    return int(usec) / 2e6


def send(address: str, state: str, socketFactory: Callable[..., Any]) -> None:
    """Send C{state} (C{"READY=1"}) as one datagram to C{address}."""
    sock = socketFactory(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.sendto(state.encode("utf-8"), address)
    finally:
        sock.close()


class SystemdNotifier(Service):
    """
    Tell systemd the service's state: C{READY=1} when started (add it
    after the listener, which it follows), C{STOPPING=1} when stopped (it
    stops first), and C{WATCHDOG=1} from the reactor in between.  Without
    C{$NOTIFY_SOCKET}, it does nothing.

    @ivar address: where notifications go, or C{None}.
    @ivar interval: seconds between C{WATCHDOG=1}, or C{None}.
    """

    name = "systemd"
    log = Logger()

    def __init__(
        self,
        clock: Any,
        environ: Mapping[str, str] = os.environ,
        pid: Optional[int] = None,
        socketFactory: Callable[..., Any] = socket.socket,
    ) -> None:
        """
        @param clock: the reactor the pings come from.
        @param environ: where C{NOTIFY_SOCKET} and C{WATCHDOG_*} are read.
        @param pid: this process's id (C{WATCHDOG_PID} must match it).
        @param socketFactory: makes the datagram socket (a test's fake).
        """
        self.clock = clock
        self.address = notify_address(environ)
        self.interval = watchdog_interval(environ, os.getpid() if pid is None else pid)
        self.socketFactory = socketFactory
        self._loop: Optional[LoopingCall] = None

    def notify(self, state: str) -> None:
        """Send C{state}; a failure is logged, never raised."""
        if self.address is None:
            return
        try:
            send(self.address, state, self.socketFactory)
        except OSError as e:
            self.log.warn(
                "cannot notify systemd ({state}): {error}", state=state, error=e
            )

    def startService(self) -> None:
        """Ready; ping the watchdog from now on."""
        super().startService()
        self.notify("READY=1")
        if self.address is not None and self.interval is not None:
            self._loop = LoopingCall(self.notify, "WATCHDOG=1")
            self._loop.clock = self.clock
            self._loop.start(self.interval, now=True)

    def stopService(self) -> None:
        """Stopping: no more pings (systemd no longer watches)."""
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self.notify("STOPPING=1")
