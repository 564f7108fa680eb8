"""Calling an ASGI app in-process, as a server would, without httpx's ASGITransport."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Result:
    status: int
    headers: dict[str, str]
    body: bytes
    raw_headers: list[tuple[bytes, bytes]] = field(default_factory=list)

    def json(self) -> Any:
        return json.loads(self.body)


def make_scope(
    method: str = "GET",
    path: str = "/",
    headers: list[tuple[str, str]] | None = None,
    *,
    client: tuple[str, int] = ("127.0.0.1", 50000),
    query: str = "",
    **extra: Any,
) -> dict[str, Any]:
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or [])],
        "client": client,
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    scope.update(extra)
    return scope


async def call(
    app: Any, method: str = "GET", path: str = "/", headers: list[tuple[str, str]] | None = None, **kw: Any
) -> Result:
    scope = make_scope(method, path, headers, **kw)
    return await call_scope(app, scope)


async def call_scope(app: Any, scope: dict[str, Any]) -> Result:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = sent[0]
    raw = list(start.get("headers", []))
    headers: dict[str, str] = {}
    for k, v in raw:
        name = k.decode("latin-1").lower()
        headers[name] = headers[name] + ", " + v.decode("latin-1") if name in headers else v.decode("latin-1")
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return Result(start["status"], headers, body, raw)


async def echo_user(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """An app that answers with who asgi-apim says is calling."""
    user = scope.get("user")
    doc = user.as_dict() if hasattr(user, "as_dict") else {"authenticated": False}
    body = json.dumps(doc).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})
