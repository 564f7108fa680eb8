"""Throttling in-process: our stack against a bare endpoint, asgi-ratelimit and slowapi, and 100k idle keys.

    python bench/bench_throttling.py [--quick]      (pip install -e '.[bench]' for the peers)

Part 1, round-robin in one run (bench/harness.py): a bare Starlette endpoint;
ThrottlingMiddleware alone (a Gold caller, memory storage, headers on); the
whole stack from a configuration (cached certificate from the proxy header,
a tier limit in memory), with RateLimit headers (the default: the ≤ 1.3×
target's row) and without them (``headers = "none"``); the same stack with an
unlimited tier (throttling costs nothing); asgi-ratelimit's RateLimitMiddleware
(a pure ASGI rate limiter, memory backend) and slowapi's SlowAPIMiddleware
(BaseHTTPMiddleware) and SlowAPIASGIMiddleware, for rate limiting alone. The
whole stack's overhead over bare is compared with each peer's.

Part 2, the many-keys trap: the same middleware beside no key and beside
100k live keys, on our storage (``memory://``) and on ``limits``' own
(``async+memory://``), whose expiry task walks every key. Here every request
yields to the event loop once (``asyncio.sleep(0)``), as under a server, so
background tasks get the loop the way they would under uvicorn.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness import Variant, sample, scope_factory, table  # noqa: E402
from limits import RateLimitItemPerMinute  # noqa: E402
from limits.aio.strategies import STRATEGIES  # noqa: E402
from limits.storage import storage_from_string  # noqa: E402
from starlette.applications import Starlette  # noqa: E402
from starlette.responses import PlainTextResponse  # noqa: E402
from starlette.routing import Route  # noqa: E402

from asgi_apim import protect  # noqa: E402
from asgi_apim.certs.pki import issue_client, make_ca  # noqa: E402
from asgi_apim.identity import Principal  # noqa: E402
from asgi_apim.throttling import LazyMemoryStorage, ThrottlingMiddleware  # noqa: E402

PATH = "/pets/whoami"
BIG = "100000000/minute"  # never exhausted during a run: every request does the full counting work
GOLD = Principal(method="mutual_ssl", subject="CN=bench", api="pets", tier="Gold", throttle_key="cert:" + "ab" * 32)


async def hello(request: Any) -> PlainTextResponse:
    return PlainTextResponse("ok")


def starlette_app() -> Starlette:
    return Starlette(routes=[Route(PATH, hello)])


def with_user(make: Callable[[], dict[str, Any]], user: Any) -> Callable[[], dict[str, Any]]:
    def scope() -> dict[str, Any]:
        s = make()
        s["user"] = user
        return s

    return scope


def stacks(tmp: Path, tiers: tuple[str, ...], headers: tuple[str, ...] = ()) -> tuple[list[Any], bytes]:
    """One app per caller tier (with the ``[throttling] headers`` style of the same position, default
    ``ratelimit``), protected from a configuration; the header of a client they all accept."""
    ca = make_ca("bench CA")
    client = issue_client(ca, "bench-client")
    (tmp / "ca.pem").write_bytes(ca.cert_pem())
    apps = []
    for i, tier in enumerate(tiers):
        style = headers[i] if i < len(headers) else "ratelimit"
        config = tmp / f"deployment-{i}.toml"
        config.write_text(
            '[encryption]\nkey = "' + "ab" * 32 + '"\n'
            '[mutual_ssl]\ntruststore = ["ca.pem"]\n'
            f'[throttling]\nheaders = "{style}"\n'
            f'[throttling.tiers]\nGold = "{BIG}"\n'
            '[[apis]]\nname = "pets"\ncontext = "/pets"\n[apis.security]\nmutual_ssl = "mandatory"\n'
            f'[[apis.certificates]]\nalias = "dev"\ncertificate = "ca.pem"\ntier = "{tier}"\n'
        )
        apps.append(protect(starlette_app(), config))
    return apps, quote(client.cert_pem().decode(), safe="").encode()


def slowapi_variants(plain: Callable[[], dict[str, Any]]) -> list[Variant]:
    try:
        from slowapi import Limiter, _rate_limit_exceeded_handler
        from slowapi.errors import RateLimitExceeded
        from slowapi.middleware import SlowAPIASGIMiddleware, SlowAPIMiddleware
        from slowapi.util import get_remote_address
    except ImportError:
        print("slowapi is not installed (pip install slowapi): its rows are left out\n")
        return []
    variants = []
    for name, middleware in (
        ("slowapi SlowAPIMiddleware", SlowAPIMiddleware),
        ("slowapi SlowAPIASGIMiddleware", SlowAPIASGIMiddleware),
    ):
        app = starlette_app()
        app.state.limiter = Limiter(key_func=get_remote_address, default_limits=[BIG])
        app.add_exception_handler(RateLimitExceeded, _rate_limit_exceeded_handler)  # type: ignore[arg-type]
        app.add_middleware(middleware)
        variants.append(Variant(name, app, plain))
    return variants


def asgi_ratelimit_variant(plain: Callable[[], dict[str, Any]]) -> list[Variant]:
    """asgi-ratelimit's RateLimitMiddleware, memory backend, one rule per client IP (``pip install
    asgi-ratelimit``: a bench-only dependency): rate limiting alone, in a pure ASGI middleware."""
    try:
        from ratelimit import RateLimitMiddleware, Rule
        from ratelimit.backends.simple import MemoryBackend
    except ImportError:
        print("asgi-ratelimit is not installed (pip install asgi-ratelimit): its row is left out\n")
        return []

    async def by_ip(scope: dict[str, Any]) -> tuple[str, str]:
        return scope["client"][0], "default"

    app = RateLimitMiddleware(starlette_app(), by_ip, MemoryBackend(), {r"^/": [Rule(minute=10**9)]})
    return [Variant("asgi-ratelimit RateLimitMiddleware", app, plain)]


def part1(quick: bool) -> None:
    with tempfile.TemporaryDirectory() as d:
        (gold_stack, quiet_stack, unlimited_stack), header = stacks(
            Path(d), ("Gold", "Gold", "Unlimited"), ("ratelimit", "none")
        )
        cert = scope_factory("GET", PATH, [(b"x-wso2-client-certificate", header)])
        variants = [  # every variant gets the same headers (a fresh copy per request), so the same scope cost
            Variant("bare Starlette endpoint", starlette_app(), cert),
            Variant(
                "ThrottlingMiddleware alone",
                ThrottlingMiddleware(starlette_app(), tiers={"Gold": BIG}),
                with_user(cert, GOLD),
            ),
            Variant("whole stack, cached cert, Gold tier", gold_stack, cert),
            Variant("whole stack, cached cert, Gold tier, headers off", quiet_stack, cert),
            Variant("whole stack, cached cert, Unlimited", unlimited_stack, cert),
            *asgi_ratelimit_variant(cert),
            *slowapi_variants(cert),
        ]
        samples = asyncio.run(sample(variants, n=300 if quick else 1000, rounds=3 if quick else 21))
    results = {name: statistics.median(s) for name, s in samples.items()}
    bare = results["bare Starlette endpoint"]
    targets = {"whole stack, cached cert, Gold tier": "≤ 1.30"}
    print("## In-process, µs per request\n")
    print(table(samples, "bare Starlette endpoint", targets))
    peer = results.get("asgi-ratelimit RateLimitMiddleware")
    if peer is not None:
        for row in ("whole stack, cached cert, Gold tier", "whole stack, cached cert, Gold tier, headers off"):
            ours = results[row] - bare
            print(
                f"\n{row}: overhead {ours:.1f} µs = {ours / (peer - bare):.2f} × asgi-ratelimit's rate limiting "
                f"alone ({peer - bare:.1f} µs; target < 1.00)"
            )
    slow = results.get("slowapi SlowAPIMiddleware")
    if slow is not None:
        for row in ("whole stack, cached cert, Gold tier", "whole stack, cached cert, Gold tier, headers off"):
            ours = results[row] - bare
            print(
                f"\n{row}: overhead {ours:.1f} µs = {ours / (slow - bare):.2f} × slowapi's rate limiting alone "
                f"({slow - bare:.1f} µs; target ≤ 0.25)"
            )


async def _yielding_batch(app: Any, make: Callable[[], dict[str, Any]], n: int) -> float:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        return None

    t0 = time.perf_counter()
    for _ in range(n):
        await app(make(), receive, send)
        await asyncio.sleep(0)
    return (time.perf_counter() - t0) / n * 1e6


async def _fill(storage: Any, keys: int) -> None:
    limiter = STRATEGIES["moving-window"](storage)
    item = RateLimitItemPerMinute(1000)
    for i in range(keys):
        await limiter.hit(item, f"sub|pets|cert:idle-{i}")


async def part2(quick: bool) -> None:
    keys = 100_000
    n, rounds = (300, 3) if quick else (1000, 15)
    scope = with_user(scope_factory("GET", PATH), GOLD)
    rows: dict[str, float] = {}
    best: dict[str, float] = {}
    for label, uri in (("ours (memory://)", "memory://"), ("limits' own (async+memory://)", "async+memory://")):
        variants = {}
        for count in (0, keys):
            storage = LazyMemoryStorage() if uri == "memory://" else storage_from_string(uri)
            await _fill(storage, count)
            variants[f"{label}, {count // 1000}k idle keys"] = ThrottlingMiddleware(
                starlette_app(), tiers={"Gold": BIG}, storage=storage
            )
        for app in variants.values():
            await _yielding_batch(app, scope, 100)
        samples: dict[str, list[float]] = {name: [] for name in variants}
        gc.collect()
        for _ in range(rounds):
            for name, app in variants.items():
                samples[name].append(await _yielding_batch(app, scope, n))
        rows.update({name: statistics.median(s) for name, s in samples.items()})
        best.update({name: min(s) for name, s in samples.items()})
        for task in asyncio.all_tasks() - {asyncio.current_task()}:
            task.cancel()
    print(f"\n## {keys // 1000}k idle keys (moving window), one loop yield per request\n")
    print("| storage | µs / request (median) | requests / s | × none (median) | × none (best round) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for label in ("ours (memory://)", "limits' own (async+memory://)"):
        none, none_best = rows[f"{label}, 0k idle keys"], best[f"{label}, 0k idle keys"]
        for count in (0, keys):
            name = f"{label}, {count // 1000}k idle keys"
            us = rows[name]
            target = " (target ≥ 0.90)" if count and label.startswith("ours") else ""
            print(
                f"| {label}, {count // 1000}k keys | {us:.1f} | {1e6 / us:,.0f} "
                f"| {none / us:.2f} | {none_best / best[name]:.2f}{target} |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests and rounds")
    args = parser.parse_args()
    part1(args.quick)
    asyncio.run(part2(args.quick))


if __name__ == "__main__":
    main()
