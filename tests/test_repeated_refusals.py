"""A refusal repeated many times holds no memory per request, and costs the same each time.

A refusal the resolver caches is a value: what is raised per request is made
per request (`RequestError.again`), so its traceback, which holds the frames
and through them the request's scope, dies with the request. Before, raising
the cached exception again added every request's frames to its traceback
(RSS 79 -> 814 MB in 20 s of one malformed header). Traced memory after the
first requests must stay within ``BOUND`` over thousands of identical refusals,
and the last requests must not be slower than the first ones.
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import time
import tracemalloc
from array import array
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import pytest

from asgi_apim import protect
from asgi_apim.certs.pki import issue_client, make_ca
from asgi_apim.config import load_config
from tests.asgi import echo_user, make_scope

BOUND = 256 * 1024  # bytes of traced memory the whole run may add after its first requests

CONFIG = """
[encryption]
key = "{key}"
[mutual_ssl]
truststore = ["ca.pem"]
trusted_proxies = ["127.0.0.1/32"]
[[apis]]
name = "pets"
context = "/pets"
[apis.security]
mutual_ssl = "mandatory"
[[apis.certificates]]
alias = "partners"
certificate = "ca.pem"
tier = "Unlimited"
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("refusals")
    ca = make_ca("refusals CA")
    ca.write(tmp / "ca.pem")
    (tmp / "deployment.toml").write_text(CONFIG.format(key="12" * 32))
    foreign = issue_client(None, "foreign client")
    good = issue_client(ca, "good client")
    return {
        "app": protect(echo_user, load_config(tmp / "deployment.toml")),
        "foreign_pem": foreign.cert_pem().decode(),
        "good_pem": good.cert_pem().decode(),
    }


def _header(value: str) -> Callable[[], dict[str, Any]]:
    def make() -> dict[str, Any]:
        return make_scope("GET", "/pets/x", [("x-wso2-client-certificate", value)], client=("127.0.0.1", 4000))

    return make


def _tls(chain: list[str]) -> Callable[[], dict[str, Any]]:
    def make() -> dict[str, Any]:
        scope = make_scope("GET", "/pets/x", client=("192.0.2.9", 4000))
        scope["scheme"] = "https"
        scope["extensions"] = {"tls": {"client_cert_chain": list(chain), "server_cert": None}}
        return scope

    return make


async def _run(app: Any, make: Callable[[], dict[str, Any]], times: array[float], status: int) -> None:
    """``len(times)`` requests, each one's duration written into ``times`` (made before, so the
    measure itself allocates nothing that stays)."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    for i in range(len(times)):
        sent.clear()
        t = time.perf_counter()
        await app(make(), receive, send)
        times[i] = time.perf_counter() - t
        assert sent[0]["status"] == status


def _flat(setup: dict[str, Any], make: Callable[[], dict[str, Any]], count: int, status: int) -> None:
    app = setup["app"]
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(_run(app, make, array("d", bytes(8 * 50)), status))  # caches warm, refusal cached
        times = array("d", bytes(8 * count))
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            loop.run_until_complete(_run(app, make, times, status))
            gc.collect()
            grown = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
    finally:
        loop.run_until_complete(app.background.stop())  # the stack's jobs end with this test's loop
        loop.close()
    assert grown < BOUND, f"{grown} bytes traced after {count} identical refusals"
    tenth = count // 10
    first, last = statistics.median(times[:tenth]), statistics.median(times[-tenth:])
    assert last < 3 * first, f"the last requests took {last * 1e6:.0f} µs, the first {first * 1e6:.0f} µs"


def test_a_malformed_header_repeated(setup: dict[str, Any]) -> None:
    _flat(setup, _header("-----BEGIN%20CERTIFICATE-----%0Anot%20base64%0A-----END%20CERTIFICATE-----"), 20_000, 400)


def test_an_oversized_header_repeated(setup: dict[str, Any]) -> None:
    _flat(setup, _header("A" * (64 * 1024 + 1)), 2_000, 400)


def test_a_refused_certificate_from_the_header_repeated(setup: dict[str, Any]) -> None:
    _flat(setup, _header(quote(setup["foreign_pem"], safe="")), 20_000, 401)


def test_a_refused_certificate_over_tls_repeated(setup: dict[str, Any]) -> None:
    _flat(setup, _tls([setup["foreign_pem"]]), 20_000, 401)


def test_a_chain_over_the_limit_over_tls_repeated(setup: dict[str, Any]) -> None:
    _flat(setup, _tls([setup["good_pem"]] * 11), 20_000, 400)


def test_the_bound_is_met_by_a_leak(setup: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """The measure above sees a leak of the old kind: the cached error raised itself again."""
    from asgi_apim.errors import RequestError

    monkeypatch.setattr(RequestError, "again", lambda self: self)
    with pytest.raises(AssertionError, match="bytes traced"):
        _flat(setup, _header("B" * 2000), 5_000, 400)
