"""No credential reaches the app: httpbin, a third-party app that echoes every header and query
parameter it receives, under a real ``asgi-apim serve`` over TLS.

Mutual TLS (a trusted proxy's certificate header, and the TLS connection itself), an OAuth2
bearer token, an API key in its header and in the query, and basic credentials: what httpbin
echoes never holds the credential, and everything else arrives. With ``forward_credentials =
true`` the same credentials do reach it.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import bcrypt
import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from asgi_apim.auth.apikey import issue_api_key
from asgi_apim.config import load_config
from tests.auth.idp import claims, rsa_key
from tests.e2e.conftest import PKI, Served, Servers, write_pki

CONFIG = """
[encryption]
key = "{key}"

[mutual_ssl]
truststore = ["pki/ca.pem"]
trusted_proxies = ["127.0.0.1/32"]   # the test client plays the TLS-terminating proxy

[[key_managers]]
name = "idp"
issuer = "https://idp.example"
audience = "pets"
jwks_file = "jwks.json"

[api_keys]
signing_key = "signing.pem"

[basic_auth]
users_file = "users.htpasswd"

[[apis]]
name = "certs"
context = "/anything/certs"
forward_credentials = {forward}
[apis.security]
mutual_ssl = "mandatory"
[[apis.certificates]]
alias = "partners"
certificate = "pki/ca.pem"

[[apis]]
name = "app"
context = "/anything/app"
forward_credentials = {forward}
[apis.security]
mutual_ssl = "disabled"
application = ["oauth2", "api_key", "basic"]
"""
PASSWORD = "s3cret-Passw0rd"


@pytest.fixture(scope="module", params=[False, True], ids=["stopped", "forwarded"])
def echo(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp: Path = tmp_path_factory.mktemp("echo")
    pki = write_pki(tmp / "pki")
    key = rsa_key()
    (tmp / "jwks.json").write_text(json.dumps({"keys": [key.jwk()]}))
    signing = ec.generate_private_key(ec.SECP256R1())
    (tmp / "signing.pem").write_bytes(signing.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    (tmp / "users.htpasswd").write_text(f"alice:{bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()}\n")
    forward = request.param
    config = tmp / "deployment.toml"
    config.write_text(CONFIG.format(key="57" * 32, forward=str(forward).lower()))
    servers = Servers(tmp)
    served = servers.serve("tests.e2e.echo_app:app", config, "--ssl-cert-reqs", "1", tls_pki=pki)
    try:
        yield {
            "served": served,
            "pki": pki,
            "forward": forward,
            "token": key.sign(claims(iss="https://idp.example")),
            "apikey": issue_api_key(load_config(config, read_only=True), "app", "Unlimited", subject="k"),
        }
    finally:
        servers.stop_all()


def _get(echo: dict[str, Any], path: str, *, cert: str | None = None, **kw: Any) -> httpx.Response:
    pki: PKI = echo["pki"]
    served: Served = echo["served"]
    with httpx.Client(verify=pki.client_context(cert), base_url=served.url, timeout=10) as client:
        return client.get(path, headers={"x-trace": "t-1", **kw.pop("headers", {})}, **kw)


def _check(echo: dict[str, Any], response: httpx.Response, *secrets: str) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    seen: dict[str, Any] = response.json()
    assert seen["headers"]["X-Trace"] == "t-1"  # the other headers arrive
    for secret in secrets:
        assert (secret in response.text) is echo["forward"], secret
    return seen


def test_bearer_token(echo: dict[str, Any]) -> None:
    token = echo["token"]
    seen = _check(echo, _get(echo, "/anything/app/x", headers={"authorization": f"Bearer {token}"}), token)
    assert ("Authorization" in seen["headers"]) is echo["forward"]


def test_api_key_in_its_header(echo: dict[str, Any]) -> None:
    key = echo["apikey"]
    seen = _check(echo, _get(echo, "/anything/app/x", headers={"apikey": key}), key)
    assert ("Apikey" in seen["headers"]) is echo["forward"]


def test_api_key_in_the_query(echo: dict[str, Any]) -> None:
    key = echo["apikey"]
    seen = _check(echo, _get(echo, "/anything/app/x", params=[("a", "1"), ("apikey", key), ("b", "2")]), key)
    assert seen["args"]["a"] == "1" and seen["args"]["b"] == "2"
    assert ("apikey" in seen["args"]) is echo["forward"]


def test_basic(echo: dict[str, Any]) -> None:
    encoded = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    response = _get(echo, "/anything/app/x", headers={"authorization": f"Basic {encoded}"})
    _check(echo, response, encoded)
    assert PASSWORD not in response.text  # never in clear, forwarded or not


def test_certificate_header_from_a_trusted_proxy(echo: dict[str, Any]) -> None:
    pki: PKI = echo["pki"]
    pem = pki.client.cert_pem().decode()
    header = quote(pem, safe="")
    seen = _check(
        echo, _get(echo, "/anything/certs/x", headers={"x-wso2-client-certificate": header}), header.split("%0A")[1]
    )
    assert ("X-Wso2-Client-Certificate" in seen["headers"]) is echo["forward"]


def test_certificate_of_the_tls_connection(echo: dict[str, Any]) -> None:
    response = _get(echo, "/anything/certs/x", cert="client")
    seen = _check(echo, response)
    assert "X-Wso2-Client-Certificate" not in seen["headers"]


def test_refused_without_credentials(echo: dict[str, Any]) -> None:
    assert _get(echo, "/anything/app/x").status_code == 401
    assert _get(echo, "/anything/certs/x").status_code == 401
