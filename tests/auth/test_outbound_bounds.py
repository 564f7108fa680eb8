"""Key sources and introspection against misbehaving servers on 127.0.0.1 (tests/auth/hostile.py):
every outbound call has a total deadline and a size limit, a request for a new key waits at most
``jwks_wait``, requests for known keys never wait, and introspection is cached, shared and capped."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import tracemalloc
from collections.abc import Coroutine
from typing import Any

import pytest

from asgi_apim.auth.introspection import Introspector
from asgi_apim.auth.jwt import JWTIssuer, OAuth2Authenticator
from asgi_apim.config import KeyManagerConfig
from asgi_apim.errors import InvalidCredentials
from tests.auth.hostile import Hostile
from tests.auth.idp import API, ISSUER, claims, rsa_key

K1, K2 = rsa_key("k1"), rsa_key("k2", second=True)
MiB = 1024 * 1024


def jwt_auth(hostile: Hostile, **km: Any) -> OAuth2Authenticator:
    hostile.jwks = {"keys": [K1.jwk()]}
    settings: dict[str, Any] = {"jwks_min_refetch_interval": 0, "jwks_wait": 1.0, "fetch_timeout": 3.0, **km}
    cfg = KeyManagerConfig(name="idp", issuer=ISSUER, jwks_url=f"{hostile.url}/jwks.json", **settings)
    return OAuth2Authenticator([JWTIssuer.from_config(cfg)])


async def timed(auth: OAuth2Authenticator, token: str) -> tuple[float, str]:
    began = time.monotonic()
    try:
        outcome = (await auth.authenticate(token, API, {})).subject
    except InvalidCredentials as exc:
        outcome = f"401 {exc.detail}"
    return time.monotonic() - began, outcome


async def known_kid_latencies(auth: OAuth2Authenticator, until: asyncio.Future[Any]) -> list[float]:
    """Distinct tokens signed with the known key (each verified, none from the cache) until ``until`` is done."""
    seen, i = [], 0
    while not until.done():
        i += 1
        took, outcome = await timed(auth, K1.sign(claims(sub=f"known-{i}")))
        assert outcome == f"known-{i}"
        seen.append(took)
        await asyncio.sleep(0.02)
    return seen


@pytest.mark.parametrize("mode", ["drip", "hang"])
async def test_a_new_kid_gets_its_401_within_jwks_wait_and_known_kids_never_wait(hostile: Hostile, mode: str) -> None:
    auth = jwt_auth(hostile)
    await auth.start()
    try:
        hostile.mode, hostile.drip_interval = mode, 2.0  # one byte every 2 s: httpx's per-read timeout never trips
        new_kid = [timed(auth, K2.sign(claims(sub=f"new-{i}"))) for i in range(16)]
        unknown = asyncio.ensure_future(asyncio.gather(*new_kid))
        known = await known_kid_latencies(auth, unknown)
        answers = await unknown
        assert all(outcome == "401 no signing key of this issuer matches the token" for _, outcome in answers)
        assert max(took for took, _ in answers) < 1.0 + 0.5, answers  # jwks_wait, and a busy machine's slack
        assert len(known) >= 10 and max(known) < 0.25, known
        assert hostile.requests == 2  # the start-up fetch, then one refetch shared by all 16
        # the refetch outlives its waiters, up to fetch_timeout; no second one starts meanwhile
        assert (await timed(auth, K2.sign(claims())))[1].startswith("401")
        assert hostile.requests == 2
        # it ends at its deadline, keeping the last good keys; the issuer recovers with the new key
        await asyncio.sleep(3.0 - 1.0 + 0.3)
        hostile.mode, hostile.jwks = "ok", {"keys": [K1.jwk(), K2.jwk()]}
        assert (await timed(auth, K2.sign(claims(sub="rotated"))))[1] == "rotated"
        assert (await timed(auth, K1.sign(claims(sub="still"))))[1] == "still"
    finally:
        await auth.aclose()


async def test_the_min_refetch_interval_holds_while_waiting(hostile: Hostile) -> None:
    auth = jwt_auth(hostile, jwks_min_refetch_interval=30.0)
    await auth.start()
    try:
        began = time.monotonic()
        took, outcome = await timed(auth, K2.sign(claims()))
        assert outcome.startswith("401") and took < 0.1  # fetched at start-up: no refetch, no wait
        assert hostile.requests == 1 and time.monotonic() - began < 0.2
    finally:
        await auth.aclose()


@pytest.mark.parametrize("mode", ["big", "big-chunked"])
async def test_a_50_mib_jwks_is_refused_with_bounded_memory(
    hostile: Hostile, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    auth = jwt_auth(hostile)
    source = auth.issuers[ISSUER].keys
    assert source is not None
    await auth.start()
    try:
        hostile.mode = mode
        tracemalloc.start()
        try:
            with caplog.at_level(logging.WARNING, logger="asgi_apim.auth.jwks"):
                began = time.monotonic()
                assert await source.refresh() is False
                took = time.monotonic() - began
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 4 * MiB, f"{peak / MiB:.1f} MiB traced while refusing a 50 MiB JWKS"
        assert took < 2.0
        assert "over the limit of 1048576" in caplog.text and "keeping 1 key(s)" in caplog.text
        assert (await timed(auth, K1.sign(claims())))[1] == "alice"
    finally:
        await auth.aclose()


def introspection(hostile: Hostile, **km: Any) -> tuple[OAuth2Authenticator, Introspector]:
    hostile.mode = "introspect"
    settings: dict[str, Any] = {"fetch_timeout": 2.0, **km}
    cfg = KeyManagerConfig(name="opaque", issuer=ISSUER, introspection_url=f"{hostile.url}/introspect", **settings)
    introspector = Introspector(cfg)
    return OAuth2Authenticator([], [introspector]), introspector


async def run_workers(auth: OAuth2Authenticator, tokens: list[str], concurrency: int) -> list[str]:
    queue = iter(tokens)
    outcomes: list[str] = []

    async def worker() -> None:
        for token in queue:
            outcomes.append((await timed(auth, token))[1])
            await asyncio.sleep(0)  # a client's next request comes over a socket: let the loop run

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return outcomes


async def test_one_bogus_token_repeated_costs_one_call(hostile: Hostile) -> None:
    auth, _ = introspection(hostile)
    hostile.delay = 0.05
    try:
        outcomes = await run_workers(auth, ["bogus-opaque-token"] * 10_000, 64)
        assert outcomes == ["401 token is not active"] * 10_000
        assert hostile.calls == 1  # the first 64 share one call; the rest find the refusal cached
    finally:
        await auth.aclose()


async def test_distinct_bogus_tokens_never_exceed_the_cap(hostile: Hostile, caplog: pytest.LogCaptureFixture) -> None:
    auth, introspector = introspection(hostile, introspection_max_concurrency=32)
    hostile.delay = 0.005
    try:
        with caplog.at_level(logging.WARNING, logger="asgi_apim.auth.introspection"):
            began = time.monotonic()
            outcomes = await run_workers(auth, [f"bogus-{i}" for i in range(10_000)], 64)
            took = time.monotonic() - began
        assert hostile.max_in_flight <= 32 and introspector.in_flight == 0
        assert set(outcomes) <= {
            "401 token is not active",
            "401 token could not be checked: the introspection endpoint failed",
        }
        assert hostile.calls == outcomes.count("401 token is not active") and hostile.calls >= 32
        assert outcomes.count("401 token could not be checked: the introspection endpoint failed") > 0  # the cap held
        busy = [r for r in caplog.records if "calls in flight" in r.getMessage()]
        assert 1 <= len(busy) <= took + 1  # at most one line a second
        assert all("bogus-" not in r.getMessage() for r in caplog.records)
    finally:
        await auth.aclose()


async def test_a_lookup_beyond_the_cap_is_refused_at_once(hostile: Hostile) -> None:
    auth, introspector = introspection(hostile, introspection_max_concurrency=2, fetch_timeout=1.0)
    hostile.delay = 10.0  # slower than the deadline
    try:
        slow = [asyncio.ensure_future(timed(auth, f"slow-{i}")) for i in range(2)]
        await asyncio.sleep(0.2)
        assert introspector.in_flight == 2
        took, outcome = await timed(auth, "one-too-many")
        assert outcome == "401 token could not be checked: the introspection endpoint failed" and took < 0.2
        took, outcome = await timed(auth, "slow-0")  # the same token as one in flight: it shares the call
        assert outcome.startswith("401") and 0.5 < took < 1.0 + 0.3
        for took, outcome in await asyncio.gather(*slow):
            assert outcome == "401 token could not be checked: the introspection endpoint failed"
            assert took < 1.0 + 0.3  # fetch_timeout
        assert hostile.calls == 2 and introspector.in_flight == 0
    finally:
        await auth.aclose()


async def test_a_hanging_endpoint_is_cut_off_at_fetch_timeout(hostile: Hostile) -> None:
    auth, _ = introspection(hostile, fetch_timeout=0.5)
    hostile.mode = "hang"
    try:
        took, outcome = await timed(auth, "opaque-token")
        assert outcome == "401 token could not be checked: the introspection endpoint failed"
        assert 0.45 < took < 1.3
    finally:
        await auth.aclose()


async def test_a_caller_that_goes_away_leaves_the_shared_call_to_the_others(hostile: Hostile) -> None:
    auth, introspector = introspection(hostile)
    hostile.delay = 0.3
    try:
        first = asyncio.ensure_future(timed(auth, "shared-token"))
        await asyncio.sleep(0.05)
        second = asyncio.ensure_future(timed(auth, "shared-token"))
        await asyncio.sleep(0.05)
        first.cancel()
        assert (await second)[1] == "401 token is not active"
        assert hostile.calls == 1 and introspector.in_flight == 0
    finally:
        await auth.aclose()


async def test_refusals_are_remembered_by_a_hash_for_the_negative_ttl(hostile: Hostile) -> None:
    auth, introspector = introspection(hostile, introspection_negative_ttl=0.3)
    try:
        for _ in range(3):
            assert (await timed(auth, "revoked-token"))[1] == "401 token is not active"
        assert hostile.calls == 1
        assert all(isinstance(k, bytes) and len(k) == 32 for k in introspector._refused._data)  # SHA-256, not the token
        await asyncio.sleep(0.35)
        assert (await timed(auth, "revoked-token"))[1] == "401 token is not active"
        assert hostile.calls == 2
    finally:
        await auth.aclose()


def run_and_drop(work: Coroutine[Any, Any, None]) -> None:
    """Run ``work`` on a loop that is then closed with its tasks still pending (never cancelled)."""
    loop = asyncio.new_event_loop()
    loop.run_until_complete(work)
    loop.close()


@pytest.mark.filterwarnings("ignore::RuntimeWarning", "ignore::pytest.PytestUnraisableExceptionWarning")
def test_calls_left_in_flight_by_an_ended_event_loop_do_not_count(hostile: Hostile) -> None:
    auth, introspector = introspection(hostile, introspection_max_concurrency=1)
    hostile.mode = "hang"

    async def abandon() -> None:  # a loop that ends with a call in flight, as a test client's does
        asyncio.ensure_future(timed(auth, "left-behind"))
        await asyncio.sleep(0.1)

    run_and_drop(abandon())
    hostile.mode = "introspect"

    async def again() -> str:
        try:
            return (await timed(auth, "left-behind"))[1]
        finally:
            with contextlib.suppress(RuntimeError):  # httpx cannot close the ended loop's connection from this one
                await auth.aclose()

    assert asyncio.run(again()) == "401 token is not active"
    assert introspector.in_flight == 0


@pytest.mark.filterwarnings("ignore::RuntimeWarning", "ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_refetch_left_in_flight_by_an_ended_event_loop_is_started_again(hostile: Hostile) -> None:
    auth = jwt_auth(hostile)
    hostile.mode = "hang"

    async def abandon() -> None:
        asyncio.ensure_future(timed(auth, K1.sign(claims())))
        await asyncio.sleep(0.1)

    run_and_drop(abandon())
    hostile.mode = "ok"

    async def again() -> str:
        try:
            return (await timed(auth, K1.sign(claims(sub="later"))))[1]
        finally:
            with contextlib.suppress(RuntimeError):  # httpx cannot close the ended loop's connection from this one
                await auth.aclose()

    assert asyncio.run(again()) == "later"
