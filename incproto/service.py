# -*- test-case-name: tests.test_service -*-
"""A listening service that fails loudly: it never runs on with no listener.

Twisted's C{StreamServerEndpointService} only logs a listen failure and lets
the process run on without a listener; C{strports.service} raises the bare
error, which twistd prints as a traceback.  L{ListeningService} raises
L{ListenError}, which twistd and twist turn into a one-line message and
exit status 1.
"""

from __future__ import annotations

from typing import List, Optional

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import (
    IListeningPort,
    IProtocolFactory,
    IStreamServerEndpoint,
)
from twisted.logger import Logger
from twisted.python.failure import Failure


class ListenError(SystemExit, Exception):
    """
    The service could not listen on its endpoint.

    It is a C{SystemExit}, so that C{twistd} and C{twist} print its one-line
    message without a traceback and exit with status 1, and an C{Exception},
    so that twistd still removes its pid file and reports the message to the
    parent when daemonizing.
    """


class ListeningService(Service):
    """
    Listen on an endpoint with a factory while the service runs.

    @ivar endpoint: where to listen.
    @ivar factory: the protocol factory for accepted connections.
    @ivar description: how the endpoint is named in messages.
    @ivar port: the listening port, once listening.
    """

    log = Logger()

    def __init__(
        self,
        endpoint: IStreamServerEndpoint,
        factory: IProtocolFactory,
        description: str,
    ) -> None:
        self.endpoint = endpoint
        self.factory = factory
        self.description = description
        self.port: Optional[IListeningPort] = None
        self._listening: Optional[Deferred[IListeningPort]] = None

    def privilegedStartService(self) -> None:
        """
        Start listening (before twistd drops privileges).

        @raise ListenError: if the endpoint failed to listen at once, as
            every endpoint Twisted ships does on failure.
        """
        super().privilegedStartService()
        failures: List[Failure] = []
        returned = False

        def failed(failure: Failure) -> None:
            if failure.check(CancelledError):
                return  # stopService gave up on a listen still in progress
            if returned:
                self.log.failure(
                    "incproto: cannot listen on {description}",
                    failure,
                    description=self.description,
                )
            else:
                failures.append(failure)

        self._listening = self.endpoint.listen(self.factory)
        self._listening.addCallbacks(self._listened, failed)
        returned = True
        if failures:
            reason = failures[0].getErrorMessage()
            raise ListenError(
                f"incproto: cannot listen on {self.description}: {reason}"
            )

    def startService(self) -> None:
        """
        Start the service, listening first if C{privilegedStartService} was
        not called (C{twist} calls only this).
        """
        if self._listening is None:
            self.privilegedStartService()
        super().startService()

    def stopService(self) -> Optional[Deferred[None]]:
        """
        Stop listening; connections already accepted are left alone.
        """
        super().stopService()
        listening, self._listening = self._listening, None
        port, self.port = self.port, None
        if port is not None:
            return port.stopListening()
        if listening is not None:
            listening.cancel()
        return None

    def _listened(self, port: IListeningPort) -> IListeningPort:
        self.port = port
        self.log.info(
            "incproto listening on {address}",
            address=port.getHost(),
            description=self.description,
        )
        return port
