from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
from limits.errors import StorageError

from asgi_apim._keys import ROUTE
from asgi_apim.config import ApiConfig, ResourceConfig
from asgi_apim.errors import StorageUnavailable
from asgi_apim.identity import ANONYMOUS, Principal
from asgi_apim.routing import PUBLIC, Route
from asgi_apim.throttling import LazyMemoryStorage, ThrottlingMiddleware
from tests.asgi import Result, call
from tests.throttling.conftest import Clock

STRATEGIES = ("fixed-window", "moving-window", "sliding-window-counter")
TIERS = {
    "Tiny": "3/2 second",
    "Small": "3/minute",
    "Pair": "2/minute",
    "Lots": "100/minute",
    "Burst": "2/second;4/hour",
    "Second": "2/1 second",
}
DELETE_ONE = ResourceConfig(path="/pets/{id}", methods=("DELETE",), tier="Pair")
PETS = ApiConfig(name="pets", context="/pets", tier="Unlimited", resources=(DELETE_ONE,))
SHARED = ApiConfig(name="shared", context="/shared", tier="Pair")
BIRDS = ApiConfig(name="birds", context="/birds")


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"x-app", b"yes")]})
    await send({"type": "http.response.body", "body": b"ok"})


def cert_caller(name: str, tier: str = "Small", api: str = "pets") -> Principal:
    return Principal(
        method="mutual_ssl", subject=f"CN={name}", api=api, tier=tier, throttle_key=f"cert:{name}-spki-sha256"
    )


def middleware(**kw: Any) -> ThrottlingMiddleware:
    return ThrottlingMiddleware(app, tiers=kw.pop("tiers", TIERS), **kw)


async def get(
    mw: Any,
    user: Any = None,
    route: Route | None = None,
    method: str = "GET",
    path: str = "/pets/1",
    client: tuple[str, int] = ("203.0.113.5", 4000),
) -> Result:
    extra: dict[str, Any] = {}
    if user is not None:
        extra["user"] = user
    if route is not None:
        extra[ROUTE] = route
    return await call(mw, method, path, client=client, **extra)


def pets(resource: ResourceConfig | None = None) -> Route:
    return Route(api=PETS, resource=resource)


@pytest.mark.parametrize("strategy", STRATEGIES)
async def test_tier_exhaustion_and_reset(strategy: str, clock: Clock) -> None:
    mw = middleware(strategy=strategy)
    alice = cert_caller("alice", "Tiny")
    assert [(await get(mw, alice, pets())).status for _ in range(4)] == [200, 200, 200, 429]
    clock.advance(4.01)  # past the window (and, for the sliding counter, past its previous window too)
    assert [(await get(mw, alice, pets())).status for _ in range(4)] == [200, 200, 200, 429]


async def test_each_certificate_has_its_own_count(clock: Clock) -> None:
    mw = middleware()
    alice, bob = cert_caller("alice"), cert_caller("bob")
    assert [(await get(mw, alice, pets())).status for _ in range(4)] == [200, 200, 200, 429]
    assert (await get(mw, bob, pets())).status == 200
    renewed = Principal(
        method="mutual_ssl", subject="CN=alice (renewed)", tier="Small", throttle_key=alice.throttle_key
    )
    assert (await get(mw, renewed, pets())).status == 429  # same public key: same count


async def test_a_caller_is_counted_per_api(clock: Clock) -> None:
    mw = middleware()
    alice = cert_caller("alice")
    assert [(await get(mw, alice, pets())).status for _ in range(4)] == [200, 200, 200, 429]
    assert (await get(mw, alice, Route(api=BIRDS), path="/birds")).status == 200


async def test_api_level_limit_is_shared_by_every_caller(clock: Clock) -> None:
    mw = middleware()
    route = Route(api=SHARED)
    assert (await get(mw, cert_caller("a", "Lots"), route, path="/shared")).status == 200
    assert (await get(mw, cert_caller("b", "Lots"), route, path="/shared")).status == 200
    refused = await get(mw, cert_caller("c", "Lots"), route, path="/shared")
    assert refused.status == 429
    assert refused.json()["code"] == 900800
    assert "API" in refused.json()["detail"]
    assert refused.headers["ratelimit-policy"] == '"api.Pair";q=2;w=60'


async def test_a_refused_request_charges_no_level(clock: Clock) -> None:
    api = ApiConfig(name="fast", context="/fast", tier="Second")
    mw = middleware()
    alice, route = cert_caller("alice", "Lots"), Route(api=api)
    assert [(await get(mw, alice, route, path="/fast")).headers.get("ratelimit") for _ in range(2)] == [
        '"Lots";r=99;t=60',
        '"Lots";r=98;t=60',
    ]
    assert (await get(mw, alice, route, path="/fast")).status == 429  # the API's 2/second
    clock.advance(1.01)
    assert (await get(mw, alice, route, path="/fast")).headers["ratelimit"] == '"Lots";r=97;t=59'


async def test_resource_level_limit(clock: Clock) -> None:
    mw = middleware()
    route = pets(DELETE_ONE)
    assert (await get(mw, cert_caller("a", "Lots"), route, "DELETE")).status == 200
    assert (await get(mw, cert_caller("b", "Lots"), route, "DELETE")).status == 200
    refused = await get(mw, cert_caller("c", "Lots"), route, "DELETE")
    assert (refused.status, refused.json()["code"]) == (429, 900802)
    assert refused.headers["ratelimit-policy"] == '"resource.Pair";q=2;w=60'
    assert (await get(mw, cert_caller("c", "Lots"), pets())).status == 200  # another resource of the API


async def test_burst_and_quota_codes(clock: Clock) -> None:
    mw = middleware()
    alice = cert_caller("alice", "Burst")
    assert [(await get(mw, alice, pets())).status for _ in range(2)] == [200, 200]
    burst = await get(mw, alice, pets())
    assert (burst.status, burst.json()["code"], burst.headers["retry-after"]) == (429, 900807, "1")
    clock.advance(1.01)
    assert [(await get(mw, alice, pets())).status for _ in range(2)] == [200, 200]
    clock.advance(1.01)
    quota = await get(mw, alice, pets())
    assert (quota.status, quota.json()["code"]) == (429, 900804)
    assert 3590 <= int(quota.headers["retry-after"]) <= 3600


async def test_429_is_a_problem_document_with_retry_after(clock: Clock) -> None:
    mw = middleware()
    alice = cert_caller("alice")
    for _ in range(3):
        await get(mw, alice, pets())
    clock.advance(10)
    refused = await get(mw, alice, pets())
    assert refused.status == 429
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.headers["retry-after"] == "50"
    body = refused.json()
    assert body["status"] == 429 and body["code"] == 900804 and body["title"] == "Message throttled out"
    assert "3 requests per minute" in body["detail"] and "Small" in body["detail"]
    assert "spki" not in refused.body.decode() and "x-app" not in refused.headers


async def test_ratelimit_headers(clock: Clock) -> None:
    mw = middleware()
    first = await get(mw, cert_caller("alice"), pets())
    assert first.headers["x-app"] == "yes"
    assert first.headers["ratelimit-policy"] == '"Small";q=3;w=60'
    assert first.headers["ratelimit"] == '"Small";r=2;t=60'
    clock.advance(15)
    assert (await get(mw, cert_caller("alice"), pets())).headers["ratelimit"] == '"Small";r=1;t=45'


async def test_ratelimit_headers_list_every_limit_of_a_tier(clock: Clock) -> None:
    result = await get(middleware(), cert_caller("alice", "Burst"), pets())
    assert result.headers["ratelimit-policy"] == '"Burst.1s";q=2;w=1, "Burst.3600s";q=4;w=3600'
    assert result.headers["ratelimit"] == '"Burst.1s";r=1;t=1, "Burst.3600s";r=3;t=3600'


async def test_shared_levels_are_not_advertised_on_success(clock: Clock) -> None:
    result = await get(middleware(), cert_caller("alice"), Route(api=SHARED), path="/shared")
    assert result.headers["ratelimit-policy"] == '"Small";q=3;w=60'


async def test_x_ratelimit_headers(clock: Clock) -> None:
    mw = middleware(headers="x-ratelimit")
    alice = cert_caller("alice")
    ok = await get(mw, alice, pets())
    assert (ok.headers["x-ratelimit-limit"], ok.headers["x-ratelimit-remaining"], ok.headers["x-ratelimit-reset"]) == (
        "3",
        "2",
        "60",
    )
    assert "ratelimit" not in ok.headers
    for _ in range(2):
        await get(mw, alice, pets())
    refused = await get(mw, alice, pets())
    assert (
        refused.headers["x-ratelimit-remaining"],
        refused.headers["x-ratelimit-reset"],
        refused.headers["retry-after"],
    ) == ("0", "60", "60")


async def test_x_ratelimit_reports_the_most_nearly_exhausted_limit(clock: Clock) -> None:
    mw = middleware(headers="x-ratelimit")
    ok = await get(mw, cert_caller("alice", "Burst"), pets())
    assert (ok.headers["x-ratelimit-limit"], ok.headers["x-ratelimit-remaining"]) == ("2", "1")


async def test_headers_off(clock: Clock) -> None:
    mw = middleware(headers="none")
    alice = cert_caller("alice")
    oks = [await get(mw, alice, pets()) for _ in range(3)]
    assert all(not any("ratelimit" in h for h in r.headers) for r in oks)
    refused = await get(mw, alice, pets())
    assert refused.status == 429 and refused.headers["retry-after"] == "60"
    assert not any("ratelimit" in h for h in refused.headers)


class ExplodingStorage(LazyMemoryStorage):
    calls = 0
    broken = True

    def _calling(self) -> None:
        type(self).calls += 1
        if self.broken:
            raise StorageError(ConnectionError("storage away"))

    def acquire_all(self, strategy: str, requests: Any) -> list[float]:
        self._calling()
        return super().acquire_all(strategy, requests)

    def charger(self, strategy: str) -> Callable[[str, int, int, float], list[float]]:
        one = super().charger(strategy)

        def charge(key: str, limit: int, expiry: int, now: float) -> list[float]:
            self._calling()
            return one(key, limit, expiry, now)

        return charge


async def test_unlimited_costs_no_storage_call() -> None:
    storage = ExplodingStorage()
    ExplodingStorage.calls = 0
    mw = middleware(storage=storage, fail_open=False)
    result = await get(mw, cert_caller("alice", "Unlimited"), pets())
    assert result.status == 200 and ExplodingStorage.calls == 0
    assert "ratelimit" not in result.headers


async def test_standalone_without_route_applies_only_the_caller_tier(clock: Clock) -> None:
    mw = middleware()
    alice = cert_caller("alice")
    assert [(await get(mw, alice, path="/anything")).status for _ in range(4)] == [200, 200, 200, 429]


async def test_anonymous_and_public_callers_counted_per_ip(clock: Clock) -> None:
    mw = middleware(tiers={"Unauthenticated": "2/minute"})
    one, two = ("198.51.100.1", 1), ("198.51.100.2", 1)
    assert [(await get(mw, ANONYMOUS, PUBLIC, path="/health", client=one)).status for _ in range(3)] == [200, 200, 429]
    assert (await get(mw, None, None, path="/health", client=one)).status == 429
    refused = await get(mw, ANONYMOUS, PUBLIC, path="/health", client=one)
    assert refused.json()["code"] == 900804 and refused.headers["ratelimit-policy"] == '"Unauthenticated";q=2;w=60'
    assert (await get(mw, ANONYMOUS, PUBLIC, path="/health", client=two)).status == 200


async def test_storage_away_fail_open_lets_requests_through_and_logs_once(caplog: pytest.LogCaptureFixture) -> None:
    ExplodingStorage.calls = 0
    mw = middleware(storage=ExplodingStorage(), fail_open=True)
    with caplog.at_level(logging.WARNING, "asgi_apim.throttling"):
        results = [await get(mw, cert_caller("alice"), pets()) for _ in range(5)]
    assert [r.status for r in results] == [200] * 5
    assert not any("ratelimit" in h for h in results[0].headers)
    assert ExplodingStorage.calls == 1  # retried only after the guard's interval, not on every request
    assert len([r for r in caplog.records if "unavailable" in r.getMessage()]) == 1


async def test_storage_away_fail_closed_answers_503(clock: Clock) -> None:
    mw = middleware(storage=ExplodingStorage(), fail_open=False)
    for _ in range(2):
        result = await get(mw, cert_caller("alice"), pets())
        assert result.status == 503
        assert result.headers["content-type"] == "application/problem+json"
        assert result.json()["code"] == 900899 == StorageUnavailable.code  # not 900807, the burst code


async def test_storage_recovers_by_itself(caplog: pytest.LogCaptureFixture) -> None:
    storage = ExplodingStorage()
    mw = middleware(storage=storage, fail_open=False)
    mw.limiter.guard.retry_interval = 0.0
    assert (await get(mw, cert_caller("alice"), pets())).status == 503
    storage.broken = False
    with caplog.at_level(logging.WARNING, "asgi_apim.throttling"):
        back = await get(mw, cert_caller("alice"), pets())
    assert back.status == 200 and back.headers["ratelimit"].startswith('"Small";r=2;')
    assert any("back" in r.getMessage() for r in caplog.records)


async def test_websocket_handshake_is_throttled(clock: Clock) -> None:
    mw = middleware(tiers={"Unauthenticated": "1/minute"})
    sent: list[dict[str, Any]] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "websocket.accept"})

    mw.app = inner

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    for _ in range(2):
        await mw({"type": "websocket", "path": "/ws", "headers": [], "client": ("198.51.100.1", 1)}, receive, send)
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.close"]
    assert sent[1]["code"] == 1008


async def test_lifespan_passes_through() -> None:
    seen: list[str] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        seen.append((await receive())["type"])
        seen.append((await receive())["type"])

    mw = ThrottlingMiddleware(inner, tiers={})
    messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])

    async def receive() -> dict[str, Any]:
        return next(messages)

    async def send(message: dict[str, Any]) -> None:
        return None

    await mw({"type": "lifespan"}, receive, send)
    assert seen == ["lifespan.startup", "lifespan.shutdown"]
