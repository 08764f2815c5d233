"""A handler's faults over real sockets, for every runner (inline, threads,
processes) and every handler kind (function, class, instance): a reply of
C{str}, a reply of C{None} and an exception are each a counted C{handler
error}, the connection is closed after the greeting, the connection leaves
the open ones, no reply byte is counted as sent, and one log line names the
handler, with its own frames when it raised (issue 22)."""

from __future__ import annotations

from typing import Any, Dict, Generator, List, Tuple

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.logger import LogLevel, formatEvent, globalLogPublisher

from incproto import IncrementFactory
from incproto.handlers import IPayloadHandler, load_handler
from incproto.pools import HandlerPool, ProcessHandlerPool, ThreadHandlerPool
from incproto.protocol import HANDLER_ERROR
from tests.support.helpers import connect, listen, within

KINDS = {
    "function": "tests.support.badhandlers:bad_function",
    "class": "tests.support.badhandlers:BadClass",
    "instance": "tests.support.badhandlers:bad_instance",
}
NAMES = {
    "function": "tests.support.badhandlers.bad_function",
    "class": "tests.support.badhandlers.BadClass",
    "instance": "tests.support.badhandlers.BadClass",
}
FAULTS = {"str": b"^s$", "None": b"^n$", "exception": b"^x$"}


@pytest.fixture(
    scope="module",
    params=[(r, k) for r in ("inline", "threads", "processes") for k in KINDS],
    ids=lambda p: f"{p[0]}-{p[1]}",
)
def runner(
    request: pytest.FixtureRequest,
) -> Generator[Tuple[str, IPayloadHandler, Any], None, None]:
    """(kind, handler, pool or None), the pool started for the module."""
    name, kind = request.param
    handler = load_handler(KINDS[kind])
    pool: Any = None
    if name != "inline":
        make = ThreadHandlerPool if name == "threads" else ProcessHandlerPool
        pool = make(handler, 1, reactor=reactor)
        pool.startService()
    yield kind, handler, pool
    if pool is not None:
        pytest_twisted.blockon(pool.stopService())


def logged(events: List[Dict[str, Any]]) -> List[str]:
    """The text of error events, with the traceback of a failure."""
    texts = []
    for event in events:
        if event.get("log_level") not in (LogLevel.error, LogLevel.critical):
            continue
        text = formatEvent(event)
        failure = event.get("log_failure")
        if failure is not None:
            text += "\n" + failure.getTraceback()
        texts.append(text)
    return texts


@pytest.mark.parametrize("fault", list(FAULTS))
@pytest_twisted.inlineCallbacks
def test_a_fault_is_a_counted_handler_error(
    runner: Tuple[str, IPayloadHandler, HandlerPool], fault: str
) -> Generator[Deferred[Any], Any, None]:
    kind, handler, pool = runner
    if pool is None:
        factory = IncrementFactory(handler=handler)
    else:
        factory = IncrementFactory(pool=pool)
    events: List[Dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    port = listen(factory)
    try:
        client = yield connect(port)
        yield client.wait_for(1)
        client.transport.write(FAULTS[fault])
        received = yield within(client.closed, 20)
        yield within(factory.whenEmpty(), 20)  # the server's side closed too
    finally:
        globalLogPublisher.removeObserver(events.append)
        yield port.stopListening()
    assert received == b"*"
    assert factory.closedBy == {HANDLER_ERROR: 1}
    assert factory.handlerErrors == 1
    assert factory.connections == set()
    assert factory.bytesOut == 1  # the greeting, and nothing else
    [line] = logged(events)
    assert NAMES[kind] in line
    assert "127.0.0.1:" in line
    if fault == "exception":
        # The handler's own frames, wherever it ran.
        assert "badhandlers.py" in line
        assert "the handler broke on purpose" in line
    else:
        assert f"returned {fault if fault == 'str' else 'NoneType'}, not bytes" in line
    factory.doStop()
