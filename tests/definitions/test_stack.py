"""The test definitions securing an app in-process: schemes and their own credential places,
scopes, public operations, versions, interceptors, transports and CORS, as the documents say."""

from __future__ import annotations

import base64
import logging
from pathlib import Path

import httpx
import pytest

from asgi_apim import protect
from asgi_apim.config import load_config
from tests.definitions.app import app
from tests.definitions.conftest import PETSTORE, PIZZASHACK, USER, Setup, token, write_setup

BASIC = "Basic " + base64.b64encode(f"{USER[0]}:{USER[1]}".encode()).decode()


def client(setup: Setup, scheme: str = "http") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=protect(app, setup.config))
    return httpx.AsyncClient(transport=transport, base_url=f"{scheme}://testserver")


async def test_oauth2_with_the_version_in_the_user_and_both_interceptors(setup: Setup) -> None:
    async with client(setup) as c:
        r = await c.get("/petstore/1.0.0/pets", headers={"authorization": f"Bearer {token()}"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["method"], body["subject"], body["api"], body["version"]) == ("oauth2", "alice", PETSTORE, "1.0.0")
    assert body["headers"]["x-intercepted"] == "alice@1.0.0"  # the request interceptor, after authentication
    assert "authorization" not in body["headers"]
    assert r.headers["x-intercepted"] == "response"  # the response interceptor


async def test_default_version_serves_the_unversioned_context(setup: Setup) -> None:
    async with client(setup) as c:
        r = await c.get("/petstore/pets", headers={"authorization": f"Bearer {token()}"})
        other = await c.get("/petstore/2.0.0/pets", headers={"authorization": f"Bearer {token()}"})
    assert r.status_code == 200 and r.json()["version"] == "1.0.0"
    assert other.status_code == 200  # below the unversioned context, an unknown version is just a path of it
    async with client(setup) as c:
        missing = await c.get("/pizzashack/order/1")  # pizzashack has no default version
    assert missing.status_code == 404 and missing.json()["code"] == 900906


async def test_api_key_in_its_own_header_or_query_parameter_only(setup: Setup) -> None:
    key = setup.api_key(PETSTORE)
    async with client(setup) as c:
        in_header = await c.get("/petstore/1.0.0/pets", headers={"X-Pet-Key": key})
        in_query = await c.get("/petstore/1.0.0/pets", params={"pet_key": key, "status": "sold"})
        default_place = await c.get("/petstore/1.0.0/pets", headers={"apikey": key})
    assert in_header.status_code == 200 and in_header.json()["method"] == "api_key"
    assert "x-pet-key" not in in_header.json()["headers"]  # the credential stops at the stack
    assert in_query.status_code == 200 and in_query.json()["query"] == "status=sold"
    assert default_place.status_code == 401 and default_place.json()["code"] == 900902


async def test_operation_scopes_and_schemes(setup: Setup) -> None:
    async with client(setup) as c:
        no_scope = await c.post("/petstore/1.0.0/pets", headers={"authorization": f"Bearer {token()}"})
        scoped = await c.post("/petstore/1.0.0/pets", headers={"authorization": f"Bearer {token('write:pets')}"})
        key = await c.post("/petstore/1.0.0/pets", headers={"X-Pet-Key": setup.api_key(PETSTORE, "write:pets")})
        basic = await c.get("/petstore/1.0.0/pets/findByStatus", headers={"authorization": BASIC})
        bearer = await c.get("/petstore/1.0.0/pets/findByStatus", headers={"authorization": f"Bearer {token()}"})
        public = await c.get("/petstore/1.0.0/pets/7")
    assert no_scope.status_code == 403 and no_scope.json()["code"] == 900910
    assert scoped.status_code == 200
    assert key.status_code == 401  # POST /pets is oauth2 only
    assert basic.status_code == 200 and basic.json()["method"] == "basic"
    assert basic.json()["version"] == "1.0.0"
    assert bearer.status_code == 401
    assert public.status_code == 200 and public.json()["authenticated"] is False


async def test_an_interceptor_answers_early_after_authentication(setup: Setup) -> None:
    async with client(setup) as c:
        anonymous = await c.delete("/petstore/1.0.0/pets/7")
        refused = await c.delete("/petstore/1.0.0/pets/7", headers={"authorization": f"Bearer {token('write:pets')}"})
    assert anonymous.status_code == 401
    assert refused.status_code == 409 and refused.json() == {"refused": True, "subject": "alice"}


async def test_swagger_auth_header_and_per_operation_schemes(setup: Setup) -> None:
    key = setup.api_key(PIZZASHACK)
    async with client(setup) as c:
        own_header = await c.post("/pizzashack/1.0.0/order", headers={"X-Pizza-Auth": f"Bearer {token('order:write')}"})
        authorization = await c.post(
            "/pizzashack/1.0.0/order", headers={"authorization": f"Bearer {token('order:write')}"}
        )
        by_key = await c.get("/pizzashack/1.0.0/order/1", headers={"X-Pizza-Key": key})
        key_in_query = await c.get("/pizzashack/1.0.0/order/1", params={"apikey": key})
        by_basic = await c.put("/pizzashack/1.0.0/order/1", headers={"authorization": BASIC})
        menu = await c.get("/pizzashack/1.0.0/menu")
    assert own_header.status_code == 200 and own_header.json()["method"] == "oauth2"
    assert "x-pizza-auth" not in own_header.json()["headers"]
    assert authorization.status_code == 401
    assert by_key.status_code == 200 and by_key.json()["method"] == "api_key"
    assert key_in_query.status_code == 401  # the scheme is in: header
    assert by_basic.status_code == 200 and by_basic.json()["method"] == "basic"
    assert menu.status_code == 200


async def test_https_only_refuses_plain_http(setup: Setup) -> None:
    async with client(setup) as c:
        plain = await c.get("/vault/v2/secrets", headers={"authorization": f"Bearer {token()}"})
    async with client(setup, "https") as c:
        secure = await c.get("/vault/v2/secrets", headers={"authorization": f"Bearer {token()}"})
        both = await c.delete("/vault/v2/secrets/1", headers={"authorization": f"Bearer {token()}"})
    assert plain.status_code == 403 and plain.json()["code"] == 900906
    assert plain.headers["content-type"] == "application/problem+json"
    assert secure.status_code == 200 and secure.json()["version"] == "v2"
    assert both.status_code == 401  # a client certificate and a token, both mandatory


async def test_cors_preflight_before_authentication_and_on_actual_responses(setup: Setup) -> None:
    preflight = {"origin": "https://shop.example", "access-control-request-method": "POST"}
    async with client(setup) as c:
        allowed = await c.options("/petstore/1.0.0/pets", headers=preflight)
        other = await c.options("/petstore/1.0.0/pets", headers={**preflight, "origin": "https://evil.example"})
        actual = await c.get(
            "/petstore/1.0.0/pets", headers={"origin": "https://shop.example", "authorization": f"Bearer {token()}"}
        )
        refused = await c.get("/petstore/1.0.0/pets", headers={"origin": "https://shop.example"})
        foreign = await c.get(
            "/petstore/1.0.0/pets", headers={"origin": "https://evil.example", "authorization": f"Bearer {token()}"}
        )
        star = await c.options(
            "/pizzashack/1.0.0/order", headers={"origin": "https://any.example", "access-control-request-method": "PUT"}
        )
        none = await c.options("/vault/v2/secrets", headers=preflight)
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://shop.example"
    assert allowed.headers["access-control-allow-credentials"] == "true"
    assert "POST" in allowed.headers["access-control-allow-methods"]
    assert "x-pet-key" in allowed.headers["access-control-allow-headers"]
    assert not any(h.startswith("access-control-") for h in other.headers)
    assert other.status_code == 401  # not a preflight this API answers: authenticated like any request
    assert actual.status_code == 200 and actual.headers["access-control-allow-origin"] == "https://shop.example"
    assert actual.headers["access-control-expose-headers"] == "x-intercepted"
    assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == "https://shop.example"
    assert foreign.status_code == 200 and not any(h.startswith("access-control-") for h in foreign.headers)
    assert star.status_code == 200 and star.headers["access-control-allow-origin"] == "*"
    assert none.status_code == 403  # vault has no CORS (and refuses plain HTTP)


async def test_toml_keys_beside_the_definition_override_it(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    apis = """
[[apis]]
definition = "{here}/petstore.yaml"
name = "pets"
version = "2.0.0"
tier = "Silver"
[apis.cors]
allow_origins = ["https://other.example"]
"""
    with caplog.at_level(logging.INFO, logger="asgi_apim.config"):
        cfg = load_config(write_setup(tmp_path, apis))
    api = cfg.apis[0]
    assert (api.name, api.context, api.tier, api.version) == ("pets", "/petstore/2.0.0", "Silver", "2.0.0")
    assert api.cors is not None and api.cors.allow_origins == ("https://other.example",)
    assert api.resources[1].tier == "Bronze"  # the rest is the definition's
    logged = " ".join(r.getMessage() for r in caplog.records)
    for key in ("name", "version", "tier", "cors"):
        assert f"apis[0].{key} overrides what petstore.yaml gives" in logged


async def test_a_failing_interceptor_is_a_logged_500_never_a_hang(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    apis = """
[[apis]]
name = "broken"
context = "/broken"
interceptors = ["tests.definitions.hooks:broken"]
[[apis]]
name = "late"
context = "/late"
response_interceptors = ["tests.definitions.hooks:broken_response"]
"""
    setup = Setup(tmp_path, load_config(write_setup(tmp_path, apis)))
    with caplog.at_level(logging.ERROR, logger="asgi_apim.interceptors"):
        async with client(setup) as c:
            early = await c.get("/broken/x", headers={"authorization": f"Bearer {token()}"})
            late = await c.get("/late/x", headers={"authorization": f"Bearer {token()}"})
    for r in (early, late):
        assert r.status_code == 500, r.text
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["code"] == 101500
        assert "alice" not in r.text
    assert "this interceptor is broken" in caplog.text and "Traceback" in caplog.text
    assert "this response interceptor is broken" in caplog.text


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("tests.definitions.hooks:not_async", "is not an async callable"),
        ("tests.definitions.hooks:nothing", "has no 'nothing'"),
        ("tests.definitions.no_such_module:f", "cannot import"),
    ],
)
def test_an_interceptor_that_cannot_be_used_stops_start_up(tmp_path: Path, spec: str, message: str) -> None:
    from asgi_apim.errors import ConfigError

    apis = f'[[apis]]\nname = "a"\ncontext = "/a"\ninterceptors = ["{spec}"]\n'
    cfg = load_config(write_setup(tmp_path, apis.replace("{", "{{").replace("}", "}}")))
    with pytest.raises(ConfigError, match=message) as caught:
        protect(app, cfg)
    assert "apis[a].interceptors[0]" in str(caught.value)
