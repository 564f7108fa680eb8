"""`ThrottlingMiddleware`: WSO2's tiers on `limits`, in memory or Redis, as a middleware of its own.

    app.add_middleware(ThrottlingMiddleware, tiers={"Gold": "5000/minute"}, storage="redis://127.0.0.1:6379/0")

It runs after a security stage and reads only what that left in the scope:
``scope["user"]`` (who is counted, at which tier: `asgi_apim.throttling.keys`)
and ``scope["asgi_apim.route"]`` (the API and resource). Without a route the
request is API-less and only the caller's tier applies. The levels, codes and
storage behaviour are `asgi_apim.throttling.limiter.Limiter`'s, whose `charge`
decides every request here as it does under `protect()`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from limits.aio.storage import Storage
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from asgi_apim._keys import ROUTE
from asgi_apim.config import Config
from asgi_apim.errors import RequestError, reject
from asgi_apim.identity import Principal
from asgi_apim.throttling.limiter import ANONYMOUS, Limiter


class ThrottlingMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        tiers: Mapping[str, str] | None = None,
        storage: str | Storage = "memory://",
        strategy: str = "moving-window",
        fail_open: bool = True,
        headers: str = "ratelimit",
        trusted_proxies: Sequence[str] = (),
        default_tier: str = "Unauthenticated",
        limiter: Limiter | None = None,
    ) -> None:
        self.app = app
        if limiter is None:
            if tiers is None:
                raise TypeError("ThrottlingMiddleware needs tiers= (or a limiter=)")
            limiter = Limiter(
                tiers=tiers,
                storage=storage,
                strategy=strategy,
                fail_open=fail_open,
                headers=headers,
                trusted_proxies=trusted_proxies,
                default_tier=default_tier,
            )
        self.limiter = limiter

    @classmethod
    def from_config(cls, app: ASGIApp, config: Config) -> ThrottlingMiddleware:
        return cls(app, limiter=Limiter.from_config(config))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http" and kind != "websocket":
            if kind == "lifespan":
                receive = self._lifespan(receive)
            await self.app(scope, receive, send)
            return
        user = scope.get("user")
        if not isinstance(user, Principal):
            user = None
        limiter = self.limiter
        plan = limiter.plans_for(scope.get(ROUTE))[user.tier if user is not None else ANONYMOUS]
        try:
            admitted = limiter.charge(plan, scope, send, user)
            if admitted is None:
                admitted = await limiter.charge_later(plan, scope, send, user)
        except RequestError as exc:
            route = scope.get(ROUTE)
            await reject(scope, send, exc, route.api.name if route is not None and route.api is not None else None)
            return
        await self.app(scope, receive, admitted)

    async def aclose(self) -> None:
        """Close the storage's connections (done at lifespan shutdown)."""
        await self.limiter.aclose()

    def _lifespan(self, receive: Receive) -> Receive:
        async def wrapped() -> Message:
            message = await receive()
            if message["type"] == "lifespan.shutdown":
                await self.aclose()
            return message

        return wrapped
