"""`protect()`: the whole stack from a configuration file around the example app, in-process."""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from asgi_apim import protect
from asgi_apim.certs.pki import Issued, issue_client, make_ca
from asgi_apim.secrets.envelope import DataKey
from tests.asgi import call

KEY = os.urandom(32).hex()
CONFIG = """
public_paths = ["/health", "/docs", "/openapi.json"]

[encryption]
key = "{key}"

[secrets]
greeting = "{greeting}"

[mutual_ssl]
trusted_proxies = ["127.0.0.1/32"]
truststore = ["ca.pem"]

[throttling.tiers]
Tiny = "2/minute"

[[apis]]
name = "pets"
context = "/pets"

[apis.security]
mutual_ssl = "mandatory"

[[apis.certificates]]
alias = "dev-clients"
certificate = "ca.pem"
tier = "Tiny"

[[apis.resources]]
path = "/pets/{{id}}"
methods = ["DELETE"]
scopes = ["pets:write"]
"""


class Setup:
    def __init__(self, tmp: Path) -> None:
        self.ca = make_ca("stack CA")
        self.client = issue_client(self.ca, "stack client")
        self.ca.write(tmp / "ca.pem")
        self.config = tmp / "deployment.toml"
        self.config.write_text(CONFIG.format(key=KEY, greeting=DataKey(bytes.fromhex(KEY)).encrypt("hello")))

    def header(self, issued: Issued | None = None) -> list[tuple[str, str]]:
        return [("X-WSO2-CLIENT-CERTIFICATE", quote((issued or self.client).cert_pem().decode(), safe=""))]


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    return Setup(tmp_path)


def example_app() -> Any:
    import example_app.main

    return importlib.reload(example_app.main).app  # a fresh FastAPI app (and pets) for each test


async def test_whoami_as_the_contract_says(setup: Setup) -> None:
    app = protect(example_app(), setup.config)
    result = await call(app, "GET", "/pets/whoami", setup.header())
    assert result.status == 200
    body = result.json()
    assert {k: body[k] for k in ("authenticated", "method", "subject", "alias", "tier", "scopes", "api")} == {
        "authenticated": True,
        "method": "mutual_ssl",
        "subject": "CN=stack client,O=asgi-apim dev",
        "alias": "dev-clients",
        "tier": "Tiny",
        "scopes": [],
        "api": "pets",
    }


async def test_public_unknown_and_missing(setup: Setup) -> None:
    app = protect(example_app(), setup.config)
    assert (await call(app, "GET", "/health")).status == 200
    unknown = await call(app, "GET", "/elsewhere", setup.header())
    assert (unknown.status, unknown.json()["code"]) == (404, 900906)
    missing = await call(app, "GET", "/pets")
    assert (missing.status, missing.json()["code"]) == (401, 900902) and "www-authenticate" in missing.headers


async def test_mutual_ssl_only_ignores_resource_scopes_and_tier_throttles(setup: Setup) -> None:
    app = protect(example_app(), setup.config)
    deleted = await call(app, "DELETE", "/pets/1", setup.header())
    assert deleted.status == 204
    second = await call(app, "GET", "/pets", setup.header())
    assert second.status == 200 and second.headers["ratelimit"].startswith('"Tiny";r=0;')
    third = await call(app, "GET", "/pets", setup.header())
    assert (third.status, third.json()["code"]) == (429, 900804) and int(third.headers["retry-after"]) >= 1
    other = issue_client(setup.ca, "another client")  # its own count
    assert (await call(app, "GET", "/pets", setup.header(other))).status == 200


async def test_secrets_reach_the_app_decrypted(setup: Setup) -> None:
    inner = example_app()
    protect(inner, setup.config)
    assert inner.state.secrets["greeting"] == "hello"
    assert "hello" not in repr(inner.state.secrets) and "hello" not in repr(inner.state.apim_config)


async def test_fastapi_openapi_shows_how_each_api_is_secured(setup: Setup) -> None:
    app = protect(example_app(), setup.config)
    result = await call(app, "GET", "/openapi.json")
    assert result.status == 200
    document = result.json()
    assert document["components"]["securitySchemes"]["mutualTLS"]["type"] == "mutualTLS"
    assert {"mutualTLS": []} in document["paths"]["/pets/whoami"]["get"]["security"]
    assert "security" not in document["paths"]["/health"]["get"]


async def test_lifespan_starts_and_stops_background_work(setup: Setup) -> None:
    app = protect(example_app(), setup.config)
    messages = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[str] = []
    states: list[bool] = []

    async def receive() -> dict[str, Any]:
        states.append(app.background.started)  # type: ignore[attr-defined]
        return messages.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message["type"])

    await app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send)
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert states == [False, True]  # started by the startup message, before the shutdown one arrived
    assert app.background.started is False and app.background._tasks == []  # type: ignore[attr-defined]


async def test_a_request_leaves_only_starlettes_entries_and_a_refusal_keeps_its_reason(setup: Setup) -> None:
    """Decided without awaiting, an accepted certificate leaves ``user`` and ``auth`` in the scope
    and nothing of ours; a refused one, decided by the general path, still says exactly why."""
    from asgi_apim.certs.pki import make_ca as another_ca
    from tests.asgi import call_scope, echo_user, make_scope

    app = protect(echo_user, setup.config)
    for _ in range(2):  # uncached, then cached
        scope = make_scope("GET", "/pets/whoami", setup.header())
        before = set(scope)
        assert (await call_scope(app, scope)).status == 200
        assert set(scope) - before == {"user", "auth"}
    stranger = issue_client(another_ca("stranger CA"), "stranger")
    for _ in range(2):
        refused = await call(app, "GET", "/pets/whoami", setup.header(stranger))
        assert (refused.status, refused.json()["code"]) == (401, 900901)
        assert refused.json()["detail"] == "not issued by a trusted CA"


@pytest.mark.parametrize(
    "path",
    [
        "/health/../pets/1",
        "/health/./x",
        "/pets/1/..",
        "/./pets",
        "/health/..",
        "/health\\..\\pets",
        "/health/..;/pets",
        "/health/.;x/pets",
    ],
)
async def test_a_path_with_dot_segments_is_refused_before_routing(setup: Setup, path: str) -> None:
    # decided on the path as written, resolved by an app or backend that normalises it: refused instead
    app = protect(echo, setup.config)
    refused = await call(app, "GET", path)
    assert (refused.status, refused.json()["code"]) == (400, 900900)
    assert refused.headers["content-type"] == "application/problem+json"


async def test_dotted_names_are_no_dot_segments(setup: Setup) -> None:
    app = protect(echo, setup.config)
    assert (await call(app, "GET", "/health/.well-known")).status == 200
    assert (await call(app, "GET", "/health/v1.2/..x")).status == 200
    assert (await call(app, "GET", "/health/a;b/..x;y")).status == 200


async def echo(
    scope: Any, receive: Any, send: Any
) -> None:  # answers 200 to any path: as an app that resolves dot segments would
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})
