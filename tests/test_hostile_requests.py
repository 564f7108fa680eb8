"""Whatever a client sends, the whole stack fails closed.

Hypothesis draws requests from valid credentials, known-malicious ones
(forged and tampered JWTs, a foreign certificate, broken headers) and random
bytes, for every scheme at once (certificate header, bearer token, API key in
the header or the query, basic auth), from a trusted proxy, an untrusted
peer, or no peer at all. For every request:

- the answer is never a 5xx;
- the app answers (200) only for an authenticated caller, or on the public path;
- a caller authenticated by mutual SSL presented the registered client's
  certificate (in any of the header formats), exactly once, through a
  trusted proxy;
- every refusal is ``application/problem+json`` with the status and WSO2's
  code, a 401 carries ``WWW-Authenticate`` and a 429 ``Retry-After``;
- no refusal echoes a secret the request carried (a valid token, key or password).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import bcrypt
import pytest
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asgi_apim import protect
from asgi_apim.auth.apikey import issue_api_key
from asgi_apim.certs.pki import issue_client, make_ca
from asgi_apim.config import load_config
from tests.asgi import Result, call_scope, echo_user, make_scope
from tests.auth.idp import claims, ec_key, rsa_key
from tests.e2e.idp import malicious_tokens

CERT_HEADER = "x-wso2-client-certificate"
PASSWORD = "b0b-s3cret-pw"
TRUSTED = [("127.0.0.1", 50000), ("::1", 50000)]
UNTRUSTED = [("192.0.2.7", 50000), ("10.0.0.1", 443)]

CONFIG = """
public_paths = ["/health"]

[encryption]
key = "{key}"

[mutual_ssl]
trusted_proxies = ["127.0.0.1/32"]
truststore = ["ca.pem"]
reload_interval = 60

[throttling.tiers]
Tiny = "40/minute"

[[key_managers]]
name = "idp"
issuer = "https://idp.example"
audience = ["pets"]
jwks_file = "jwks.json"
algorithms = ["RS256"]

[api_keys]
signing_key = "apikey-signing.pem"

[basic_auth]
users_file = "users.htpasswd"

[[apis]]
name = "pets"
context = "/pets"

[apis.security]
mutual_ssl = "mandatory"

[[apis.certificates]]
alias = "partners"
certificate = "ca.pem"
tier = "Tiny"

[[apis]]
name = "shop"
context = "/shop"

[apis.security]
mutual_ssl = "optional"
application = ["oauth2", "api_key", "basic"]

[[apis.certificates]]
alias = "partners"
certificate = "ca.pem"
tier = "Tiny"

[[apis.resources]]
path = "/shop/{{id}}"
methods = ["DELETE"]
scopes = ["shop:write"]
"""


@dataclass
class World:
    app: Any
    loop: asyncio.AbstractEventLoop
    certificate: str  # the registered client's, URL-encoded PEM as nginx sends it
    secrets: list[str]  # valid credentials and the password: never to be echoed
    values: dict[str, list[str]]  # per header name, the values to draw from besides random text


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("hostile")
    ca = make_ca("hostile CA")
    ca.write(tmp / "ca.pem")
    client = issue_client(ca, "registered client")
    foreign = issue_client(None, "foreign client")
    no_eku = issue_client(ca, "no-eku client", eku=None)
    key, rogue = rsa_key("k1"), rsa_key("k1", second=True)
    (tmp / "jwks.json").write_text(json.dumps({"keys": [key.jwk()]}))
    (tmp / "apikey-signing.pem").write_bytes(
        ec_key().key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    )
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode().replace("$2b$", "$2y$", 1)
    (tmp / "users.htpasswd").write_text(f"bob:{hashed}\n")
    config_file = tmp / "deployment.toml"
    config_file.write_text(CONFIG.format(key=os.urandom(32).hex()))
    config = load_config(config_file)

    def url_pem(issued: Any) -> str:
        return quote(issued.cert_pem().decode(), safe="")

    certificate = url_pem(client)
    token = key.sign(claims(aud="pets"))
    writer = key.sign(claims(aud="pets", scope="shop:write"))
    api_key = issue_api_key(config, "shop", "Tiny")
    basic = "Basic " + base64.b64encode(f"bob:{PASSWORD}".encode()).decode()
    bad_tokens = list(malicious_tokens(key, rogue).values())
    values = {
        CERT_HEADER: [
            certificate,
            url_pem(foreign),
            url_pem(no_eku),
            certificate[: len(certificate) // 2],
            "(null)",
            "",
            client.cert_pem().decode().replace("\n", " "),
            "%ZZ%",
            "-----BEGIN CERTIFICATE-----",
        ],
        "authorization": [
            f"Bearer {token}",
            f"Bearer {writer}",
            basic,
            *(f"Bearer {t}" for t in bad_tokens[:12]),
            "Bearer",
            "Basic",
            "Basic !!!",
            "Basic " + base64.b64encode(b"bob:wrong").decode(),
            "Basic " + base64.b64encode(b"no-colon").decode(),
            f"bearer {token}",
            f"Bearer  {token} x",
        ],
        "apikey": [api_key, api_key[:-4], api_key + "x", "", "a.b.c"],
        "x-forwarded-for": ["127.0.0.1", "192.0.2.7, 127.0.0.1", "garbage", ""],
        "host": ["localhost", "", "evil.example"],
    }
    loop = asyncio.new_event_loop()
    app = protect(echo_user, config)
    try:
        yield World(app, loop, certificate, [token, writer, api_key, PASSWORD, basic.split()[1]], values)
    finally:
        loop.run_until_complete(app.background.stop())
        loop.close()


extra_names = st.sampled_from(["x-forwarded-for", "host"]) | st.text(
    "abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=20
)
API_PATHS = ["/pets", "/pets/1", "/pets/whoami", "/shop", "/shop/1", "/shop/1/x", "/shop/"]
OTHER_PATHS = [
    "/health",
    "/health/x",
    "/elsewhere",
    "/",
    "/pets/../health",
    "/health/../pets",
    "//pets",
    "/PETS",
    "/shopping",
    "/pets%2Fwhoami",
]
paths = (
    st.sampled_from(API_PATHS) | st.sampled_from(OTHER_PATHS) | st.text(min_size=0, max_size=30).map(lambda s: "/" + s)
)
methods = st.sampled_from(["GET", "POST", "DELETE", "PUT", "PATCH", "OPTIONS", "HEAD"]) | st.text(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=1, max_size=8
)
clients = st.sampled_from([*TRUSTED, *UNTRUSTED, None])
latin1 = st.binary(max_size=300).map(lambda b: b.decode("latin-1"))
b64 = st.binary(max_size=120).map(lambda b: base64.b64encode(b).decode())
jwt_like = st.lists(
    st.binary(max_size=90).map(lambda b: base64.urlsafe_b64encode(b).decode().rstrip("=")), min_size=1, max_size=4
).map(".".join)
# well-formed on the outside, anything inside: what reaches each scheme's decoder
SHAPED = {
    CERT_HEADER: b64
    | b64.map(lambda v: quote(f"-----BEGIN CERTIFICATE-----\n{v}\n-----END CERTIFICATE-----\n", safe="")),
    "authorization": st.builds(
        "{} {}".format, st.sampled_from(["Bearer", "Basic", "bearer", "BASIC", "Digest"]), b64 | jwt_like | latin1
    ),
    "apikey": jwt_like,
}


@st.composite
def requests(draw: st.DrawFn, world: World) -> dict[str, Any]:
    """Each credential header absent, once (most often) or twice, its value from the pool (valid
    first, so valid credentials meet every peer and path), well-formed around random content, or
    random; then a few other headers, in any order."""
    headers = []
    for name in (CERT_HEADER, "authorization", "apikey"):
        pool = world.values[name]
        for _ in range(draw(st.sampled_from([0, 1, 1, 2]))):
            headers.append((name, draw(st.sampled_from([pool[0]] * 3 + pool[1:]) | SHAPED[name] | latin1)))
    for name in draw(st.lists(extra_names, max_size=3)):
        pool = world.values.get(name)
        headers.append((name, draw(st.sampled_from(pool) | latin1) if pool else draw(latin1)))
    headers = draw(st.permutations(headers))
    query = draw(
        st.sampled_from(["", f"apikey={world.values['apikey'][0]}", "apikey=", "apikey=a.b.c&apikey=x"])
        | latin1.map(quote)
    )
    scope = make_scope(draw(methods), draw(paths), headers, query=query)
    scope["client"] = draw(clients)
    return scope


def _authenticated_by_certificate(body: dict[str, Any]) -> bool:
    return body.get("method") == "mutual_ssl" or "mutual_ssl" in body.get("methods", ())


def check(world: World, scope: dict[str, Any], result: Result) -> None:
    assert result.status < 500, (result.status, result.body)
    if result.status == 200:
        body = result.json()
        if not body["authenticated"]:
            assert scope["path"] == "/health" or scope["path"].startswith("/health/"), scope["path"]
        if _authenticated_by_certificate(
            body
        ):  # the registered client's certificate (in any format), once, from a trusted proxy
            presented = [v for k, v in scope["headers"] if k == CERT_HEADER.encode()]
            assert len(presented) == 1 and scope["client"] in TRUSTED and body["alias"] == "partners"
            if (
                body["method"] == "mutual_ssl"
            ):  # else the subject is the application credential's, the certificate kept beside it
                assert "CN=registered client" in body["subject"]
        return
    assert result.headers["content-type"] == "application/problem+json", result.headers
    problem = result.json()
    assert problem["status"] == result.status and isinstance(problem["code"], int) and problem["title"]
    if result.status == 401:
        assert "www-authenticate" in result.headers
    if result.status == 429:
        assert int(result.headers["retry-after"]) >= 1
    text = result.body.decode("utf-8", "replace") + json.dumps(result.headers)
    for secret in world.secrets:
        assert secret not in text


@settings(
    max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(data=st.data())
def test_any_request_is_refused_cleanly_or_reaches_the_app_authenticated(world: World, data: st.DataObject) -> None:
    scope = data.draw(requests(world))
    sent = {**scope, "headers": list(scope["headers"])}  # as sent: the stack takes the credentials out of scope
    result = world.loop.run_until_complete(call_scope(world.app, scope))
    try:
        check(world, sent, result)
    except AssertionError as exc:  # what the stack answered, beside the drawn request hypothesis prints
        raise AssertionError(f"{exc}\nanswer: {result.status} {result.headers} {result.body[:600]!r}") from None


def test_the_drawn_credentials_do_get_through(world: World) -> None:
    """The property above is not vacuous: each valid credential reaches the app."""
    token, writer, api_key, _, basic = world.secrets
    cases = [
        ("/pets/whoami", [(CERT_HEADER, world.certificate)], "", "mutual_ssl"),
        ("/shop/1", [("authorization", f"Bearer {token}")], "", "oauth2"),
        ("/shop/1", [("apikey", api_key)], "", "api_key"),
        ("/shop/1", [], f"apikey={api_key}", "api_key"),
        ("/shop/1", [("authorization", f"Basic {basic}")], "", "basic"),
    ]
    for path, headers, query, method in cases:
        scope = make_scope("GET", path, headers, query=query)
        sent = {**scope, "headers": list(scope["headers"])}
        result = world.loop.run_until_complete(call_scope(world.app, scope))
        check(world, sent, result)
        assert result.status == 200 and result.json()["method"] == method, (path, method, result.body)
    scope = make_scope("DELETE", "/shop/1", [("authorization", f"Bearer {token}")])
    refused = world.loop.run_until_complete(call_scope(world.app, scope))
    check(world, scope, refused)
    assert (refused.status, refused.json()["code"]) == (403, 900910)
    untrusted = make_scope("GET", "/pets/whoami", [(CERT_HEADER, world.certificate)], client=UNTRUSTED[0])
    result = world.loop.run_until_complete(call_scope(world.app, untrusted))
    check(world, untrusted, result)
    assert result.status == 401
