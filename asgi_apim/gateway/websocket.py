"""WebSocket APIs through the gateway: the upgrade, frames both ways, close codes kept.

The backend's WebSocket is opened first (the ``websockets`` client, with the
API's connect timeout, its SSL profile, the headers `GatewayProxy` forwards for
HTTP and the client's subprotocols); only then is the client's handshake
accepted, with the subprotocol the backend chose. A backend that cannot be
reached, or refuses the upgrade, refuses the client's handshake with the
transport error (502/503/504 problem+json where the server supports the ASGI
denial response, else close 1011). Then text and binary messages are relayed
as they come; whichever side closes first, the other is closed with the same
code and reason (1005, "no code", goes on as 1000; an abnormal end as 1011).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from starlette.types import Receive, Scope, Send
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from asgi_apim.errors import BackendConnectTimeout, BackendError, BackendProtocolError, RequestError, reject
from asgi_apim.gateway.proxy import GatewayProxy
from asgi_apim.gateway.targets import Target

logger = logging.getLogger("asgi_apim.gateway")

MAX_MESSAGE = 16 * 1024 * 1024  # uvicorn's own --ws-max-size default
WS_DROPPED = frozenset(
    {
        b"sec-websocket-key",
        b"sec-websocket-version",
        b"sec-websocket-extensions",
        b"sec-websocket-protocol",
        b"sec-websocket-accept",
        b"origin",
    }
)


def _close_code(code: int | None) -> int:
    if code is None or code == 1005:
        return 1000
    if code in (1006, 1015) or not (1000 <= code <= 4999):
        return 1011
    return code


async def _open(proxy: GatewayProxy, target: Target, scope: Scope) -> ClientConnection:
    timeouts = target.api.gateway.timeouts
    base, _ = proxy.base_headers(scope, target)
    base = [(n, v) for n, v in base if n not in WS_DROPPED]
    query = proxy.query(scope, target)
    if target.auth is not None:
        _, query = await target.auth.apply(base, query)
    headers = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in base]
    last: RequestError = BackendError("the gateway could not connect to the backend")
    candidates = target.group(scope).candidates()
    for endpoint in candidates:
        address = endpoint.address
        path = proxy.target_path(scope, target, endpoint) + (b"?" + query if query else b"")
        scheme = "wss" if address.scheme == "https" else "ws"
        uri = f"{scheme}://{endpoint.host_header.decode()}{path.decode('latin-1')}"
        ssl_source = proxy.ssl_context_for(endpoint)
        extra: dict[str, Any] = {}
        if ssl_source is not None:
            extra["ssl"] = ssl_source()[0]
        try:
            return await connect(
                uri,
                additional_headers=headers,
                subprotocols=scope.get("subprotocols") or None,
                compression=None,
                proxy=None,
                open_timeout=timeouts.connect,
                ping_interval=None,
                max_size=MAX_MESSAGE,
                user_agent_header=None,
                **extra,
            )
        except InvalidStatus as exc:
            logger.warning("api %s: backend %s refused the upgrade: %s", target.name, endpoint.url, exc)
            raise BackendProtocolError("the backend refused the WebSocket upgrade") from None
        except (TimeoutError, OSError, InvalidHandshake) as exc:
            endpoint.failed(type(exc).__name__)
            logger.warning("api %s: backend %s: %s: %s", target.name, endpoint.url, type(exc).__name__, exc)
            if isinstance(exc, TimeoutError):
                last = BackendConnectTimeout("the backend did not accept a connection in time")
            elif isinstance(exc, InvalidHandshake):
                last = BackendProtocolError("the backend's answer is not a WebSocket handshake")
        except Exception as exc:  # a fault of ours or of a library: logged, the handshake refused
            logger.exception("api %s: opening the backend WebSocket failed (%s)", target.name, type(exc).__name__)
            raise BackendError("the gateway could not connect to the backend") from None
    raise last


async def websocket_proxy(proxy: GatewayProxy, target: Target, scope: Scope, receive: Receive, send: Send) -> None:
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    try:
        upstream = await _open(proxy, target, scope)
    except RequestError as exc:
        await reject(scope, send, exc, target.name)
        return
    await send({"type": "websocket.accept", "subprotocol": upstream.subprotocol, "headers": []})
    closed_by_client: list[int] = []

    async def client_to_backend() -> None:
        while True:
            message = await receive()
            if message["type"] == "websocket.receive":
                text = message.get("text")
                await upstream.send(text if text is not None else message.get("bytes") or b"")
            elif message["type"] == "websocket.disconnect":
                code = _close_code(message.get("code", 1000))
                closed_by_client.append(code)
                await upstream.close(code, message.get("reason") or "")
                return

    async def backend_to_client() -> None:
        try:
            async for data in upstream:
                if isinstance(data, str):
                    await send({"type": "websocket.send", "text": data})
                else:
                    await send({"type": "websocket.send", "bytes": data})
        except ConnectionClosed:
            pass
        if not closed_by_client:
            rcvd = upstream.protocol.close_rcvd
            code = _close_code(rcvd.code if rcvd is not None else 1006)
            await send({"type": "websocket.close", "code": code, "reason": rcvd.reason if rcvd is not None else ""})

    tasks = [asyncio.ensure_future(client_to_backend()), asyncio.ensure_future(backend_to_client())]
    try:
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        if tasks[0] in done and tasks[0].exception() is None:
            await asyncio.wait(pending, timeout=5)  # the backend's close answer
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await upstream.close()


def install(proxy: GatewayProxy) -> GatewayProxy:
    """``proxy`` with WebSocket APIs proxied."""

    async def handler(target: Target, scope: Scope, receive: Receive, send: Send) -> None:
        await websocket_proxy(proxy, target, scope, receive, send)

    proxy.websocket = handler
    return proxy
