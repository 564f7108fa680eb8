"""A tiny ASGI app for the end-to-end tests: echoes what the server put in the scope."""

from __future__ import annotations

import json
from typing import Any


def _facts(scope: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": scope["type"],
        "tls": scope.get("extensions", {}).get("tls"),
        "peer": scope.get("asgi_apim.peer"),
        "client": scope.get("client"),
    }


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
    elif scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": json.dumps(_facts(scope))})
        await send({"type": "websocket.close", "code": 1000})
    else:
        body = json.dumps(_facts(scope)).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})
