"""JWT checks in-process: asgi-apim's cached and uncached paths against PyJWT's own decode.

    python bench/bench_jwt.py [--seconds 0.3]

For each algorithm it times, per token check:
  pyjwt.decode          jwt.decode(token, key_object, algorithms=..., audience=..., issuer=...)
  asgi-apim uncached    OAuth2Authenticator.authenticate with the token cache off
  asgi-apim cached      the same with the cache on (the steady state of a busy client)
  get_unverified_header PyJWT's header parse alone, which asgi-apim never calls
Target: uncached within 1.1x of pyjwt.decode.

Then, round-robin against a bare Starlette endpoint in the same run
(bench/harness.py), a request with a cached RS256 bearer token through the
security stage (routing and application security, as bench_stack.py measures
the certificate: issue 3's target, <= 1.2x bare) and through the whole stack
(`protect()`: the same plus throttling with a subscriber tier in memory).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import timeit
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import Variant, sample, scope_factory, table  # noqa: E402
from starlette.applications import Starlette  # noqa: E402
from starlette.responses import PlainTextResponse  # noqa: E402
from starlette.routing import Route  # noqa: E402

from asgi_apim import protect  # noqa: E402
from asgi_apim.auth.application import build_authenticators  # noqa: E402
from asgi_apim.auth.jwt import JWTIssuer, OAuth2Authenticator  # noqa: E402
from asgi_apim.auth.policy import APISecurityMiddleware  # noqa: E402
from asgi_apim.config import ApiConfig, KeyManagerConfig, load_config  # noqa: E402
from asgi_apim.routing import Router  # noqa: E402

ISSUER = "https://idp.example"
API = ApiConfig(name="pets", context="/pets")
KEYS: dict[str, tuple[Callable[[], Any], Any]] = {
    "RS256": (lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048), RSAAlgorithm),
    "ES256": (lambda: ec.generate_private_key(ec.SECP256R1()), ECAlgorithm),
    "EdDSA": (lambda: ed25519.Ed25519PrivateKey.generate(), OKPAlgorithm),
}


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    """Drive a coroutine that never suspends (keys are local) without an event loop's overhead."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    raise RuntimeError("the coroutine suspended")


def per_call(fns: dict[str, Callable[[], Any]], seconds: float) -> list[tuple[str, float]]:
    """Best time per call of each function, measured in interleaved rounds so load drifts hit all alike."""
    timers = {name: timeit.Timer(fn) for name, fn in fns.items()}
    numbers = {name: t.autorange()[0] for name, t in timers.items()}
    best = dict.fromkeys(fns, float("inf"))
    deadline = time.perf_counter() + seconds * len(fns)
    rounds = 0
    while rounds < 5 or (time.perf_counter() < deadline and rounds < 50):
        for name, timer in timers.items():
            best[name] = min(best[name], timer.timeit(numbers[name]) / numbers[name])
        rounds += 1
    return list(best.items())


def bench(alg: str, seconds: float, workdir: Path) -> list[tuple[str, float]]:
    make, loader = KEYS[alg]
    private = make()
    jwk = json.loads(loader.to_jwk(private.public_key()))
    jwk["kid"] = "k1"
    jwks = workdir / f"{alg}.json"
    jwks.write_text(json.dumps({"keys": [jwk]}))
    km = KeyManagerConfig(name="idp", issuer=ISSUER, audience=("pets",), jwks_file=jwks, algorithms=(alg,))
    claims = {
        "iss": ISSUER,
        "sub": "alice",
        "aud": "pets",
        "azp": "app",
        "scope": "pets:read pets:write",
        "exp": int(time.time()) + 3600,
        "iat": int(time.time()),
    }
    token = jwt.encode(claims, private, algorithm=alg, headers={"kid": "k1"})
    public = private.public_key()
    uncached = OAuth2Authenticator([JWTIssuer.from_config(km)], cache_size=0)
    cached = OAuth2Authenticator([JWTIssuer.from_config(km)])
    assert run(uncached.authenticate(token, API, {})).subject == "alice"
    assert run(cached.authenticate(token, API, {})).subject == "alice"
    return per_call(
        {
            "pyjwt.decode": lambda: jwt.decode(
                token, public, algorithms=[alg], audience="pets", issuer=ISSUER, leeway=30
            ),
            "asgi-apim uncached": lambda: run(uncached.authenticate(token, API, {})),
            "asgi-apim cached": lambda: run(cached.authenticate(token, API, {})),
            "get_unverified_header": lambda: jwt.get_unverified_header(token),
        },
        seconds,
    )


STACK_CONFIG = """
[encryption]
key = "{key}"

[[key_managers]]
name = "idp"
issuer = "{issuer}"
audience = "pets"
jwks_file = "jwks.json"
algorithms = ["RS256"]
default_tier = "Big"

[throttling.tiers]
Big = "100000000/minute"  # never exhausted in a run: every request does the whole counting work

[[apis]]
name = "pets"
context = "/pets"

[apis.security]
application = ["oauth2"]
"""


async def hello(request: Any) -> PlainTextResponse:
    return PlainTextResponse("ok")


def whole_stack(workdir: Path) -> str:
    import os

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(RSAAlgorithm.to_jwk(private.public_key()))
    jwk["kid"] = "k1"
    (workdir / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
    (workdir / "deployment.toml").write_text(STACK_CONFIG.format(key=os.urandom(32).hex(), issuer=ISSUER))
    claims = {
        "iss": ISSUER,
        "sub": "alice",
        "aud": "pets",
        "azp": "app",
        "scope": "pets:read",
        "exp": int(time.time()) + 3600,
    }
    token = jwt.encode(claims, private, algorithm="RS256", headers={"kid": "k1"})
    bare = Starlette(routes=[Route("/bare", hello)])
    stack = protect(Starlette(routes=[Route("/pets/whoami", hello)]), workdir / "deployment.toml")
    config = load_config(workdir / "deployment.toml")
    security = APISecurityMiddleware(
        Starlette(routes=[Route("/pets/whoami", hello)]),
        router=Router.from_config(config),
        authenticators=build_authenticators(config),
    )
    bearer = [(b"authorization", f"Bearer {token}".encode())]
    results = asyncio.run(
        sample(
            [
                Variant("bare endpoint", bare, scope_factory("GET", "/bare", bearer)),
                Variant("cached JWT, security stage", security, scope_factory("GET", "/pets/whoami", bearer)),
                Variant(
                    "cached JWT, whole stack with a tier limit", stack, scope_factory("GET", "/pets/whoami", bearer)
                ),
            ],
            n=1000,
            rounds=21,
        )
    )
    return table(results, "bare endpoint", {"cached JWT, security stage": "≤ 1.2×"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.3, help="time budget per measurement")
    args = parser.parse_args()
    print(f"{'alg':<6} {'check':<22} {'µs/op':>9} {'vs pyjwt':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        for alg in KEYS:
            rows = bench(alg, args.seconds, Path(tmp))
            base = rows[0][1]
            for name, seconds in rows:
                print(f"{alg:<6} {name:<22} {seconds * 1e6:>9.2f} {seconds / base:>8.2f}x")
        print()
        print(whole_stack(Path(tmp)))


if __name__ == "__main__":
    main()
