"""`GatewayProxy` ends a request whose client went away, or whose total deadline passed, and closes
its backend request: seen through the server's connection_lost future (`asgi-apim gateway`), or
through ``receive()`` under another server. A real backend on loopback sees its connection close."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest
from starlette.types import Receive, Scope, Send

from asgi_apim._keys import CONNECTION_LOST
from asgi_apim.gateway.proxy import GatewayProxy
from tests.gateway.servers import uvicorn_server
from tests.gateway.test_proxy import api, config


class Stalling:
    """Answers the head and a first chunk, then nothing more until the gateway's connection goes."""

    def __init__(self) -> None:
        self.streaming = asyncio.Event()
        self.gone = asyncio.Event()
        self.requests = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.requests += 1
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"first", "more_body": True})
        self.streaming.set()
        while (await receive())["type"] != "http.disconnect":
            pass
        self.gone.set()


def _scope(**extra: Any) -> dict[str, Any]:
    return {
        "type": "http",
        "method": "GET",
        "path": "/a/x",
        "raw_path": b"/a/x",
        "query_string": b"",
        "headers": [(b"host", b"gw.test")],
        "scheme": "http",
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
        **extra,
    }


class Client:
    """What the proxy sent to its client."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.started = asyncio.Event()

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)
        self.started.set()

    async def streaming(self, backend: Stalling) -> None:
        """The response has started, and the backend is waiting with its first chunk sent."""
        await asyncio.wait_for(self.started.wait(), 5)
        await asyncio.wait_for(backend.streaming.wait(), 5)
        await asyncio.sleep(0.05)

    @property
    def complete(self) -> bool:
        return any(m["type"] == "http.response.body" and not m.get("more_body") for m in self.sent)


async def _no_receive() -> dict[str, Any]:
    raise AssertionError("a GET under our server needs no receive() call")


async def test_a_lost_connection_closes_the_backend_request(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "asgi_apim.gateway")
    backend = Stalling()
    async with uvicorn_server(backend) as b:
        proxy = GatewayProxy(config(tmp_path, api("a", f'"http://127.0.0.1:{b.port}"')))
        lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        client = Client()
        task = asyncio.ensure_future(proxy(_scope(**{CONNECTION_LOST: lost}), _no_receive, client.send))
        await client.streaming(backend)
        lost.set_result(None)
        await asyncio.wait_for(task, 5)  # ends, without raising
        await asyncio.wait_for(backend.gone.wait(), 5)
        assert client.sent[0]["status"] == 200 and not client.complete
        assert "the client went away; the backend request is closed" in caplog.text
        await proxy.aclose()


async def test_a_disconnect_from_receive_closes_the_backend_request_under_another_server(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "asgi_apim.gateway")
    backend = Stalling()
    async with uvicorn_server(backend) as b:
        proxy = GatewayProxy(config(tmp_path, api("a", f'"http://127.0.0.1:{b.port}"')))
        gone = asyncio.Event()

        async def receive() -> dict[str, Any]:
            await gone.wait()
            return {"type": "http.disconnect"}

        client = Client()
        task = asyncio.ensure_future(proxy(_scope(), receive, client.send))
        await client.streaming(backend)
        gone.set()
        await asyncio.wait_for(task, 5)
        await asyncio.wait_for(backend.gone.wait(), 5)
        assert not client.complete and "the client went away" in caplog.text
        await proxy.aclose()


async def test_the_total_deadline_ends_a_stalled_response_and_its_backend_request(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    backend = Stalling()
    async with uvicorn_server(backend) as b:
        body = api("a", f'"http://127.0.0.1:{b.port}"', "[apis.timeouts]\ntotal = 0.3\n")
        proxy = GatewayProxy(config(tmp_path, body))
        lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        client = Client()
        started = asyncio.get_running_loop().time()
        await asyncio.wait_for(proxy(_scope(**{CONNECTION_LOST: lost}), _no_receive, client.send), 5)
        assert 0.25 < asyncio.get_running_loop().time() - started < 3
        await asyncio.wait_for(backend.gone.wait(), 5)
        assert client.sent[0]["status"] == 200 and not client.complete  # the client sees a cut response
        assert "the backend failed mid-response: TimeoutError" in caplog.text
        assert not lost.done() and not lost._callbacks  # type: ignore[attr-defined]  # the proxy's callback is gone
        await proxy.aclose()


async def test_a_cancellation_from_elsewhere_is_not_swallowed(tmp_path: Path) -> None:
    backend = Stalling()
    async with uvicorn_server(backend) as b:
        body = api("a", f'"http://127.0.0.1:{b.port}"', "[apis.timeouts]\ntotal = 30\n")
        proxy = GatewayProxy(config(tmp_path, body))
        lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        client = Client()
        task = asyncio.ensure_future(proxy(_scope(**{CONNECTION_LOST: lost}), _no_receive, client.send))
        await client.streaming(backend)
        lost.set_result(None)  # the client gone, and in the same pass
        task.cancel()  # a cancellation from elsewhere (a server shutting down, say): it still stands
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(backend.gone.wait(), 5)
        await proxy.aclose()


async def test_a_client_gone_before_the_call_never_reaches_the_backend(tmp_path: Path) -> None:
    backend = Stalling()
    async with uvicorn_server(backend) as b:
        proxy = GatewayProxy(config(tmp_path, api("a", f'"http://127.0.0.1:{b.port}"')))
        lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        lost.set_result(None)
        client = Client()
        await proxy(_scope(**{CONNECTION_LOST: lost}), _no_receive, client.send)
        assert client.sent == [] and backend.requests == 0 and b.connections == 0
        await proxy.aclose()


async def test_a_connection_lost_after_a_whole_response_changes_nothing(tmp_path: Path) -> None:
    async def small(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    async with uvicorn_server(small) as b:
        proxy = GatewayProxy(config(tmp_path, api("a", f'"http://127.0.0.1:{b.port}"')))
        lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        client = Client()
        await proxy(_scope(**{CONNECTION_LOST: lost}), _no_receive, client.send)
        assert client.complete and b"".join(m.get("body", b"") for m in client.sent) == b"ok"
        lost.set_result(None)
        await asyncio.sleep(0.05)
        pool = next(iter(proxy._pools.values()))
        assert pool.idle_connections == 1  # the backend connection went back to the pool
        await proxy.aclose()
