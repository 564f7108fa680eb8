"""`TransportMiddleware`: an API served over HTTPS only (``transports = ["https"]``,
``x-wso2-transports``) refuses a plain-HTTP request or WebSocket before anything is read of it
(403, 900906), its credentials included. Built only when some API refuses plain HTTP."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from asgi_apim.edge._routes import PerAPI
from asgi_apim.errors import TransportRefused, reject
from asgi_apim.routing import Router

_PLAIN = ("http", "ws")


class TransportMiddleware:
    def __init__(self, app: ASGIApp, *, router: Router) -> None:
        self.app = app
        self.apis = PerAPI(router, lambda api: api.name if "http" not in api.transports else None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and scope.get("scheme", "http") in _PLAIN:
            name = self.apis.get(scope["path"])
            if name is not None:
                await reject(scope, send, TransportRefused(f"API {name!r} is served over HTTPS only"))
                return
        await self.app(scope, receive, send)
