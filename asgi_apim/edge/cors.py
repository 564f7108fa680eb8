"""`APICORSMiddleware`: each API's CORS, by Starlette's `CORSMiddleware` (one per API with CORS).

In front of the security stage, so that a browser's preflight (``OPTIONS`` with ``Origin`` and
``Access-Control-Request-Method``) is answered before authentication, as WSO2's gateway does;
an actual request's response, refusals included, carries the headers. A request whose
``Origin`` the API does not allow is passed on untouched: it gets no CORS header at all (a
preflight from it then meets the security stage like any request). Built only when some API
has CORS; a path of an API without it costs one dict lookup.
"""

from __future__ import annotations

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from asgi_apim.config import ApiConfig
from asgi_apim.edge._routes import PerAPI
from asgi_apim.routing import Router


def _cors(app: ASGIApp, api: ApiConfig) -> CORSMiddleware | None:
    cors = api.cors
    if cors is None:
        return None
    return CORSMiddleware(
        app,
        allow_origins=cors.allow_origins,
        allow_methods=cors.allow_methods,
        allow_headers=cors.allow_headers,
        allow_credentials=cors.allow_credentials,
        expose_headers=cors.expose_headers,
        max_age=cors.max_age,
    )


class APICORSMiddleware:
    def __init__(self, app: ASGIApp, *, router: Router) -> None:
        self.app = app
        self.apis = PerAPI(router, lambda api: _cors(app, api))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cors = self.apis.get(scope["path"])
        if cors is not None:
            origin = None
            for name, value in scope["headers"]:
                if name == b"origin":
                    origin = value.decode("latin-1")
                    break
            if origin is not None and cors.is_allowed_origin(origin):
                await cors(scope, receive, send)
                return
        await self.app(scope, receive, send)
