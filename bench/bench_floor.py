"""The floor: the least Python that does the stack's work, beside the stack itself.

    python bench/bench_floor.py [--quick]

Each floor is one hand-inlined ASGI function for one known certificate, path
and caller, with every general step taken out: no configuration, no plan
lookup, no second function call, no error path beyond a bare raise. What a
general stack can cost is bounded below by these rows, so they say how far a
target is from what pure Python can do at all.

Part 1, the public path: an empty pure-ASGI middleware class (``await
self.app(scope, receive, send)`` and nothing else) on ``/health``, and the
stack's public path, each against the bare endpoint on ``/health``.

Part 2, a cached certificate from the proxy header (the configuration of
``bench_throttling.py``: a CA registered for the API, a Gold tier that is
never exhausted, moving window, memory):

- floor, security only: find the header (refusing a second one), the trust
  gate, the cached outcome by a slice of the header compared whole, the route
  by path, ``scope["user"]`` and ``scope["auth"]``;
- floor, + moving-window charge: the caller's timestamps, the window's
  check and the append;
- floor, + RateLimit headers: the two headers' values and a closure around
  ``send`` that adds them to the response start;

each beside the stack in the same configuration (Unlimited tier, headers off,
RateLimit headers). Last, the floor with RateLimit headers again, with every
check the stack's fast path makes put back (the socket peer beside ``client``,
the truststore's generation, the principal per API, the storage guard, the
sweep's due time, the entry's kind) and called as a middleware class is (a
server calls an instance through its type's ``__call__``; a staticmethod there,
within 10 ns of a method): the least a pure-ASGI middleware class with the
stack's checks can cost in this configuration. Round-robin in one run against
the bare endpoint on the same route (`harness.sample`).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from math import ceil
from pathlib import Path
from typing import Any
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bench_stack  # noqa: E402
import bench_throttling as bt  # noqa: E402
from harness import Variant, sample, scope_factory, table  # noqa: E402

from asgi_apim._keys import PEER  # noqa: E402
from asgi_apim.certs.middleware import certificate_principal  # noqa: E402
from asgi_apim.certs.resolver import _HINT  # noqa: E402
from asgi_apim.throttling.storage import _Events  # noqa: E402

HEADER = b"x-wso2-client-certificate"


class EmptyLayer:
    """A pure-ASGI middleware class that does nothing: the least any middleware class costs (a
    server calls an instance through its type's ``__call__`` slot, dearer than calling a function)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


def floor(app: Any, stack: Any, header: bytes, *, count: bool, headers: bool, checks: bool = False) -> Any:
    """The inlined stack for ``header``'s certificate on `bt.PATH`, from the real stack's own results;
    with ``checks``, every check of the stack's fast path made too, and called as a middleware class."""
    # `protect` gives the security stage, with the throttling stage fused in
    outcome = stack.resolver.resolve(scope_factory("GET", bt.PATH, [(HEADER, header)])())
    principal = certificate_principal(outcome, "pets")
    assert principal is not None and principal.tier == "Gold"
    hints = {header[_HINT]: (header, principal, time.time() + 3600.0, {"pets": principal})}
    trusted = {"127.0.0.1": True}
    routes = {bt.PATH: True}
    credentials = principal.credentials
    plan = stack.throttle._route_plan(stack._routes[bt.PATH][0], "Gold")
    (limit,) = plan.limits
    amount, expiry = limit.amount, limit.expiry
    entries = {principal.throttle_key: _Events()}
    policy = (b"ratelimit-policy", f'"Gold";q={amount};w={expiry}'.encode())
    current = b'"Gold";r=%d;t=%d'
    clock = time.time
    resolver, guard, storage = stack.resolver, stack.throttle.guard, stack.throttle.engine.storage

    async def inlined(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        raw = None
        for name, value in scope["headers"]:
            if name == HEADER:
                if raw is not None:
                    raise ValueError("two certificate headers")
                raw = value
        peer = (scope.get(PEER) or scope.get("client") or (None,)) if checks else scope.get("client")
        if raw is None or not trusted.get(peer[0]):
            raise ValueError("no header, or not from a trusted proxy")
        hint = hints.get(raw[_HINT])
        now = clock()
        if hint is None or hint[0] != raw or hint[2] <= now or routes.get(scope["path"]) is None:
            raise ValueError("not the known certificate and path")
        if checks:
            user = hint[3].get("pets")
            if user is None or resolver.trust._current.generation != resolver._generation:
                raise ValueError("another API's certificate, or a new truststore")
        else:
            user = hint[1]
        scope["user"] = user
        scope["auth"] = credentials
        if count:
            if checks:
                entry = entries.get(user.throttle_key)
                if guard.down or now >= storage._sweep_at or not isinstance(entry, _Events):
                    raise ValueError("the storage retried or swept, or a new caller")
            else:
                entry = entries[user.throttle_key]
            times, start = entry.times, entry.start
            if start < len(times) and times[start] < now - expiry:
                raise ValueError("the window moved (never, with this tier)")
            used = len(times) - start
            if used >= amount:
                raise ValueError("exhausted (never, with this tier)")
            times.append(now)
            entry.deadline = now + expiry
            if headers:
                extra = [policy, (b"ratelimit", current % (amount - used - 1, ceil(times[start] + expiry - now)))]

                def wrapped(message: Any) -> Any:
                    if message["type"] == "http.response.start":
                        message["headers"] = message["headers"] + extra
                    return send(message)

                await app(scope, receive, wrapped)
                return
        await app(scope, receive, send)

    if checks:

        class Layer:
            __call__ = staticmethod(inlined)

        return Layer()
    return inlined


def part1(quick: bool) -> None:
    with tempfile.TemporaryDirectory() as d:
        inner, stack, _, client = bench_stack.build(Path(d))
        header = quote(client.cert_pem().decode(), safe="").encode()
        health = scope_factory("GET", "/health", [(HEADER, header)])
        variants = [
            Variant("bare endpoint, /health", inner, health),
            Variant("floor: an empty middleware class", EmptyLayer(inner), health),
            Variant("public path through the stack", stack, health),
        ]
        samples = asyncio.run(sample(variants, n=300 if quick else 1000, rounds=3 if quick else 21))
    print("## Public path, × the bare endpoint on /health\n")
    print(table(samples, "bare endpoint, /health", {"public path through the stack": "≤ 1.05×"}))


def part2(quick: bool) -> None:
    with tempfile.TemporaryDirectory() as d:
        (unlimited, quiet, gold), header = bt.stacks(
            Path(d), ("Unlimited", "Gold", "Gold"), ("ratelimit", "none", "ratelimit")
        )
        cert = scope_factory("GET", bt.PATH, [(HEADER, header)])
        inner = bt.starlette_app()
        for app in (unlimited, quiet, gold):
            asyncio.run(app(cert(), _receive, _send))  # routes and plans made
        variants = [
            Variant("bare endpoint", inner, cert),
            Variant("floor: security only", floor(inner, gold, header, count=False, headers=False), cert),
            Variant("stack, Unlimited tier", unlimited, cert),
            Variant("floor: + moving-window charge", floor(inner, gold, header, count=True, headers=False), cert),
            Variant("stack, Gold, headers off", quiet, cert),
            Variant("floor: + RateLimit headers", floor(inner, gold, header, count=True, headers=True), cert),
            Variant("stack, Gold, RateLimit headers", gold, cert),
            Variant(
                "floor: + RateLimit headers, every check, a class",
                floor(inner, gold, header, count=True, headers=True, checks=True),
                cert,
            ),
        ]
        samples = asyncio.run(sample(variants, n=300 if quick else 1000, rounds=3 if quick else 21))
    print("\n## Cached certificate from the header, × the bare endpoint\n")
    print(table(samples, "bare endpoint", {"stack, Gold, RateLimit headers": "≤ 1.3×"}))


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _send(message: dict[str, Any]) -> None:
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests and rounds")
    args = parser.parse_args()
    part1(args.quick)
    part2(args.quick)


if __name__ == "__main__":
    main()
