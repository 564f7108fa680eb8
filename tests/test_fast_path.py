"""A route's fast path decides exactly as the general path does.

On a route that mutual SSL alone decides, a request is decided by the callable
its owner built for the route (`CertificateResolver.lookup_for`) and charged by
`Limiter.charge`; `APISecurityMiddleware.decide` (WSO2's table) is met only when
that callable answers None. A stack built with ``explain=True`` decides every
request through `decide`. Hypothesis drives two stacks built from the same
configuration, one of each, through the same sequences of requests, clock steps
and truststore reloads (a CRL that revokes a client, then lifts it), and every
answer must be the same: status, headers (the RateLimit values included), body
and the caller the app saw. The sequences reach every way out of the fast path:
first sightings, second headers, untrusted peers (also an untrusted socket peer
behind a trusted ``client``), refused certificates, new truststore generations,
exhausted limits and their reset, plans of several limits, an unlimited tier,
and every header style.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import quote

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asgi_apim import protect
from asgi_apim._keys import PEER
from asgi_apim.certs.pki import Issued, issue_client, make_ca, make_crl
from asgi_apim.config import load_config
from tests.asgi import call_scope, echo_user, make_scope

CERT_HEADER = "x-wso2-client-certificate"

CONFIG = """
public_paths = ["/health"]

[encryption]
key = "{key}"

[mutual_ssl]
trusted_proxies = ["127.0.0.1/32"]
truststore = ["ca.pem", "other-ca.pem"]
crl = ["ca.crl"]
reload_interval = 3600

[throttling]
headers = "{headers}"
strategy = "{strategy}"

[throttling.tiers]
Gold = "4/minute"
Burst = "2/second;5/minute"
Shared = "6/minute"

[[apis]]
name = "pets"
context = "/pets"

[apis.security]
mutual_ssl = "mandatory"

[[apis.certificates]]
alias = "partners"
certificate = "ca.pem"
tier = "Gold"

[[apis.certificates]]
alias = "bursty"
certificate = "other-ca.pem"
tier = "Burst"

[[apis.certificates]]
alias = "pinned"
certificate = "pinned.pem"
tier = "Unlimited"

[[apis.resources]]
path = "/pets/limited"
tier = "Shared"
"""


@dataclass
class Pair:
    fast: Any
    general: Any
    loop: asyncio.AbstractEventLoop
    values: dict[str, str]  # certificate choice -> header value
    crl: Path
    ca: Issued
    revocable: int  # the serial number a reload revokes


def _stack(config_file: Path, *, fast: bool) -> Any:
    return protect(echo_user, load_config(config_file), explain=not fast)


@pytest.fixture(
    scope="module",
    params=[("ratelimit", "moving-window"), ("x-ratelimit", "fixed-window"), ("none", "sliding-window-counter")],
    ids=lambda p: "-".join(p),
)
def pair(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    headers, strategy = request.param
    tmp = tmp_path_factory.mktemp("fast")
    ca, other = make_ca("fast CA"), make_ca("other CA")
    ca.write(tmp / "ca.pem")
    other.write(tmp / "other-ca.pem")
    gold, gold2 = issue_client(ca, "gold client"), issue_client(ca, "second gold client")
    burst = issue_client(other, "burst client")
    pinned = issue_client(None, "pinned client")
    (tmp / "pinned.pem").write_bytes(pinned.cert_pem())
    crl = tmp / "ca.crl"
    crl.write_bytes(make_crl(ca).public_bytes(Encoding.PEM))
    config_file = tmp / "deployment.toml"
    config_file.write_text(CONFIG.format(key=os.urandom(32).hex(), headers=headers, strategy=strategy))

    def url_pem(issued: Issued) -> str:
        return quote(issued.cert_pem().decode(), safe="")

    values = {
        "gold": url_pem(gold),
        "gold2": url_pem(gold2),
        "burst": url_pem(burst),
        "pinned": url_pem(pinned),
        "foreign": url_pem(issue_client(None, "foreign client")),
        "broken": url_pem(gold)[:300],
    }
    loop = asyncio.new_event_loop()
    fast, general = _stack(config_file, fast=True), _stack(config_file, fast=False)
    try:
        yield Pair(fast, general, loop, values, crl, ca, gold.cert.serial_number)
    finally:
        for app in (fast, general):
            loop.run_until_complete(app.background.stop())
        loop.close()


CERTS = ["gold", "gold", "gold", "gold2", "burst", "pinned", "short", "foreign", "broken"]
PATHS = ["/pets/a", "/pets/a", "/pets/b", "/pets/limited", "/health", "/elsewhere"]
TRUSTED = (("127.0.0.1", 5000), None)
# (client, socket peer recorded by our server protocols or None)
PEERS = [
    TRUSTED,
    TRUSTED,
    TRUSTED,
    (("127.0.0.1", 5000), ("127.0.0.1", 5000)),
    (("192.0.2.7", 5000), None),
    (("127.0.0.1", 5000), ("192.0.2.7", 5000)),
    (None, None),
]

request_steps = st.tuples(
    st.just("request"),
    st.sampled_from(PATHS),
    st.sampled_from(CERTS),
    st.sampled_from([1, 1, 1, 1, 0, 2]),  # how many certificate headers
    st.sampled_from(PEERS),
    st.sampled_from(["GET", "GET", "POST"]),
)
clock_steps = st.tuples(st.just("clock"), st.sampled_from([0.2, 1.0, 1.5, 30.0, 61.0]))
reload_steps = st.tuples(st.just("reload"), st.booleans())  # True: revoke the gold client; False: lift it
steps = st.lists(
    st.one_of(request_steps, request_steps, request_steps, request_steps, clock_steps, reload_steps),
    min_size=1,
    max_size=60,
)


def _scope(values: dict[str, str], step: tuple[Any, ...]) -> dict[str, Any]:
    _, path, cert, copies, (client, peer), method = step
    scope = make_scope(method, path, [(CERT_HEADER, values[cert])] * copies)
    scope["client"] = client
    if peer is not None:
        scope[PEER] = peer
    return scope


def _reload(pair: Pair, revoke: bool) -> None:
    pair.crl.write_bytes(make_crl(pair.ca, [pair.revocable] if revoke else []).public_bytes(Encoding.PEM))
    for app in (pair.fast, pair.general):
        app.resolver.trust.check()


_EPOCH = [time.time()]


@given(steps=steps)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_the_fast_path_answers_as_the_general_path_does(pair: Pair, steps: list[tuple[Any, ...]]) -> None:
    _EPOCH[0] += 3000.0  # time only moves on, across examples too (within the certificates' validity)
    clock = [_EPOCH[0]]
    # a certificate of this example's own that expires 90 s in, while its verdict is cached
    start = dt.datetime.fromtimestamp(clock[0], dt.UTC)
    short = issue_client(
        pair.ca,
        "short-lived client",
        not_before=start - dt.timedelta(minutes=5),
        not_after=start + dt.timedelta(seconds=90),
    )
    values = dict(pair.values, short=quote(short.cert_pem().decode(), safe=""))
    _reload(pair, False)
    # every certificate seen once, so that the drawn steps meet cached verdicts (the fast path's requests)
    warm = [("request", "/pets/a", cert, 1, TRUSTED, "GET") for cert in values]
    with mock.patch("time.time", lambda: clock[0]):
        for n, step in enumerate([*warm, *steps]):
            if step[0] == "clock":
                clock[0] += step[1]
                continue
            if step[0] == "reload":
                _reload(pair, step[1])
                continue
            fast = pair.loop.run_until_complete(call_scope(pair.fast, _scope(values, step)))
            general = pair.loop.run_until_complete(call_scope(pair.general, _scope(values, step)))
            where = f"step {n - len(warm)} {step[:4]} of {[s[:4] for s in steps]}"
            assert (fast.status, fast.raw_headers, fast.body) == (general.status, general.raw_headers, general.body), (
                where
            )


def test_the_fast_path_is_taken(pair: Pair) -> None:
    """The comparison above compares something: the fast path decides the usual request, and
    only on the stack that has it."""
    calls: list[Any] = []
    for app in (pair.fast, pair.general):

        async def spying(scope: Any, known: Any, *args: Any, app: Any = app, decide: Any = app.decide) -> Any:
            calls.append(app)
            return await decide(scope, known, *args)

        app.decide = spying
    values = {
        name: quote(issue_client(pair.ca, f"{name} client").cert_pem().decode(), safe="") for name in ("new", "newer")
    }
    try:
        # a certificate's first sighting is validated by the resolver in the route's own call too
        for client in ("new", "new", "newer", "newer"):
            for app in (pair.fast, pair.general):
                result = pair.loop.run_until_complete(
                    call_scope(app, _scope(values, ("request", "/pets/z", client, 1, TRUSTED, "GET")))
                )
                assert result.status == 200 and result.json()["alias"] == "partners"
    finally:
        for app in (pair.fast, pair.general):
            del app.decide
    assert calls == [pair.general] * 4, "the fast stack decides every accepted request by the route's own call"


@pytest.mark.parametrize("fail_open", [True, False])
def test_a_failing_storage_is_left_to_the_general_path_once_it_failed(tmp_path: Path, fail_open: bool) -> None:
    """A memory storage of the user's own that fails while the fast path charges: the request is
    let through (fail_open) or answered 503, and, while the storage guard says it is away, the
    fast path leaves requests to the general path, which retries the storage after its interval."""
    from tests.throttling.test_middleware import ExplodingStorage

    ca = make_ca("storage CA")
    ca.write(tmp_path / "ca.pem")
    (tmp_path / "deployment.toml").write_text(
        f'[encryption]\nkey = "{"cd" * 32}"\n'
        '[mutual_ssl]\ntrusted_proxies = ["127.0.0.1/32"]\ntruststore = ["ca.pem"]\n'
        f'[throttling]\nfail_open = {str(fail_open).lower()}\n[throttling.tiers]\nGold = "100/minute"\n'
        '[[apis]]\nname = "pets"\ncontext = "/pets"\n[apis.security]\nmutual_ssl = "mandatory"\n'
        '[[apis.certificates]]\nalias = "partners"\ncertificate = "ca.pem"\ntier = "Gold"\n'
    )
    app = protect(echo_user, load_config(tmp_path / "deployment.toml"))
    storage = app.limiter.engine.storage = ExplodingStorage()
    ExplodingStorage.broken, ExplodingStorage.calls = False, 0
    values = {"client": quote(issue_client(ca, "client").cert_pem().decode(), safe="")}
    loop = asyncio.new_event_loop()

    def get() -> Any:
        return loop.run_until_complete(
            call_scope(app, _scope(values, ("request", "/pets/a", "client", 1, TRUSTED, "GET")))
        )

    try:
        first = get()  # validated and charged by the general path
        assert first.status == 200 and "ratelimit" in first.headers and ExplodingStorage.calls == 1
        storage.broken = True
        failed = get()  # the fast path's charge fails
        assert ExplodingStorage.calls == 2 and app.limiter.guard.down
        assert (failed.status, "ratelimit" in failed.headers) == ((200, False) if fail_open else (503, False))
        if not fail_open:
            assert failed.json()["code"] == 900899
        away = get()  # not charged while the guard waits to retry
        assert away.status == failed.status and ExplodingStorage.calls == 2
        storage.broken = False
        app.limiter.guard.down_until = 0.0  # the retry interval is over
        back = get()
        assert (
            back.status == 200
            and "ratelimit" in back.headers
            and not app.limiter.guard.down
            and ExplodingStorage.calls == 3
        )
        again = get()  # the fast path charges again
        assert again.status == 200 and again.headers["ratelimit"] == '"Gold";r=97;t=60' and ExplodingStorage.calls == 4
    finally:
        ExplodingStorage.broken = True
        loop.run_until_complete(app.background.stop())
        loop.close()
