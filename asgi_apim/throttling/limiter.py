"""`Limiter`: the throttling charge, WSO2's tiers on `limits`, in memory or Redis.

Four levels, checked together (all or nothing) and reported in WSO2's order:

=============  ========================================  =======  ============================
level          counts                                    code     WSO2 name
=============  ========================================  =======  ============================
API            all callers of the API, its ``tier``      900800   API level throttled out
resource       all callers of the resource, its ``tier`` 900802   resource level throttled out
subscription   one caller of one API, the caller's tier  900804   subscription level throttled
  burst        a tier's shorter windows (``10/second``   900807   burst control limit exceeded
               in ``"10/second;1000/hour"``)
application    one application and its user, across      900803   application level throttled
               APIs, the token's application tier
=============  ========================================  =======  ============================

The application level applies to callers whose token names its application's tier
(WSO2's ``application.tier``: `Principal.application_tier`, counted by
`Principal.application_key`); their plan is the route's plan for their tier with
that level added (`Plan.applications`), made once per application tier.

Every request that is throttled passes through `Limiter.charge`, whoever calls it
(`ThrottlingMiddleware` on its own, or the security stage with the plans it
asked for once per route with `Limiter.plans_for`): it charges in memory at
once, or answers None when the counts are remote (then `Limiter.charge_later`).
The first exhausted limit raises `Throttled` (429, ``Retry-After`` in seconds).
An ``unlimited`` tier costs nothing: no storage call. When the storage is away,
``fail_open`` lets requests through (logged, at most once every ten seconds) or
raises `StorageUnavailable` (503); the storage is retried after half a second.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from math import ceil
from typing import Any

from limits.aio.storage import Storage
from starlette.types import Scope, Send

from asgi_apim.certs.trust import TrustedProxies
from asgi_apim.config import ApiConfig, Config, ResourceConfig
from asgi_apim.errors import ConfigError, StorageUnavailable, Throttled
from asgi_apim.identity import Principal
from asgi_apim.routing import Route
from asgi_apim.throttling.engine import (
    STORAGE_ERRORS,
    Engine,
    Limit,
    OneLimit,
    StorageGuard,
    SynchronousSupport,
    build_engine,
)
from asgi_apim.throttling.headers import Advertiser, HeaderStyle, policy_name
from asgi_apim.throttling.keys import CallerKeys
from asgi_apim.throttling.tiers import Tier, parse_tiers

logger = logging.getLogger("asgi_apim.throttling")

API_CODE, RESOURCE_CODE, SUBSCRIPTION_CODE, BURST_CODE = 900800, 900802, 900804, 900807
APPLICATION_CODE = 900803
_LEVEL_TEXT = {
    "api": "the API's",
    "resource": "the resource's",
    "subscription": "your",
    "application": "your application's",
}
_MAX_TIERS = 64  # caller tiers remembered per route (the configured ones, plus None)


class Plan:
    """The limits of one (API, resource, caller tier), in checking order, and their success headers.

    ``one`` is the usual plan, one limit counted per caller in memory; ``take`` charges any
    other plan in memory synchronously (``[0, remaining, reset, ...]`` or ``[i, retry_after]``
    with the i-th, from 1, exhausted); both None when the counts are remote."""

    __slots__ = ("api", "resource", "limits", "prefix", "wrap", "take", "one", "applications", "by_application")

    def __init__(
        self,
        api: ApiConfig | None,
        resource: ResourceConfig | None,
        limits: tuple[Limit, ...],
        prefix: str,
        advertiser: Advertiser | None,
        take: Callable[[str], list[float]] | None,
        one: OneLimit | None,
    ) -> None:
        self.api = api
        self.resource = resource
        self.limits = limits
        self.prefix = prefix
        self.wrap = advertiser.wrap if advertiser is not None else None
        self.take = take
        self.one = one
        self.applications: dict[str, Plan] = {}  # this plan with an application level, by application tier
        self.by_application = False  # whether one of its limits counts an application

    def ids(self, caller: str, application: str = "") -> list[str]:
        prefix = self.prefix
        if self.by_application:
            return [
                limit.shared or ("app|" + application if limit.level == "application" else prefix + caller)
                for limit in self.limits
            ]
        return [limit.shared or prefix + caller for limit in self.limits]


class Plans(dict[Any, Plan]):
    """The plans of one route by caller tier (a `Principal`'s ``tier``, or `ANONYMOUS`), made
    when a tier is first met: ``plans[tier]`` is one dict lookup."""

    __slots__ = ("limiter", "route")

    def __init__(self, limiter: Limiter, route: Route | None) -> None:
        super().__init__()
        self.limiter = limiter
        self.route = route

    def __missing__(self, tier: Any) -> Plan:
        if len(self) >= _MAX_TIERS:
            self.clear()
        plan = self[tier] = self.limiter.plan(self.route, tier)
        return plan


ANONYMOUS: Any = object()  # the tier key of a caller without a `Principal`: the default tier


class Limiter:
    """Built once (`from_config`); `charge` is the per-request call."""

    def __init__(
        self,
        *,
        tiers: Mapping[str, str],
        storage: str | Storage = "memory://",
        strategy: str = "moving-window",
        fail_open: bool = True,
        headers: str = "ratelimit",
        trusted_proxies: Sequence[str] = (),
        default_tier: str = "Unauthenticated",
    ) -> None:
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
        self._plans: dict[tuple[int, int, str], Plan] = {}
        self._routes: dict[int, tuple[Route | None, Plans]] = {}

    @classmethod
    def from_config(cls, config: Config) -> Limiter:
        t = config.throttling
        return cls(
            tiers=t.tiers,
            storage=t.storage,
            strategy=t.strategy,
            fail_open=t.fail_open,
            headers=t.headers,
            trusted_proxies=config.mutual_ssl.trusted_proxies,
        )

    @property
    def remote(self) -> bool:
        """Whether counts live in a remote storage (shared by every worker and node)."""
        return bool(self.engine.remote)

    def plans_for(self, route: Route | None) -> Plans:
        """The plans of requests on ``route`` (None: outside every API), by caller tier; the
        same object for the same route, so a caller may keep it."""
        known = self._routes.get(id(route))
        if known is not None and known[0] is route:
            return known[1]
        if len(self._routes) >= 4096:
            self._routes.clear()
        plans = Plans(self, route)
        self._routes[id(route)] = (route, plans)  # holds the route: its id is not reused meanwhile
        return plans

    def charge(self, plan: Plan, scope: Scope, send: Send, user: Principal | None) -> Send | None:
        """The throttling decision on a request by ``user`` (None: anonymous) under ``plan``: the
        one entry every throttled request passes through. Charged in memory here, answering the
        ``send`` to go on with (adding the success headers); None when the counts are remote
        or the storage is being retried (then `charge_later`). Raises `Throttled` (429) or
        `StorageUnavailable` (503)."""
        if user is not None and user.application_tier is not None:
            plan = self.with_application(plan, user.application_tier)
            if self.guard.down or not isinstance(self.engine, SynchronousSupport):
                return None
            return self._take(plan, scope, send, user)
        if not plan.limits:
            return send
        one = plan.one
        if one is None:
            if plan.take is None or self.guard.down:
                return None
            return self._take(plan, scope, send, user)
        if self.guard.down:
            return None
        if user is not None:
            caller = user.throttle_key or f"{user.method}:{user.subject}"
        else:
            caller = self._anonymous(scope)
        try:
            result = one.charge(one.keys.get(caller) or one.key(caller), one.amount, one.expiry, time.time())
        except STORAGE_ERRORS as exc:  # a memory storage of the user's own that fails
            return self._storage_failed(exc, send)
        if result[0]:
            raise self._throttled(plan.limits[0], result[1])
        wrap = plan.wrap
        return send if wrap is None or scope["type"] != "http" else wrap(send, result)

    async def charge_later(self, plan: Plan, scope: Scope, send: Send, user: Principal | None) -> Send:
        """`charge` where it answered None: the remote storage's verdict (or the storage retried)."""
        guard = self.guard
        if guard.down and not guard.available():
            return self._storage_failed(None, send)
        application = ""
        if user is not None and user.application_tier is not None:
            plan = self.with_application(plan, user.application_tier)
            application = user.application_key or self._caller(scope, user)
        if plan.take is not None or (plan.by_application and isinstance(self.engine, SynchronousSupport)):
            return self._take(plan, scope, send, user)
        wrap = plan.wrap if scope["type"] == "http" else None
        caller = self._caller(scope, user)
        try:
            verdict = await self.engine.acquire(plan.limits, plan.ids(caller, application), wrap is not None)
        except STORAGE_ERRORS as exc:
            return self._storage_failed(exc, send)
        if guard.down:
            guard.recovered()
        if verdict.failed is not None:
            raise self._throttled(verdict.failed, verdict.retry_after)
        return send if wrap is None else wrap(send, [0, *verdict.windows])

    def _take(self, plan: Plan, scope: Scope, send: Send, user: Principal | None) -> Send:
        """A memory plan of several limits (or a shared one, or an application's), charged at once."""
        take = plan.take
        try:
            if take is not None:
                result = take(self._caller(scope, user))
            else:
                engine = self.engine
                assert isinstance(engine, SynchronousSupport) and user is not None
                caller = self._caller(scope, user)
                result = engine.take_ids(plan.limits, plan.ids(caller, user.application_key or caller))
        except STORAGE_ERRORS as exc:
            return self._storage_failed(exc, send)
        if self.guard.down:
            self.guard.recovered()
        if result[0]:
            raise self._throttled(plan.limits[int(result[0]) - 1], result[1])
        wrap = plan.wrap
        return send if wrap is None or scope["type"] != "http" else wrap(send, result)

    def _caller(self, scope: Scope, user: Principal | None) -> str:
        """Who is counted: the caller's throttle key, or the client IP of an anonymous one."""
        if user is not None:
            return user.throttle_key or f"{user.method}:{user.subject}"
        return self._anonymous(scope)

    def _anonymous(self, scope: Scope) -> str:
        return self.callers.anonymous(scope)

    def _storage_failed(self, exc: BaseException | None, send: Send) -> Send:
        self.guard.failed(exc, fail_open=self.fail_open)
        if self.fail_open:
            return send
        raise StorageUnavailable("the rate-limit storage is unavailable; try again shortly")

    def _throttled(self, limit: Limit, retry_after: float) -> Throttled:
        seconds = max(1, ceil(retry_after))
        item = limit.item
        window = f"{item.multiples} {item.GRANULARITY.name}" if item.multiples != 1 else item.GRANULARITY.name
        exc = Throttled(
            f"{_LEVEL_TEXT[limit.level]} limit of {item.amount} requests per {window} (tier {limit.tier}) is exhausted",
            code=limit.code,
            retry_after=seconds,
        )
        exc.headers.update(self.headers.refused(limit, seconds))
        return exc

    async def aclose(self) -> None:
        try:
            await self.engine.aclose()
        except Exception as exc:  # closing a connection that is already gone
            logger.debug("closing the throttling storage: %s", exc)

    # ------------------------------------------------------------------ plans

    def plan(self, route: Route | None, tier: Any) -> Plan:
        """The plan of a request on ``route`` by a caller of ``tier`` (as the caller presents it:
        an unknown tier counts under the default one, with a warning; `ANONYMOUS`: the default)."""
        resolved = self.default_tier if tier is ANONYMOUS else self.callers.tier(tier)
        if route is None:
            return self._plan(None, None, resolved)
        return self._plan(route.api, route.resource, resolved)

    def _plan(self, api: ApiConfig | None, resource: ResourceConfig | None, tier: str) -> Plan:
        key = (id(api), id(resource), tier)
        plan = self._plans.get(key)
        if plan is None or plan.api is not api or plan.resource is not resource:
            plan = self._build_plan(api, resource, tier)
            if len(self._plans) >= 4096:
                self._plans.clear()
            self._plans[key] = plan
        return plan

    def with_application(self, plan: Plan, application_tier: str) -> Plan:
        """``plan`` with the application level of ``application_tier`` added, made once per tier (an
        unknown one counts under the default tier, with a warning)."""
        found = plan.applications.get(application_tier)
        if found is not None:
            return found
        if len(plan.applications) >= _MAX_TIERS:
            plan.applications.clear()
        tier = self.tiers[self.callers.tier(application_tier)]
        limits = plan.limits + tuple(self._limits("application", tier, APPLICATION_CODE, None, f"app.{tier.name}"))
        extended = Plan(plan.api, plan.resource, limits, plan.prefix, None, None, None)
        extended.wrap = plan.wrap
        extended.by_application = True
        plan.applications[application_tier] = extended
        return extended

    def _tier(self, name: str | None, where: str) -> Tier:
        tier = self.tiers.get(name or "")
        if tier is None:
            logger.error("%s names tier %r, which is not configured; applying %r", where, name, self.default_tier)
            tier = self.tiers[self.default_tier]
        return tier

    def _build_plan(self, api: ApiConfig | None, resource: ResourceConfig | None, tier_name: str) -> Plan:
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
        one = engine.one(limits, prefix) if isinstance(engine, SynchronousSupport) else None
        take = (
            engine.bind(limits, prefix) if limits and one is None and isinstance(engine, SynchronousSupport) else None
        )
        return Plan(api, resource, tuple(limits), prefix, advertiser, take, one)

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
