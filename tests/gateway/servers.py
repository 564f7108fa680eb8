"""Real servers on loopback for the upstream client's tests: uvicorn apps and raw asyncio servers
that misbehave on purpose. Each counts the connections it accepted."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import uvicorn

from asgi_apim.gateway.upstream import Origin, UpstreamPool, UpstreamRequest

LOOPBACK = "127.0.0.1"
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Counted:
    """A running server: its port and how many connections it accepted."""

    def __init__(self) -> None:
        self.port = 0
        self.connections = 0

    def origin(self, scheme: str = "http") -> Origin:
        return Origin(scheme, LOOPBACK, self.port)

    def pool(self, **kw: Any) -> UpstreamPool:
        return UpstreamPool(self.origin(kw.pop("scheme", "http")), **kw)


@contextlib.asynccontextmanager
async def uvicorn_server(app: Any, **kw: Any) -> AsyncIterator[Counted]:
    """``app`` under uvicorn (httptools) in this event loop, on a free loopback port."""
    counted = Counted()
    config = uvicorn.Config(app, host=LOOPBACK, port=0, log_level="warning", http="httptools", lifespan="off", **kw)
    server = uvicorn.Server(config)
    original = server.server_state.connections

    class Connections(set):  # type: ignore[type-arg]  # uvicorn's own set of live connections, counted
        def add(self, item: Any) -> None:
            counted.connections += 1
            super().add(item)

    server.server_state.connections = Connections(original)
    task = asyncio.ensure_future(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        counted.port = server.servers[0].sockets[0].getsockname()[1]
        yield counted
    finally:
        server.should_exit = True
        server.force_exit = True
        await task


@contextlib.asynccontextmanager
async def raw_server(handler: Handler, *, ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[Counted]:
    """An asyncio server running ``handler`` for every connection."""
    counted = Counted()
    tasks: set[asyncio.Task[None]] = set()

    async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass  # the client went away: part of several tests
        finally:
            writer.close()

    def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        counted.connections += 1
        task = asyncio.ensure_future(run(reader, writer))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    server = await asyncio.start_server(on_connect, LOOPBACK, 0, ssl=ssl_context)
    counted.port = server.sockets[0].getsockname()[1]
    try:
        yield counted
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()


async def read_head(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


def reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST (SO_LINGER 0)."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    writer.transport.abort()


def get(target: bytes = b"/", method: str = "GET", **kw: Any) -> UpstreamRequest:
    headers = kw.pop("headers", [(b"host", b"backend")])
    return UpstreamRequest(method, target, headers, kw.pop("body", None), kw.pop("content_length", None))


async def chunks(*parts: bytes, delay: float = 0.0) -> AsyncIterator[bytes]:
    for part in parts:
        if delay:
            await asyncio.sleep(delay)
        yield part
