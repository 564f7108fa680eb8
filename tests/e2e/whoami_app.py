"""A tiny ASGI app for the end-to-end tests: on any path and method, who the
stack says is calling (``scope["user"]``, ``scope["auth"]``) as JSON."""

from __future__ import annotations

import json
from typing import Any

from asgi_apim.identity import Principal, anonymous_dict


def _facts(scope: dict[str, Any]) -> dict[str, Any]:
    user = scope.get("user")
    facts = user.as_dict() if isinstance(user, Principal) else anonymous_dict()
    auth = scope.get("auth")
    facts["auth_scopes"] = list(getattr(auth, "scopes", []))
    facts["path"] = scope["path"]
    facts["http_method"] = scope.get("method")
    return facts


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["type"] != "http":
        return
    body = json.dumps(_facts(scope)).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})
