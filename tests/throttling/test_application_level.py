"""The application level (900803): a token's application tier, counted per application and user
across APIs, checked with the other levels (all or nothing), in memory, over `limits`' async
storages and on a real Redis."""

from __future__ import annotations

from typing import Any

import pytest

from asgi_apim._keys import ROUTE
from asgi_apim.config import ApiConfig
from asgi_apim.identity import Principal
from asgi_apim.routing import Route
from asgi_apim.throttling import ThrottlingMiddleware
from asgi_apim.throttling.limiter import ANONYMOUS, Limiter
from tests.asgi import call
from tests.throttling.redis_server import RedisServer

TIERS = {"Two": "2/minute", "Three": "3/minute", "Lots": "1000/minute"}
PETS = Route(api=ApiConfig(name="pets", context="/pets"), resource=None)
CATS = Route(api=ApiConfig(name="cats", context="/cats"), resource=None)


async def ok(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def user(subject: str, tier: str = "Lots", app_tier: str | None = "Three", app: str = "shop") -> Principal:
    return Principal(
        method="api_key",
        subject=subject,
        tier=tier,
        throttle_key=f"app:wso2:{app}",
        application_tier=app_tier,
        application_key=f"wso2|{app}|{subject}" if app_tier else "",
    )


async def codes(mw: ThrottlingMiddleware, who: Principal, routes: list[Route]) -> list[tuple[int, int | None]]:
    out = []
    for route in routes:
        r = await call(mw, "GET", "/x", user=who, **{ROUTE: route})
        out.append((r.status, r.json().get("code") if r.status != 200 else None))
    return out


@pytest.mark.parametrize("storage", ["memory://", "async+memory://"])
async def test_application_tier_counts_across_apis(storage: str) -> None:
    mw = ThrottlingMiddleware(ok, tiers=TIERS, storage=storage)
    alice = user("alice")
    got = await codes(mw, alice, [PETS, CATS, PETS, CATS])
    assert got == [(200, None), (200, None), (200, None), (429, 900803)]
    assert (await codes(mw, user("bob"), [PETS]))[0][0] == 200  # another user of the application: its own count


@pytest.mark.parametrize("storage", ["memory://", "async+memory://"])
async def test_all_or_nothing_with_the_subscription_level(storage: str) -> None:
    """A request the subscription level refuses is not counted by the application level."""
    mw = ThrottlingMiddleware(ok, tiers=TIERS, storage=storage)
    carol = user("carol", tier="Two", app_tier="Three")
    got = await codes(mw, carol, [PETS, PETS, PETS])
    assert got[2] == (429, 900804)  # the subscription level first, as WSO2 reports it
    assert (await codes(mw, carol, [CATS]))[0] == (200, None)  # the third PETS took nothing from the application
    assert (await codes(mw, carol, [CATS]))[0] == (429, 900803)


async def test_without_an_application_tier_nothing_changes() -> None:
    mw = ThrottlingMiddleware(ok, tiers=TIERS)
    dave = user("dave", tier="Two", app_tier=None)
    assert await codes(mw, dave, [PETS, PETS, PETS]) == [(200, None), (200, None), (429, 900804)]


async def test_an_unknown_application_tier_counts_under_the_default() -> None:
    limiter = Limiter(tiers=TIERS, default_tier="Two")
    plan = limiter.plans_for(PETS)["Lots"]
    extended = limiter.with_application(plan, "Platinum")
    assert [limit.tier for limit in extended.limits if limit.level == "application"] == ["Two"]
    assert limiter.with_application(plan, "Platinum") is extended
    assert limiter.plans_for(PETS)[ANONYMOUS].applications == {}


async def test_on_redis(redis_server: RedisServer) -> None:
    mw = ThrottlingMiddleware(ok, tiers=TIERS, storage=redis_server.url)
    erin = user("erin")
    got = await codes(mw, erin, [PETS, CATS, PETS, CATS])
    assert got == [(200, None), (200, None), (200, None), (429, 900803)]
    await mw.aclose()
