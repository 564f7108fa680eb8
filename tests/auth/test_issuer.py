"""The token service in process, the trusted issuers' key sources, and their configuration."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import bcrypt
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from hypothesis import given, settings
from hypothesis import strategies as st

from asgi_apim import protect
from asgi_apim.auth.apikey import ApiKeyAuthenticator
from asgi_apim.auth.keysources import KeyIssuer
from asgi_apim.auth.signing import public_jwk
from asgi_apim.certs.pki import issue_client, make_ca
from asgi_apim.config import ApiConfig, load_config
from asgi_apim.errors import ConfigError, InvalidCredentials
from asgi_apim.gateway.app import gateway
from tests.asgi import call

PETS = ApiConfig(name="pets", context="/pets")


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    user = scope.get("user")
    body = json.dumps({"subject": getattr(user, "subject", None)}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


def write(tmp_path: Path, issuer: str = "", extra: str = "", *, key: Any = None) -> Path:
    key = key or ed25519.Ed25519PrivateKey.generate()
    (tmp_path / "signing.pem").write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    (tmp_path / "users").write_text(f"alice:{bcrypt.hashpw(b'pw', bcrypt.gensalt(4)).decode()}\n")
    ca = make_ca("issuer CA")
    ca.write(tmp_path / "ca.pem")
    issue_client(ca, "robot").write(tmp_path / "robot.pem", tmp_path / "robot.key")
    text = (
        f'{extra}\n[encryption]\nkey = "{"ab" * 32}"\n'
        '[mutual_ssl]\ntruststore = ["ca.pem"]\ntrusted_proxies = ["127.0.0.1/32"]\n'
        '[basic_auth]\nusers_file = "users"\n'
        f'[api_keys]\nsigning_key = "signing.pem"\n[api_keys.issuer]\nenabled = true\n{issuer}\n'
    )
    for name in ("pets", "cats", "dogs"):
        scheme = "oauth2" if name == "dogs" else "api_key"
        text += f'[[apis]]\nname = "{name}"\ncontext = "/{name}"\n[apis.security]\napplication = ["{scheme}"]\n'
    text += '[[key_managers]]\nname = "idp"\nissuer = "https://idp"\nshared_secret = "' + "s" * 32 + '"\n'
    text += 'algorithms = ["HS256"]\n'
    path = tmp_path / "deployment.toml"
    path.write_text(text)
    return path


def basic(user: str, password: str) -> tuple[str, str]:
    return ("authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())


async def test_keys_for_every_api_that_accepts_them_by_default(tmp_path: Path) -> None:
    stack = protect(app, write(tmp_path))
    r = await call(stack, "GET", "/apikey", [basic("alice", "pw")])
    assert r.status == 200 and r.headers["cache-control"] == "no-store"
    claims = jwt.decode(r.body.decode(), options={"verify_signature": False})
    assert [s["name"] for s in claims["subscribedAPIs"]] == ["pets", "cats"]  # dogs takes oauth2 only
    assert (claims["iss"], claims["aud"], claims["exp"] - claims["iat"]) == (
        "asgi-apim",
        "http://org.wso2.apimgt/gateway",
        3600,
    )
    for path in ("/pets/1", "/cats/1"):
        ok = await call(stack, "GET", path, [("apikey", r.body.decode())])
        assert ok.status == 200 and ok.json() == {"subject": "alice"}


async def test_refusals(tmp_path: Path) -> None:
    stack = protect(app, write(tmp_path, 'tier = "Gold"\n[[api_keys.issuer.apis]]\nname = "pets"\ntier = "Silver"'))
    wrong = await call(stack, "GET", "/apikey", [basic("alice", "nope")])
    assert wrong.status == 401 and wrong.json()["code"] == 900901
    nobody = await call(stack, "GET", "/apikey")
    assert nobody.status == 401 and nobody.json()["code"] == 900902
    assert nobody.headers["www-authenticate"] == 'Basic realm="asgi-apim", charset="UTF-8", Mutual realm="asgi-apim"'
    for query in ("api=cats", "validity=0", "validity=x", "other=1"):
        bad = await call(stack, "GET", "/apikey", [basic("alice", "pw")], query=query)
        assert bad.status == 400, query
    assert (await call(stack, "DELETE", "/apikey", [basic("alice", "pw")])).status == 405
    head = await call(stack, "HEAD", "/apikey", [basic("alice", "pw")])
    assert head.status == 200 and head.body == b""
    good = await call(stack, "GET", "/apikey", [basic("alice", "pw")])
    claims = jwt.decode(good.body.decode(), options={"verify_signature": False})
    assert (claims["tier"], claims["subscribedAPIs"][0]["subscriptionTier"]) == ("Gold", "Silver")


async def test_a_certificate_the_configuration_trusts(tmp_path: Path) -> None:
    stack = protect(app, write(tmp_path))
    pem = (tmp_path / "robot.pem").read_text()
    r = await call(stack, "GET", "/apikey", [("x-wso2-client-certificate", quote(pem))])
    assert r.status == 200, r.body
    assert jwt.decode(r.body.decode(), options={"verify_signature": False})["sub"] == "CN=robot,O=asgi-apim dev"
    untrusted = await call(
        stack, "GET", "/apikey", [("x-wso2-client-certificate", quote(pem))], client=("192.0.2.1", 4000)
    )
    assert untrusted.status == 401  # a header from a peer outside trusted_proxies is never believed
    garbled = await call(stack, "GET", "/apikey", [("x-wso2-client-certificate", "garbage")])
    assert garbled.status == 400
    tls = {"tls": {"client_cert_chain": [pem], "server_cert": None}}  # the ASGI TLS extension
    direct = await call(stack, "GET", "/apikey", client=("192.0.2.1", 4000), extensions=tls)
    assert direct.status == 200 and direct.body.count(b".") == 2


async def test_jwks(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    stack = protect(app, write(tmp_path, 'jwks_path = "/keys"', key=key))
    r = await call(stack, "GET", "/keys")
    assert r.status == 200 and r.json() == {"keys": [public_jwk(key.public_key())]}
    assert (await call(stack, "GET", "/.well-known/jwks.json")).status == 404


@pytest.mark.parametrize(
    ("issuer", "extra", "key"),
    [
        ('path = "/pets/key"', "", "api_keys.issuer.path"),
        ('jwks_path = "/apikey"', "", "api_keys.issuer.jwks_path"),
        ('path = "/"', "", "api_keys.issuer.path"),
        ("validity = 0", "", "api_keys.issuer.validity"),
        ('tier = "Platinum"', "", "api_keys.issuer.tier"),
        ('[[api_keys.issuer.apis]]\nname = "cows"', "", "api_keys.issuer.apis[0].name"),
        ('[[api_keys.issuer.apis]]\nname = "pets"\nversions = []', "", "api_keys.issuer.apis[0].versions"),
        ('[[api_keys.issuer.apis]]\nname = "pets"\ntier = "X"', "", "api_keys.issuer.apis[0].tier"),
        ("colour = 1", "", "api_keys.issuer.colour"),
        ("", 'public_paths = ["/apikey"]', "api_keys.issuer.path"),
    ],
)
def test_configuration_errors_name_the_key(tmp_path: Path, issuer: str, extra: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, issuer, extra))
    assert info.value.key == key


def trusted(tmp_path: Path, body: str) -> Path:
    path = write(tmp_path, "", "")
    text = path.read_text().replace("[api_keys.issuer]\nenabled = true\n", "")
    path.write_text(text.replace('signing_key = "signing.pem"\n', 'signing_key = "signing.pem"\n' + body))
    return path


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ('[[api_keys.trusted_issuers]]\nname = "x"', "api_keys.trusted_issuers[0]"),
        ('[[api_keys.trusted_issuers]]\nname = "x"\njwks_file = "a"\ncertificate = "b"', "api_keys.trusted_issuers[0]"),
        (
            '[[api_keys.trusted_issuers]]\nname = "x"\njwks_file = "a"\nalgorithms = ["HS256"]',
            "api_keys.trusted_issuers[0].algorithms",
        ),
        ('[[api_keys.trusted_issuers]]\nname = "asgi-apim"\njwks_file = "a"', "api_keys.trusted_issuers[0].name"),
        (
            '[[api_keys.trusted_issuers]]\nname = "x"\njwks_file = "a"\ndefault_tier = "Z"',
            "api_keys.trusted_issuers[0].default_tier",
        ),
        ('[[api_keys.trusted_issuers]]\nname = "x"\njwks_url = "ftp://x"', "api_keys.trusted_issuers[0].jwks_url"),
    ],
)
def test_trusted_issuer_errors_name_the_key(tmp_path: Path, body: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(trusted(tmp_path, body))
    assert info.value.key == key


def test_unreadable_sources_name_their_key(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text("{")
    config = load_config(trusted(tmp_path, '[[api_keys.trusted_issuers]]\nname = "x"\njwks_file = "bad.json"'))
    with pytest.raises(ConfigError) as info:
        ApiKeyAuthenticator.from_config(config)
    assert info.value.key == "api_keys.trusted_issuers[0].jwks_file"
    (tmp_path / "bad.pem").write_text("not a certificate")
    config = load_config(trusted(tmp_path, '[[api_keys.trusted_issuers]]\nname = "x"\ncertificate = "bad.pem"'))
    with pytest.raises(ConfigError) as info:
        ApiKeyAuthenticator.from_config(config)
    assert info.value.key == "api_keys.trusted_issuers[0].certificate"


async def test_a_trusted_jwks_file_and_its_rules(tmp_path: Path) -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "edge.json").write_text(json.dumps({"keys": [public_jwk(other.public_key())]}))
    body = (
        '[[api_keys.trusted_issuers]]\nname = "edge-2"\njwks_file = "edge.json"\naudience = ["gw"]\n'
        'default_tier = "Bronze"\n'
    )
    auth = ApiKeyAuthenticator.from_config(load_config(trusted(tmp_path, body)))
    now = int(time.time())
    base = {"iss": "edge-2", "sub": "svc", "aud": "gw", "iat": now, "exp": now + 60, "jti": "j1"}
    good = jwt.encode({**base, "subscribedAPIs": [{"name": "pets"}]}, other, algorithm="ES256")
    p = await auth.authenticate(good, PETS, {})
    assert (p.subject, p.tier, p.throttle_key) == ("svc", "Bronze", "key:edge-2:j1")
    with pytest.raises(InvalidCredentials, match="audience"):
        await auth.authenticate(jwt.encode({**base, "aud": "x", "jti": "j2"}, other, algorithm="ES256"), PETS, {})
    with pytest.raises(InvalidCredentials, match="algorithm"):
        await auth.authenticate(jwt.encode({**base, "jti": "j3"}, "k" * 32, algorithm="HS256"), PETS, {})
    with pytest.raises(InvalidCredentials, match="malformed"):
        await auth.authenticate(
            jwt.encode({**base, "jti": "j4", "subscribedAPIs": "pets"}, other, algorithm="ES256"), PETS, {}
        )


def test_a_certificate_serves_only_its_key_types_algorithms(tmp_path: Path) -> None:
    make_ca("edge", key_kind="rsa").write(tmp_path / "rsa.pem")
    make_ca("edge").write(tmp_path / "ec.pem")
    found = {}
    for name in ("rsa", "ec"):
        body = f'[[api_keys.trusted_issuers]]\nname = "edge-3"\ncertificate = "{name}.pem"\n'
        config = load_config(trusted(tmp_path, body))
        issuer = KeyIssuer.trusted(config.api_keys.trusted_issuers[0], 0)
        assert issuer.source is None and issuer.static is not None
        found[name] = issuer.algorithms
    assert found["rsa"] == {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}
    assert found["ec"] == {"ES256"}
    body = '[[api_keys.trusted_issuers]]\nname = "edge-3"\ncertificate = "ec.pem"\nalgorithms = ["RS256"]\n'
    with pytest.raises(ConfigError) as info:
        KeyIssuer.trusted(load_config(trusted(tmp_path, body)).api_keys.trusted_issuers[0], 0)
    assert info.value.key == "api_keys.trusted_issuers[0].algorithms"


async def test_keys_of_the_earlier_format_still_validate(tmp_path: Path) -> None:
    """Keys written before subscribedAPIs (iss asgi-apim, apis, tier) open their APIs as before."""
    key = ed25519.Ed25519PrivateKey.generate()
    path = write(tmp_path, 'name = "edge-1"', key=key)
    auth = ApiKeyAuthenticator.from_config(load_config(path))
    now = int(time.time())
    old = {"iss": "asgi-apim", "sub": "partner", "apis": ["pets"], "tier": "Gold", "iat": now, "exp": now + 60}
    token = jwt.encode({**old, "jti": "a" * 32}, key, algorithm="EdDSA", headers={"typ": "JWT"})
    p = await auth.authenticate(token, PETS, {})
    assert (p.subject, p.tier, p.throttle_key) == ("partner", "Gold", f"key:{'a' * 32}")


async def test_the_gateway_serves_it_too(tmp_path: Path) -> None:
    path = write(tmp_path)
    path.write_text(
        path.read_text().replace('context = "/pets"\n', 'context = "/pets"\nbackend = "http://127.0.0.1:9"\n')
    )
    stack = gateway(path)
    r = await call(stack, "GET", "/apikey", [basic("alice", "pw")])
    assert r.status == 200 and r.body.count(b".") == 2
    assert (await call(stack, "GET", "/.well-known/jwks.json")).json()["keys"][0]["kty"] == "OKP"


@pytest.fixture(scope="module")
def short_lived(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return protect(app, write(tmp_path_factory.mktemp("issuer"), "validity = 100"))


@settings(max_examples=150, deadline=None)
@given(query=st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=60))
async def test_any_query_is_a_key_or_a_400(short_lived: Any, query: str) -> None:
    r = await call(short_lived, "GET", "/apikey", [basic("alice", "pw")], query=query)
    assert r.status in (200, 400), (query, r.body)
    if r.status == 200:
        claims = jwt.decode(r.body.decode(), options={"verify_signature": False})
        assert 0 < claims["exp"] - claims["iat"] <= 100
    else:
        assert r.json()["code"] == 900900 and "alice" not in r.body.decode()
