"""The credential that authenticated a request stops at the stack (``forward_credentials``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from asgi_apim import protect
from asgi_apim.auth.apikey import issue_api_key
from asgi_apim.certs.pki import issue_client, make_ca
from asgi_apim.config import load_config
from tests.asgi import call
from tests.auth.idp import claims, rsa_key

CONFIG = """
forward_credentials = {forward}

[encryption]
key = "{key}"

[mutual_ssl]
truststore = ["ca.pem"]
trusted_proxies = ["127.0.0.1/32"]

[[key_managers]]
name = "idp"
issuer = "https://idp.example"
audience = "pets"
jwks_file = "jwks.json"

[api_keys]
signing_key = "signing.pem"

[[apis]]
name = "certs"
context = "/certs"
[apis.security]
mutual_ssl = "mandatory"
[[apis.certificates]]
alias = "partners"
certificate = "ca.pem"

[[apis]]
name = "both"
context = "/both"
[apis.security]
mutual_ssl = "mandatory"
application = ["oauth2"]
application_mandatory = true
[[apis.certificates]]
alias = "partners"
certificate = "ca.pem"

[[apis]]
name = "tokens"
context = "/tokens"
[apis.security]
mutual_ssl = "disabled"
application = ["oauth2", "api_key"]

[[apis]]
name = "raw"
context = "/raw"
forward_credentials = true
[apis.security]
mutual_ssl = "disabled"
application = ["oauth2"]
"""


async def echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """An app that answers with what it received: headers, query string, and who is calling."""
    user = scope.get("user")
    doc = {
        "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]],
        "query": scope["query_string"].decode("latin-1"),
        "user": user.as_dict() if hasattr(user, "as_dict") else None,
    }
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": json.dumps(doc).encode()})


@pytest.fixture(scope="module", params=[False, True], ids=["stopped", "forwarded"])
def setup(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

    tmp: Path = tmp_path_factory.mktemp("credentials")
    ca = make_ca("credentials CA")
    ca.write(tmp / "ca.pem")
    key = rsa_key()
    (tmp / "jwks.json").write_text(json.dumps({"keys": [key.jwk()]}))
    signing = ec.generate_private_key(ec.SECP256R1())
    (tmp / "signing.pem").write_bytes(signing.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    forward = request.param
    (tmp / "deployment.toml").write_text(CONFIG.format(key="56" * 32, forward=str(forward).lower()))
    cfg = load_config(tmp / "deployment.toml")
    return {
        "app": protect(echo, cfg),
        "forward": forward,
        "cert": quote(issue_client(ca, "client").cert_pem().decode(), safe=""),
        "token": key.sign(claims(iss="https://idp.example")),
        "apikey": issue_api_key(cfg, "tokens", "Unlimited", subject="k"),
    }


OTHER = [("accept", "application/json"), ("x-request-id", "r-1"), ("cookie", "a=b")]


async def _seen(setup: dict[str, Any], path: str, headers: list[tuple[str, str]], query: str = "") -> dict[str, Any]:
    r = await call(setup["app"], "GET", path, [*OTHER[:2], *headers, OTHER[2]], query=query)
    assert r.status == 200, r.body
    return r.json()  # type: ignore[no-any-return]


def _names(doc: dict[str, Any]) -> list[str]:
    return [k for k, _ in doc["headers"]]


async def test_the_certificate_header(setup: dict[str, Any]) -> None:
    doc = await _seen(setup, "/certs/x", [("x-wso2-client-certificate", setup["cert"])])
    assert doc["user"]["alias"] == "partners"
    expected = ["accept", "x-request-id", "x-wso2-client-certificate", "cookie"] if setup["forward"] else None
    assert _names(doc) == (expected or ["accept", "x-request-id", "cookie"])
    assert doc["headers"][:2] == [list(h) for h in OTHER[:2]]


async def test_the_certificate_header_last_and_first(setup: dict[str, Any]) -> None:
    """Where a proxy appends it (last), and where another puts it first: taken out either way,
    the other headers in their order."""
    cert = ("x-wso2-client-certificate", setup["cert"])
    for headers in ([*OTHER, cert], [cert, *OTHER]):
        for _ in range(2):  # validated, then cached
            r = await call(setup["app"], "GET", "/certs/x", headers)
            doc = r.json()
            assert r.status == 200 and doc["user"]["alias"] == "partners"
            expected = [list(h) for h in headers if setup["forward"] or h is not cert]
            assert doc["headers"] == expected


async def test_both_the_certificate_and_the_token(setup: dict[str, Any]) -> None:
    doc = await _seen(
        setup,
        "/both/x",
        [("x-wso2-client-certificate", setup["cert"]), ("authorization", f"Bearer {setup['token']}")],
    )
    assert doc["user"]["methods"] == ["mutual_ssl", "oauth2"]
    forwarded = {"x-wso2-client-certificate", "authorization"} <= set(_names(doc))
    assert forwarded is setup["forward"] and ({"accept", "x-request-id", "cookie"} <= set(_names(doc)))


async def test_a_bearer_token(setup: dict[str, Any]) -> None:
    doc = await _seen(setup, "/tokens/x", [("authorization", f"Bearer {setup['token']}")])
    assert doc["user"]["method"] == "oauth2"
    assert ("authorization" in _names(doc)) is setup["forward"]


async def test_an_api_key_in_the_header_and_in_the_query(setup: dict[str, Any]) -> None:
    doc = await _seen(setup, "/tokens/x", [("apikey", setup["apikey"])])
    assert doc["user"]["method"] == "api_key" and ("apikey" in _names(doc)) is setup["forward"]
    query = f"a=1&apikey={setup['apikey']}&b=%20x&apikey2=keep&c"
    doc = await _seen(setup, "/tokens/x", [], query=query)
    assert doc["user"]["method"] == "api_key"
    assert doc["query"] == (query if setup["forward"] else "a=1&b=%20x&apikey2=keep&c")
    plus = f"apikey={setup['apikey']}&note=a+b&apikey=second"  # every copy of the parameter goes
    doc = await _seen(setup, "/tokens/x", [], query=plus)
    assert doc["query"] == (plus if setup["forward"] else "note=a+b")


async def test_an_api_that_forwards_keeps_the_token(setup: dict[str, Any]) -> None:
    doc = await _seen(setup, "/raw/x", [("authorization", f"Bearer {setup['token']}")])
    assert "authorization" in _names(doc)


async def test_a_credential_that_did_not_decide_is_not_touched(setup: dict[str, Any]) -> None:
    """An API key sent beside the token that decided is not the request's credential."""
    doc = await _seen(setup, "/tokens/x", [("authorization", f"Bearer {setup['token']}"), ("apikey", "unread")])
    assert doc["user"]["method"] == "oauth2" and "apikey" in _names(doc)
