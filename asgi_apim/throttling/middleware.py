"""`ThrottlingMiddleware`: WSO2's tiers on `limits`, in memory or Redis.

    app.add_middleware(ThrottlingMiddleware, tiers={"Gold": "5000/minute"}, storage="redis://127.0.0.1:6379/0")

It runs after the security stage and reads only what that left in the scope:
``scope["user"]`` (who is counted, at which tier: `asgi_apim.throttling.keys`)
and ``scope["asgi_apim.route"]`` (the API and resource). Without a route the
request is API-less and only the caller's tier applies. Three levels, checked
together (all or nothing) and reported in WSO2's order:

=============  ========================================  =======  ============================
level          counts                                    code     WSO2 name
=============  ========================================  =======  ============================
API            all callers of the API, its ``tier``      900800   API level throttled out
resource       all callers of the resource, its ``tier`` 900802   resource level throttled out
subscription   one caller of one API, the caller's tier  900804   subscription level throttled
  burst        a tier's shorter windows (``10/second``   900807   burst control limit exceeded
               in ``"10/second;1000/hour"``)
=============  ========================================  =======  ============================

The first exhausted answers 429 ``application/problem+json`` with ``Retry-After``
in seconds. An ``unlimited`` tier costs nothing: no storage call. When the
storage is away, ``fail_open`` lets requests through (logged, at most once
every ten seconds) or answers 503; the storage is retried after half a second.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from math import ceil
from typing import TYPE_CHECKING, Any

from limits.aio.storage import Storage
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from asgi_apim._keys import ROUTE
from asgi_apim.certs.trust import TrustedProxies
from asgi_apim.errors import ConfigError, RequestError, StorageUnavailable, Throttled, reject
from asgi_apim.identity import Principal
from asgi_apim.routing import Route
from asgi_apim.throttling.engine import (
    STORAGE_ERRORS,
    Engine,
    Limit,
    MemoryEngine,
    OneLimit,
    StorageGuard,
    build_engine,
)
from asgi_apim.throttling.headers import Advertiser, HeaderStyle, policy_name
from asgi_apim.throttling.keys import CallerKeys
from asgi_apim.throttling.tiers import Tier, parse_tiers

if TYPE_CHECKING:
    from asgi_apim.config import ApiConfig, Config, ResourceConfig

logger = logging.getLogger("asgi_apim.throttling")

API_CODE, RESOURCE_CODE, SUBSCRIPTION_CODE, BURST_CODE = 900800, 900802, 900804, 900807
_ANONYMOUS = object()  # the tier key of a caller without a Principal: the default tier
LATER = object()  # `admit_now`: the decision needs the remote storage; await `admit`
_LEVEL_TEXT = {"api": "the API's", "resource": "the resource's", "subscription": "your"}


class _Plan:
    """The limits of one (API, resource, caller tier), in checking order, and their success headers.

    ``take`` (memory engines) charges them synchronously for a caller: ``take(caller)`` answers
    ``[0, remaining, reset, ...]`` or ``[i, retry_after]`` with the i-th (from 1) exhausted.
    ``one`` is the same charge when the plan is one limit counted per caller (the usual plan),
    which `ThrottlingMiddleware.ticket` charges without the call; None for any other plan."""

    __slots__ = ("api", "resource", "limits", "prefix", "advertiser", "take", "one")

    def __init__(
        self,
        api: Any,
        resource: Any,
        limits: tuple[Limit, ...],
        prefix: str,
        advertiser: Advertiser | None,
        take: Callable[[str], list[float]] | None,
        one: OneLimit | None = None,
    ) -> None:
        self.api = api
        self.resource = resource
        self.limits = limits
        self.prefix = prefix
        self.advertiser = advertiser
        self.take = take
        self.one = one

    def ids(self, caller: str) -> list[str]:
        prefix = self.prefix
        return [limit.shared or prefix + caller for limit in self.limits]


# `ThrottlingMiddleware.ticket`: ``ticket(send, user, now)``, the ``send`` to go on with, or None
Ticket = Callable[[Send, Principal, float], "Send | None"]


def _free(send: Send, user: Principal, now: float) -> Send:
    """The ticket of a plan without limits: nothing to count."""
    return send


class ThrottlingMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        tiers: Mapping[str, str],
        storage: str | Storage = "memory://",
        strategy: str = "moving-window",
        fail_open: bool = True,
        headers: str = "ratelimit",
        trusted_proxies: Sequence[str] = ("127.0.0.1/32", "::1/128"),
        default_tier: str = "Unauthenticated",
    ) -> None:
        self.app = app
        self.tiers: dict[str, Tier] = parse_tiers(tiers)
        if default_tier not in self.tiers:
            raise ConfigError("throttling.tiers", f"the default tier {default_tier!r} is not defined")
        try:
            self.headers = HeaderStyle(headers)
        except ValueError as exc:
            raise ConfigError("throttling.headers", str(exc)) from None
        self.default_tier = default_tier
        self.fail_open = fail_open
        self.engine: Engine = build_engine(storage, strategy)
        self.guard = StorageGuard()
        self.callers = CallerKeys(TrustedProxies(trusted_proxies), tiers=self.tiers, default_tier=default_tier)
        self._plans: dict[tuple[int, int, str], _Plan] = {}
        self._routes: dict[tuple[int, object], tuple[Route | None, _Plan]] = {}

    @classmethod
    def from_config(cls, app: ASGIApp, config: Config) -> ThrottlingMiddleware:
        t = config.throttling
        return cls(
            app,
            tiers=t.tiers,
            storage=t.storage,
            strategy=t.strategy,
            fail_open=t.fail_open,
            headers=t.headers,
            trusted_proxies=config.mutual_ssl.trusted_proxies,
        )

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
        route = scope.get(ROUTE)
        admitted = self.admit_now(scope, send, user, route)
        if admitted is LATER:
            await self.admit(scope, receive, send, user, route)
        elif isinstance(admitted, RequestError):
            await reject(scope, send, admitted)
        else:
            await self.app(scope, receive, admitted)

    def admit_now(
        self, scope: Scope, send: Send, user: Principal | None, route: Route | None
    ) -> Send | RequestError | object:
        """The throttling decision on a request by ``user`` (None: anonymous) on ``route``, made
        without awaiting when it can be (no limit applies, or the counts are in memory): the
        ``send`` to go on with (adding the success headers), the error to answer with, or
        `LATER` when the counts are remote (then `admit`). The security stage calls this
        directly, so a request crosses no second middleware layer."""
        tier = user.tier if user is not None else _ANONYMOUS
        known = self._routes.get((id(route), tier))
        plan = known[1] if known is not None and known[0] is route else self._route_plan(route, tier)
        if not plan.limits:
            return send
        take = plan.take
        if take is None or self.guard.down:  # remote counts, or the storage is being retried
            return LATER
        try:
            result = take(self._caller(scope, user))
        except STORAGE_ERRORS as exc:  # a memory storage of the user's own that fails
            self.guard.failed(exc, fail_open=self.fail_open)
            return send if self.fail_open else self._unavailable()
        if result[0]:
            return self._throttled(plan.limits[int(result[0]) - 1], max(1, ceil(result[1])))
        advertiser = plan.advertiser
        return advertiser.wrap(send, result) if advertiser is not None and scope["type"] == "http" else send

    async def admit(
        self, scope: Scope, receive: Receive, send: Send, user: Principal | None, route: Route | None
    ) -> None:
        """Throttle a request by ``user`` on ``route`` and hand it to the app (or answer 429/503)."""
        tier = user.tier if user is not None else _ANONYMOUS
        known = self._routes.get((id(route), tier))
        plan = known[1] if known is not None and known[0] is route else self._route_plan(route, tier)
        if not plan.limits:
            await self.app(scope, receive, send)
            return
        guard = self.guard
        if guard.down and not guard.available():
            await self._storage_away(scope, receive, send, None)
            return
        advertiser = plan.advertiser if scope["type"] == "http" else None
        caller = self._caller(scope, user)
        try:
            take = plan.take
            result = take(caller) if take is not None else await self._acquire(plan, caller, advertiser is not None)
        except STORAGE_ERRORS as exc:
            await self._storage_away(scope, receive, send, exc)
            return
        if guard.down:
            guard.recovered()
        if result[0]:
            limit = plan.limits[int(result[0]) - 1]
            await reject(scope, send, self._throttled(limit, max(1, ceil(result[1]))))
            return
        if advertiser is not None:
            send = advertiser.wrap(send, result)
        await self.app(scope, receive, send)

    @property
    def inline(self) -> bool:
        """Whether counts are charged without awaiting (memory): the security stage's fast path."""
        return isinstance(self.engine, MemoryEngine)

    def ticket(self, route: Route, tier: str | None) -> Ticket | None:
        """The throttling decision on a caller of ``tier`` on ``route``, as one synchronous step for
        the security stage's fast path (`APISecurityMiddleware`): ``ticket(send, user, now)``
        charges ``user``'s one limit in memory at ``now`` and answers the ``send`` to go on with
        (adding the success headers); it raises the 429, or the 503 when a failing storage is not
        to fail open; it answers None, charging nothing, while the storage is being retried.
        None for a plan the step does not charge (several limits, or a shared one): the caller
        goes to `admit_now`."""
        plan = self._route_plan(route, tier)
        if not plan.limits:
            return _free
        one = plan.one
        if one is None:
            return None
        charge, amount, expiry, keys, key = one.charge, one.amount, one.expiry, one.keys, one.key
        guard, fail_open, throttled = self.guard, self.fail_open, self._throttled
        advertiser = plan.advertiser
        wrap = advertiser.wrap if advertiser is not None else None
        # one RateLimit header value (the default): rendered and added here, with no call of
        # `Advertiser.wrap`; the storage's one-limit answers are never negative (no clamping)
        single = advertiser.single if advertiser is not None else None
        policy = advertiser.policy if advertiser is not None else None

        def ticket(send: Send, user: Principal, now: float) -> Send | None:
            if guard.down:  # the general path retries the storage
                return None
            caller = user.throttle_key
            try:
                result = charge(keys.get(caller) or key(caller), amount, expiry, now)
            except STORAGE_ERRORS as exc:  # a memory storage of the user's own that fails
                guard.failed(exc, fail_open=fail_open)
                if fail_open:
                    return send
                raise self._unavailable() from None
            if result[0]:
                raise throttled(plan.limits[0], max(1, ceil(result[1])))
            if single is None:
                return send if wrap is None else wrap(send, result)
            extra = [policy, (b"ratelimit", single % (result[1], ceil(result[2])))]

            def wrapped(message: Message) -> Awaitable[None]:  # as `Advertiser.wrap`'s
                if message["type"] == "http.response.start":
                    try:
                        message["headers"] = message["headers"] + extra
                    except (KeyError, TypeError):
                        message["headers"] = [*(message.get("headers") or ()), *extra]
                return send(message)

            return wrapped  # type: ignore[return-value]

        return ticket

    def _caller(self, scope: Scope, user: Principal | None) -> str:
        """Who is counted (`CallerKeys.__call__`, inline: the tier was resolved with the plan)."""
        if user is not None:
            return user.throttle_key or f"{user.method}:{user.subject}"
        return self.callers.anonymous(scope)

    async def _acquire(self, plan: _Plan, caller: str, report: bool) -> list[float]:
        """A remote engine's verdict, in the shape of a memory plan's ``take``."""
        verdict = await self.engine.acquire(plan.limits, plan.ids(caller), report)
        if verdict.failed is not None:
            return [plan.limits.index(verdict.failed) + 1, verdict.retry_after]
        return [0, *verdict.windows]

    async def _storage_away(self, scope: Scope, receive: Receive, send: Send, exc: BaseException | None) -> None:
        self.guard.failed(exc, fail_open=self.fail_open)
        if self.fail_open:
            await self.app(scope, receive, send)
        else:
            await reject(scope, send, self._unavailable())

    @staticmethod
    def _unavailable() -> StorageUnavailable:
        return StorageUnavailable("the rate-limit storage is unavailable; try again shortly")

    def _throttled(self, limit: Limit, retry_after: int) -> Throttled:
        item = limit.item
        window = f"{item.multiples} {item.GRANULARITY.name}" if item.multiples != 1 else item.GRANULARITY.name
        exc = Throttled(
            f"{_LEVEL_TEXT[limit.level]} limit of {item.amount} requests per {window} (tier {limit.tier}) is exhausted",
            code=limit.code,
            retry_after=retry_after,
        )
        exc.headers.update(self.headers.refused(limit, retry_after))
        return exc

    def _lifespan(self, receive: Receive) -> Receive:
        async def wrapped() -> Message:
            message = await receive()
            if message["type"] == "lifespan.shutdown":
                await self.aclose()
            return message

        return wrapped

    async def aclose(self) -> None:
        try:
            await self.engine.aclose()
        except Exception as exc:  # closing a connection that is already gone
            logger.debug("closing the throttling storage: %s", exc)

    # ------------------------------------------------------------------ plans

    def _route_plan(self, route: Route | None, tier: str | None | object) -> _Plan:
        """The plan of a request on ``route`` by a caller of ``tier`` (as the caller presents it), cached
        by the route object's identity: the cache holds the route, so its identity is not reused meanwhile."""
        resolved = self.default_tier if tier is _ANONYMOUS else self.callers.tier(tier)  # type: ignore[arg-type]
        plan = (
            self._plan(route.api, route.resource, resolved) if route is not None else self._plan(None, None, resolved)
        )
        if len(self._routes) >= 4096:
            self._routes.clear()
        self._routes[(id(route), tier)] = (route, plan)
        return plan

    def _plan(self, api: ApiConfig | None, resource: ResourceConfig | None, tier: str) -> _Plan:
        key = (id(api), id(resource), tier)
        plan = self._plans.get(key)
        if plan is None or plan.api is not api or plan.resource is not resource:
            plan = self._build_plan(api, resource, tier)
            if len(self._plans) >= 4096:
                self._plans.clear()
            self._plans[key] = plan
        return plan

    def _tier(self, name: str | None, where: str) -> Tier:
        tier = self.tiers.get(name or "")
        if tier is None:
            logger.error("%s names tier %r, which is not configured; applying %r", where, name, self.default_tier)
            tier = self.tiers[self.default_tier]
        return tier

    def _build_plan(self, api: ApiConfig | None, resource: ResourceConfig | None, tier_name: str) -> _Plan:
        name = api.name if api is not None else "-"
        limits: list[Limit] = []
        if api is not None:
            tier = self._tier(api.tier, f"API {name}")
            limits += self._limits("api", tier, API_CODE, f"api|{name}", f"api.{tier.name}")
        if api is not None and resource is not None and resource.tier:
            tier = self._tier(resource.tier, f"resource {resource.path} of API {name}")
            methods = ",".join(resource.methods) or "*"
            limits += self._limits(
                "resource", tier, RESOURCE_CODE, f"res|{name}|{methods}|{resource.path}", f"resource.{tier.name}"
            )
        tier = self.tiers[tier_name]
        limits += self._limits("subscription", tier, SUBSCRIPTION_CODE, None, tier.name)
        advertiser = self.headers.advertiser([limit for limit in limits if limit.report])
        prefix = f"sub|{name}|"
        engine = self.engine
        memory = isinstance(engine, MemoryEngine)
        one = engine.one(limits, prefix) if memory else None  # type: ignore[attr-defined]
        take = one.take if one is not None else engine.bind(limits, prefix) if limits and memory else None  # type: ignore[attr-defined]
        return _Plan(api, resource, tuple(limits), prefix, advertiser, take, one)

    @staticmethod
    def _limits(level: str, tier: Tier, code: int, shared: str | None, label: str) -> list[Limit]:
        items = tier.limits
        longest = items[-1] if items else None
        out = []
        for item in items:
            is_burst = level == "subscription" and item is not longest
            name = label if len(items) == 1 else f"{label}.{item.get_expiry()}s"
            out.append(
                Limit(
                    level=level,
                    tier=tier.name,
                    item=item,
                    code=BURST_CODE if is_burst else code,
                    policy=policy_name(name),
                    shared=shared,
                    report=level == "subscription",
                )
            )
        return out
