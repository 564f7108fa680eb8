"""Outbound calls under hostile identity providers, through the whole stack on loopback.

    python bench/hostile_outbound.py [--quick]

A `protect()`-ed Starlette app is called in-process (ASGI, fresh scopes) with bearer
tokens, against the misbehaving servers of tests/auth/hostile.py on 127.0.0.1, with the
default key-manager settings (``fetch_timeout`` = 5 s, ``jwks_wait`` = 5 s,
``introspection_negative_ttl`` = 5 s, ``introspection_max_concurrency`` = 32):

1. JWKS dripping one byte every 2 s: 16 concurrent tokens with a new ``kid`` (time to
   their 401), and tokens with the known ``kid`` sent meanwhile (their latency).
2. The same against a JWKS that accepts and never answers.
3. A 50 MiB JWKS, with its Content-Length and chunked: time to refuse it, traced peak
   memory and RSS growth.
4. Introspection, a counting mock IdP (5 ms an answer): 10,000 requests of one bogus
   token, and 10,000 distinct bogus tokens, both at concurrency 64: calls made, most
   calls in flight at once, time.

``--quick`` uses a 1 s ``jwks_wait`` and a 2 s ``fetch_timeout`` (cases 1 and 2).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from starlette.applications import Starlette  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import PlainTextResponse  # noqa: E402
from starlette.routing import Route  # noqa: E402

from asgi_apim import protect  # noqa: E402
from tests.auth.hostile import Hostile, running_hostile  # noqa: E402
from tests.auth.idp import ISSUER, claims, rsa_key  # noqa: E402

K1, K2 = rsa_key("k1"), rsa_key("k2", second=True)
OPAQUE_ISSUER = "https://opaque.example"
MiB = 1024 * 1024


def rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


async def whoami(request: Request) -> PlainTextResponse:
    return PlainTextResponse(request.user.display_name)


@contextmanager
def stack(hostile: Hostile, wait: float, timeout: float) -> Iterator[Any]:
    hostile.jwks = {"keys": [K1.jwk()]}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "deployment.toml"
        path.write_text(
            f"""
[encryption]
key = "{secrets.token_hex(32)}"

[[key_managers]]
name = "idp"
issuer = "{ISSUER}"
jwks_url = "{hostile.url}/jwks.json"
jwks_min_refetch_interval = 0
jwks_wait = {wait}
fetch_timeout = {timeout}

[[key_managers]]
name = "opaque"
issuer = "{OPAQUE_ISSUER}"
introspection_url = "{hostile.url}/introspect"
client_id = "gateway"
client_secret = "s3cret"

[[apis]]
name = "pets"
context = "/pets"

[apis.security]
application = ["oauth2"]
"""
        )
        yield protect(Starlette(routes=[Route("/pets/whoami", whoami)]), path)


async def call(app: Any, token: str) -> tuple[float, int, int | None]:
    """(seconds, status, WSO2 code) of one GET /pets/whoami with this bearer token."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/pets/whoami",
        "raw_path": b"/pets/whoami",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"localhost"), (b"authorization", f"Bearer {token}".encode())],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    status, body = 0, b""

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status, body
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            body += message.get("body", b"")

    began = time.monotonic()
    await app(scope, receive, send)
    took = time.monotonic() - began
    code = json.loads(body).get("code") if status >= 400 else None
    return took, status, code


async def slow_issuer(mode: str, wait: float, timeout: float) -> list[str]:
    with running_hostile() as hostile, stack(hostile, wait, timeout) as app:
        assert (await call(app, K1.sign(claims(sub="warm"))))[1] == 200
        hostile.mode = mode
        new = asyncio.ensure_future(asyncio.gather(*(call(app, K2.sign(claims(sub=f"n{i}"))) for i in range(16))))
        known: list[float] = []
        i = 0
        while not new.done():
            i += 1
            took, status, _ = await call(app, K1.sign(claims(sub=f"k{i}")))
            assert status == 200
            known.append(took)
            await asyncio.sleep(0.05)
        answers = await new
        times = [t for t, _, _ in answers]
        codes = {f"{s} {c}" for _, s, c in answers}
        return [
            f"JWKS {mode} ({'1 byte / 2 s' if mode == 'drip' else 'never answers'})",
            f"16 new-kid requests: 401 after {min(times):.2f}-{max(times):.2f} s ({', '.join(sorted(codes))})",
            f"{len(known)} known-kid requests meanwhile: median {statistics.median(known) * 1000:.1f} ms, "
            f"max {max(known) * 1000:.1f} ms",
            f"JWKS requests: {hostile.requests} (start-up + 1 shared refetch)",
        ]


async def big_jwks(mode: str) -> list[str]:
    with running_hostile() as hostile, stack(hostile, 5, 5) as app:
        assert (await call(app, K1.sign(claims(sub="warm"))))[1] == 200
        hostile.mode = mode
        before = rss()
        tracemalloc.start()
        took, status, code = await call(app, K2.sign(claims()))
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        grown = rss() - before
        await asyncio.sleep(0.3)
        return [
            f"JWKS 50 MiB ({'Content-Length' if mode == 'big' else 'chunked'})",
            f"new-kid request: {status} {code} after {took * 1000:.0f} ms",
            f"traced peak {peak / MiB:.2f} MiB, RSS growth {grown / MiB:.1f} MiB",
            f"body bytes the server could write before the close: {hostile.sent / MiB:.1f} MiB",
        ]


async def introspection(distinct: bool) -> list[str]:
    with running_hostile() as hostile, stack(hostile, 5, 5) as app:
        assert (await call(app, K1.sign(claims(sub="warm"))))[1] == 200
        hostile.mode, hostile.delay = "introspect", 0.005
        tokens = iter([f"bogus-{i}" if distinct else "bogus" for i in range(10_000)])
        results: list[tuple[float, int, int | None]] = []

        async def worker() -> None:
            for token in tokens:
                results.append(await call(app, token))
                await asyncio.sleep(0)  # a client's next request comes over a socket: let the loop run

        before = rss()
        began = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(64)))
        took = time.monotonic() - began
        times = sorted(t for t, _, _ in results)
        codes = {f"{s} {c}" for _, s, c in results}
        return [
            f"introspection, 10,000 requests, {'distinct bogus tokens' if distinct else 'one bogus token'}, 64 at once",
            f"calls to the IdP: {hostile.calls}, most in flight at once: {hostile.max_in_flight}; "
            f"refused over the cap without asking: {len(results) - hostile.calls if distinct else 0}",
            f"all answered in {took:.2f} s ({', '.join(sorted(codes))}); "
            f"p50 {times[len(times) // 2] * 1000:.1f} ms, p99 {times[int(len(times) * 0.99)] * 1000:.1f} ms",
            f"RSS growth {(rss() - before) / MiB:.1f} MiB",
        ]


async def main() -> None:
    quick = "--quick" in sys.argv
    wait, timeout = (1.0, 2.0) if quick else (5.0, 5.0)
    print(f"jwks_wait = {wait:g} s, fetch_timeout = {timeout:g} s\n")
    for rows in [
        await slow_issuer("drip", wait, timeout),
        await slow_issuer("hang", wait, timeout),
        await big_jwks("big"),
        await big_jwks("big-chunked"),
        await introspection(False),
        await introspection(True),
    ]:
        print(f"| {rows[0]} |")
        for row in rows[1:]:
            print(f"|   {row} |")
        print()


if __name__ == "__main__":
    asyncio.run(main())
