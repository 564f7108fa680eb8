"""A backend for the gateway's end-to-end tests, run by uvicorn as its own process.

``BACKEND_NAME`` names it in every answer; ``BACKEND_BASIC`` (``user:password``), when set,
is the basic credential it requires (else 401). Paths (below any prefix):

* ``.../echo...``: JSON of what arrived: method, raw path, query, headers, body length, name;
* ``.../upload``: the SHA-256 and length of the streamed body;
* ``.../download?size=N``: N bytes (a repeated 64 KiB pattern), streamed;
* ``.../hang``: never answers;
* ``.../status/N``: answers status N;
* WebSocket: echoes every message; ``close:CODE`` closes with CODE.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
from typing import Any

PATTERN = bytes(range(256)) * 256  # 64 KiB
NAME = os.environ.get("BACKEND_NAME", "backend")
BASIC = os.environ.get("BACKEND_BASIC")


async def _body(receive: Any) -> Any:
    while True:
        message = await receive()
        yield message.get("body", b"")
        if not message.get("more_body"):
            return


async def _json(send: Any, status: int, doc: Any) -> None:
    body = json.dumps(doc).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"x-hop"),
        (b"x-hop", b"must not pass"),
        (b"keep-alive", b"timeout=5"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    if scope["type"] == "websocket":
        await websocket(scope, receive, send)
        return
    path = scope["path"]
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
    if BASIC and headers.get("authorization") != "Basic " + base64.b64encode(BASIC.encode()).decode():
        await _json(send, 401, {"error": "backend credential missing", "name": NAME})
        return
    if path.endswith("/hang"):
        await asyncio.sleep(3600)
    if "/status/" in path:
        await _json(send, int(path.rsplit("/", 1)[1]), {"name": NAME})
        return
    if path.endswith("/upload"):
        digest, size = hashlib.sha256(), 0
        async for chunk in _body(receive):
            digest.update(chunk)
            size += len(chunk)
        await _json(send, 200, {"sha256": digest.hexdigest(), "size": size, "name": NAME})
        return
    if path.endswith("/download"):
        query = dict(p.split("=", 1) for p in scope["query_string"].decode().split("&") if "=" in p)
        size = int(query.get("size", "0"))
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/octet-stream")]}
        )
        sent = 0
        while sent < size:
            chunk = PATTERN[: min(len(PATTERN), size - sent)]
            sent += len(chunk)
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    length = 0
    async for chunk in _body(receive):
        length += len(chunk)
    doc = {
        "name": NAME,
        "method": scope["method"],
        "raw_path": scope.get("raw_path", b"").decode("latin-1"),
        "query": scope["query_string"].decode("latin-1"),
        "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]],
        "length": length,
    }
    await _json(send, 200, doc)


async def websocket(scope: Any, receive: Any, send: Any) -> None:
    await receive()  # websocket.connect
    protocols = scope.get("subprotocols") or []
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
    await send({"type": "websocket.accept", "subprotocol": protocols[0] if protocols else None})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        text = message.get("text")
        if text is not None and text.startswith("close:"):
            await send({"type": "websocket.close", "code": int(text[6:]), "reason": "asked"})
            return
        if text == "headers":
            await send({"type": "websocket.send", "text": json.dumps(headers)})
        elif text == "path":
            path = scope.get("raw_path", b"").decode() + "?" + scope["query_string"].decode()
            await send({"type": "websocket.send", "text": path})
        elif text is not None:
            await send({"type": "websocket.send", "text": f"{NAME}:{text}"})
        else:
            await send({"type": "websocket.send", "bytes": message.get("bytes") or b""})
