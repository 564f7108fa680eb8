"""The app the definition tests secure: on any path, who called, the path, the query and the
request headers the app received, as JSON."""

from __future__ import annotations

import json
from typing import Any

from asgi_apim.identity import Principal, anonymous_dict


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["type"] != "http":
        return
    user = scope.get("user")
    facts = user.as_dict() if isinstance(user, Principal) else anonymous_dict()
    facts["path"] = scope["path"]
    facts["query"] = scope.get("query_string", b"").decode("latin-1")
    facts["headers"] = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
    body = json.dumps(facts).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})
