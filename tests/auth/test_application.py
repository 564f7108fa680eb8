"""`ApplicationSecurity`: one credential header per request, the recall, the scopes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from asgi_apim import protect
from asgi_apim.auth.apikey import issue_api_key
from asgi_apim.config import load_config
from tests.asgi import call, echo_user
from tests.auth.idp import claims, rsa_key

CONFIG = """
[encryption]
key = "{key}"

[[key_managers]]
name = "idp"
issuer = "https://idp.example"
audience = "pets"
jwks_file = "jwks.json"

[api_keys]
signing_key = "signing.pem"

[[apis]]
name = "pets"
context = "/pets"
[apis.security]
mutual_ssl = "disabled"
application = ["oauth2", "api_key"]

[[apis]]
name = "keys"
context = "/keys"
[apis.security]
mutual_ssl = "disabled"
application = ["api_key"]
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

    tmp: Path = tmp_path_factory.mktemp("application")
    key = rsa_key()
    (tmp / "jwks.json").write_text(json.dumps({"keys": [key.jwk()]}))
    signing = ec.generate_private_key(ec.SECP256R1())
    (tmp / "signing.pem").write_bytes(signing.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    (tmp / "deployment.toml").write_text(CONFIG.format(key="34" * 32))
    cfg = load_config(tmp / "deployment.toml")
    return {
        "fast": protect(echo_user, cfg),
        "general": protect(echo_user, cfg, explain=True),
        "token": key.sign(claims(iss="https://idp.example")),
        "other": key.sign(claims(iss="https://idp.example", sub="mallory")),
        "apikey": {api: issue_api_key(cfg, api, "Unlimited", subject="k") for api in ("pets", "keys")},
    }


@pytest.mark.parametrize("which", ["fast", "general"])
@pytest.mark.parametrize("warm", [False, True], ids=["first", "cached"])
async def test_two_authorization_headers_are_refused(stack: dict[str, Any], which: str, warm: bool) -> None:
    app, token = stack[which], stack["token"]
    if warm:
        assert (await call(app, "GET", "/pets/x", [("authorization", f"Bearer {token}")])).status == 200
    for second in (token, stack["other"], "garbage"):
        r = await call(app, "GET", "/pets/x", [("authorization", f"Bearer {token}"), ("authorization", second)])
        assert (r.status, r.json()["code"]) == (400, 900900), r.body
        assert "authorization header appears more than once" in r.json()["detail"]


@pytest.mark.parametrize("which", ["fast", "general"])
@pytest.mark.parametrize("path", ["/pets/x", "/keys/x"])
async def test_two_api_key_headers_are_refused(stack: dict[str, Any], which: str, path: str) -> None:
    app, key = stack[which], stack["apikey"][path.split("/")[1]]
    assert (await call(app, "GET", path, [("apikey", key)])).status == 200
    for _ in range(2):
        r = await call(app, "GET", path, [("apikey", key), ("apikey", key)])
        assert (r.status, r.json()["code"]) == (400, 900900)


async def test_one_of_each_scheme_is_not_a_duplicate(stack: dict[str, Any]) -> None:
    r = await call(
        stack["fast"],
        "GET",
        "/pets/x",
        [("authorization", f"Bearer {stack['token']}"), ("apikey", stack["apikey"]["pets"])],
    )
    assert r.status == 200 and r.json()["method"] == "oauth2"
