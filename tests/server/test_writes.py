"""`asgi_apim.server.writes` through our httptools protocol class: a response's head leaves with its
first body piece in one write, a head whose body is late leaves on its own at the end of the loop's
pass, and nothing the protocol writes itself overtakes a held head."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import uvicorn
from uvicorn.server import ServerState

from asgi_apim._keys import CONNECTION_LOST
from asgi_apim.server.protocols import tls_protocols
from asgi_apim.server.selftest import FakeTransport
from asgi_apim.server.writes import HeldHead

App = Callable[[dict[str, Any], Any, Any], Awaitable[None]]
GET = b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n"


class Recording(FakeTransport):
    """A plain (not TLS) transport that records each write call as the socket would see it."""

    def __init__(self) -> None:
        super().__init__(None)
        del self.extra["sslcontext"]
        self.calls: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.calls.append(bytes(data))
        super().write(data)

    def writelines(self, list_of_data: Any) -> None:
        joined = b"".join(list_of_data)
        self.calls.append(joined)
        FakeTransport.write(self, joined)


def _protocol(app: App, transport: Recording) -> Any:
    http, _ = tls_protocols("httptools", "none")
    config = uvicorn.Config(app, http=http, ws="none", lifespan="off", log_config=None, proxy_headers=False)
    config.load()
    proto = http(config=config, server_state=ServerState(), app_state={}, _loop=asyncio.get_running_loop())
    proto.connection_made(transport)
    return proto


async def _passes(n: int = 3) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


def _hello(done: asyncio.Event) -> App:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"5")]})
        await send({"type": "http.response.body", "body": b"hello"})
        done.set()

    return app


async def test_the_head_and_the_body_leave_in_one_write_on_every_request_of_a_connection() -> None:
    transport = Recording()
    done = asyncio.Event()
    proto = _protocol(_hello(done), transport)
    for _ in range(2):
        done.clear()
        proto.data_received(GET)
        await asyncio.wait_for(done.wait(), 5)
        await _passes()
    assert len(transport.calls) == 2
    for call in transport.calls:
        assert call.startswith(b"HTTP/1.1 200 OK\r\n") and call.endswith(b"\r\n\r\nhello")
    proto.connection_lost(None)


async def test_a_head_whose_body_is_late_leaves_at_the_end_of_the_loop_pass() -> None:
    transport = Recording()
    head_sent, release, done = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        head_sent.set()
        await release.wait()
        await send({"type": "http.response.body", "body": b"late", "more_body": False})
        done.set()

    proto = _protocol(app, transport)
    proto.data_received(GET)
    await asyncio.wait_for(head_sent.wait(), 5)
    await _passes()
    assert len(transport.calls) == 1 and transport.calls[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert transport.calls[0].endswith(b"transfer-encoding: chunked\r\n\r\n")  # the head alone, not held for ever
    release.set()
    await asyncio.wait_for(done.wait(), 5)
    assert transport.calls[1:] == [b"4\r\nlate\r\n0\r\n\r\n"]
    proto.connection_lost(None)


async def test_closing_sends_the_held_head_first() -> None:
    transport = Recording()
    done = asyncio.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"5")]})
        done.set()  # and return without the body: uvicorn closes the connection

    proto = _protocol(app, transport)
    proto.data_received(GET)
    await asyncio.wait_for(done.wait(), 5)
    await _passes()
    assert transport.closed
    assert len(transport.calls) == 1 and transport.calls[0].startswith(b"HTTP/1.1 200 OK\r\n")
    proto.connection_lost(None)


async def test_what_the_protocol_writes_itself_comes_after_the_held_head() -> None:
    transport = Recording()
    done = asyncio.Event()
    proto: Any = None

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        proto.data_received(b"NOT HTTP AT ALL\r\n\r\n")  # the next request is garbage: uvicorn answers 400 itself
        done.set()

    proto = _protocol(app, transport)
    proto.data_received(GET)
    await asyncio.wait_for(done.wait(), 5)
    await _passes()
    written = bytes(transport.written)
    assert written.startswith(b"HTTP/1.1 200 OK\r\n")
    assert written.index(b"HTTP/1.1 400 Bad Request\r\n") > 0
    proto.connection_lost(None)


async def test_100_continue_is_not_held_while_the_client_waits_for_it() -> None:
    transport = Recording()
    done = asyncio.Event()
    got: list[bytes] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        message = await receive()
        got.append(message["body"])
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})
        done.set()

    proto = _protocol(app, transport)
    proto.data_received(b"POST /x HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
    await _passes(5)
    assert transport.calls == [b"HTTP/1.1 100 Continue\r\n\r\n"]
    proto.data_received(b"abc")
    await asyncio.wait_for(done.wait(), 5)
    await _passes()
    assert got == [b"abc"]
    assert len(transport.calls) == 2 and transport.calls[1].startswith(b"HTTP/1.1 200 OK\r\n")
    assert transport.calls[1].endswith(b"\r\n\r\nok")
    proto.connection_lost(None)


async def test_a_held_head_is_dropped_once_the_connection_is_closing() -> None:
    transport = Recording()
    held = HeldHead(transport, asyncio.get_running_loop())
    held.write(b"head")
    assert held.holding and transport.calls == []
    transport.closed = True
    held.write(b"body")
    await _passes()
    assert transport.calls == [] and not held.holding
    assert held.is_closing() and held.get_extra_info("peername") == ("127.0.0.1", 54321)


async def test_the_connection_lost_future_is_done_once_the_client_is_gone() -> None:
    transport = Recording()
    scopes: list[dict[str, Any]] = []
    done = asyncio.Event()
    inner = _hello(done)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        scopes.append(scope)
        await inner(scope, receive, send)

    proto = _protocol(app, transport)
    for _ in range(2):
        done.clear()
        proto.data_received(GET)
        await asyncio.wait_for(done.wait(), 5)
    lost = scopes[0][CONNECTION_LOST]
    assert isinstance(lost, asyncio.Future) and scopes[1][CONNECTION_LOST] is lost and not lost.done()
    proto.connection_lost(None)
    assert lost.done() and lost.result() is None
