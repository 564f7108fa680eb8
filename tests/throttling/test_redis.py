"""Against a real redis-server on a free loopback port: the script, exactness across
nodes, one round trip per request, and outages both ways with automatic recovery."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from limits import RateLimitItemPerMinute
from limits.aio.strategies import STRATEGIES
from redis.asyncio.connection import AbstractConnection

from asgi_apim._keys import ROUTE
from asgi_apim.config import ApiConfig, ResourceConfig
from asgi_apim.identity import Principal
from asgi_apim.routing import Route
from asgi_apim.throttling import ThrottlingMiddleware
from asgi_apim.throttling.engine import Limit, open_storage
from asgi_apim.throttling.redis_script import RedisScriptEngine
from tests.asgi import call
from tests.throttling.redis_server import RedisServer, free_port

ALL = sorted(STRATEGIES)
TIERS = {"Twenty": "20/minute", "Five": "5/minute", "Lots": "1000/minute"}
ITEM = RateLimitItemPerMinute(5)


async def ok(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def caller(name: str, tier: str = "Five") -> Principal:
    return Principal(method="api_key", subject=name, tier=tier, throttle_key=f"apikey:{name}")


async def get(mw: Any, user: Principal, route: Route | None = None, method: str = "GET") -> Any:
    extra: dict[str, Any] = {"user": user}
    if route is not None:
        extra[ROUTE] = route
    return await call(mw, method, "/pets/1", **extra)


@pytest.mark.parametrize("strategy", ALL)
async def test_script_keeps_limits_key_layout(strategy: str, redis_server: RedisServer) -> None:
    """Counts taken by our one-round-trip script read the same through limits' own strategy."""
    storage = open_storage(redis_server.url)
    engine = RedisScriptEngine(storage, strategy)  # type: ignore[arg-type]
    reference = STRATEGIES[strategy](storage)
    limit = Limit(level="subscription", tier="Five", item=ITEM, code=900804, policy="Five", report=True)
    for n in range(1, 6):
        verdict = await engine.acquire([limit], ["k"], True)
        assert verdict.failed is None
        remaining, reset = verdict.windows
        assert remaining == 5 - n
        assert 0 < reset <= 60
        stats = await reference.get_window_stats(ITEM, "k")
        assert abs(stats.remaining - remaining) <= (1 if strategy == "sliding-window-counter" else 0)
    assert not await reference.test(ITEM, "k")
    refused = await engine.acquire([limit], ["k"], True)
    assert refused.failed is limit and 1 <= refused.retry_after <= 60
    assert await reference.hit(ITEM, "other") and (await engine.acquire([limit], ["other"], False)).failed is None
    await engine.aclose()


@pytest.mark.parametrize("strategy", ALL)
async def test_two_nodes_share_one_count_exactly(strategy: str, redis_server: RedisServer) -> None:
    nodes = [ThrottlingMiddleware(ok, tiers=TIERS, storage=redis_server.url, strategy=strategy) for _ in range(2)]
    alice = caller("alice", "Twenty")
    results = await asyncio.gather(*(get(nodes[i % 2], alice) for i in range(60)))
    assert sorted(r.status for r in results).count(200) == 20
    assert {r.status for r in results} == {200, 429}
    assert (await get(nodes[0], caller("bob", "Twenty"))).status == 200
    for node in nodes:
        await node.aclose()


@pytest.fixture
def round_trips(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    sent = [0]
    original = AbstractConnection.send_packed_command

    async def counting(self: AbstractConnection, command: Any, check_health: bool = True) -> None:
        sent[0] += 1
        await original(self, command, check_health)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", counting)
    return sent


@pytest.mark.parametrize("strategy", ALL)
async def test_one_round_trip_per_request_for_all_levels(
    strategy: str, redis_server: RedisServer, round_trips: list[int]
) -> None:
    resource = ResourceConfig(path="/pets/{id}", methods=("GET",), tier="Lots")
    api = ApiConfig(name="pets", context="/pets", tier="Lots", resources=(resource,))
    mw = ThrottlingMiddleware(ok, tiers=TIERS, storage=redis_server.url, strategy=strategy)
    route = Route(api=api, resource=resource)
    await get(mw, caller("alice", "Twenty"), route)  # connects, loads the script
    before = round_trips[0]
    results = [await get(mw, caller("alice", "Twenty"), route) for _ in range(10)]
    assert [r.status for r in results] == [200] * 10
    assert '"Twenty";r=9;' in results[-1].headers["ratelimit"]  # three levels counted, headers filled
    assert round_trips[0] - before == 10
    await mw.aclose()


async def _timed(mw: Any, user: Principal) -> tuple[int, float]:
    t0 = time.monotonic()
    result = await get(mw, user)
    return result.status, time.monotonic() - t0


async def _recover(mw: Any, user: Principal, timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = await get(mw, user)
        if "ratelimit" in result.headers:
            return result
        await asyncio.sleep(0.1)
    raise AssertionError("throttling did not come back with redis")


async def test_outage_fail_open(redis_server: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    mw = ThrottlingMiddleware(ok, tiers=TIERS, storage=redis_server.url, fail_open=True)
    alice = caller("alice")
    assert (await get(mw, alice)).status == 200
    redis_server.stop()  # killed mid-test
    with caplog.at_level(logging.WARNING, "asgi_apim.throttling"):
        during = [await _timed(mw, alice) for _ in range(10)]
    assert [status for status, _ in during] == [200] * 10  # more than the tier allows: let through
    assert max(elapsed for _, elapsed in during) < 1.5
    assert len([r for r in caplog.records if "unavailable" in r.getMessage()]) == 1
    redis_server.start()  # same port, empty
    back = await _recover(mw, alice)
    assert back.status == 200 and back.headers["ratelimit"].startswith('"Five";r=4;')  # redis started empty
    assert [(await get(mw, alice)).status for _ in range(5)] == [200, 200, 200, 200, 429]
    await mw.aclose()


async def test_outage_fail_closed(redis_server: RedisServer) -> None:
    mw = ThrottlingMiddleware(ok, tiers=TIERS, storage=redis_server.url, fail_open=False)
    alice = caller("alice")
    assert (await get(mw, alice)).status == 200
    redis_server.stop()  # killed mid-test
    for _ in range(3):
        result = await get(mw, alice)
        assert result.status == 503 and result.json()["status"] == 503
        assert result.headers["content-type"] == "application/problem+json"
    redis_server.start()  # same port, empty
    back = await _recover(mw, alice)
    assert back.status == 200
    await mw.aclose()


@pytest.fixture
def black_hole() -> Iterator[int]:
    """A TCP port that accepts connections and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", free_port()))
    sock.listen(16)
    yield sock.getsockname()[1]
    sock.close()


@pytest.mark.parametrize("fail_open", [True, False])
async def test_an_unresponsive_storage_never_hangs_a_request(black_hole: int, fail_open: bool) -> None:
    mw = ThrottlingMiddleware(ok, tiers=TIERS, storage=f"redis://127.0.0.1:{black_hole}/0", fail_open=fail_open)
    status, elapsed = await _timed(mw, caller("alice"))
    assert status == (200 if fail_open else 503)
    assert elapsed < 2.0
    status, elapsed = await _timed(mw, caller("alice"))  # the guard answers at once while the storage is away
    assert status == (200 if fail_open else 503) and elapsed < 0.1


@pytest.mark.parametrize("fail_open", [True, False])
async def test_a_cluster_uri_without_a_cluster_is_a_storage_failure_never_a_500(
    redis_server: RedisServer, fail_open: bool
) -> None:
    # a plain Redis, and no Redis at all: redis-py's cluster client raises RedisClusterException, no RedisError
    for uri in (f"redis+cluster://127.0.0.1:{redis_server.port}", f"redis+cluster://127.0.0.1:{free_port()}"):
        mw = ThrottlingMiddleware(ok, tiers=TIERS, storage=uri, fail_open=fail_open)
        result = await get(mw, caller("alice"))
        assert result.status == (200 if fail_open else 503), uri
        if not fail_open:
            assert result.json()["code"] == 900899
        await mw.aclose()


@pytest.mark.parametrize(("before", "after"), [("fixed-window", "moving-window"), ("moving-window", "fixed-window")])
async def test_a_strategy_changed_on_a_live_redis_starts_the_callers_counts_again(
    redis_server: RedisServer, before: str, after: str
) -> None:
    # the two strategies keep a caller's count under one key name, as a string and as a list
    old = ThrottlingMiddleware(ok, tiers=TIERS, storage=redis_server.url, strategy=before, fail_open=False)
    alice, bob = caller("alice"), caller("bob")
    assert [(await get(old, alice)).status for _ in range(2)] == [200, 200]
    await old.aclose()
    new = ThrottlingMiddleware(ok, tiers=TIERS, storage=redis_server.url, strategy=after, fail_open=False)
    assert [(await get(new, alice)).status for _ in range(6)] == [200] * 5 + [429]  # its count under the new layout
    assert (await get(new, bob)).status == 200  # and nobody else is refused meanwhile
    assert not new.limiter.guard.down
    await new.aclose()
