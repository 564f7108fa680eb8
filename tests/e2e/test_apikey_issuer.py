"""The API-key token service and subscription validation, against real ``asgi-apim serve`` processes.

Instance A (``edge-1``) issues keys at ``GET /apikey`` to basic-auth users and to
callers with a trusted client certificate (here relayed by a trusted proxy's
header). Instance B accepts A's keys through A's JWKS URL, the keys of a WSO2
API Manager Developer Portal (a certificate), and JWT access tokens whose
subscriptions it validates.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import bcrypt
import httpx
import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from cryptography.x509.oid import NameOID
from jwt.algorithms import RSAAlgorithm

from tests.e2e.conftest import PKI, Served, Servers, write_pki

APP = "tests.e2e.whoami_app:app"
WSO2_ISSUER = "https://localhost:9443/oauth2/token"
IDP_ISSUER = "https://idp.example"


@dataclass
class World:
    a: Served
    b: Served
    pki: PKI
    wso2_key: rsa.RSAPrivateKey
    idp_key: rsa.RSAPrivateKey


def _apis(*names: str, scheme: str = "api_key") -> str:
    out = []
    for name in names:
        out += [
            "[[apis]]",
            f'name = "{name}"',
            f'context = "/{name}"',
            "[apis.security]",
            f'application = ["{scheme}"]',
        ]
    return "\n".join(out) + "\n"


def _self_signed(key: rsa.RSAPrivateKey, name: str) -> bytes:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def world(module_servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("apikeys")
    pki = write_pki(tmp / "pki")
    users = f"alice:{bcrypt.hashpw(b'wonderland', bcrypt.gensalt(4)).decode()}\n"
    (tmp / "users.htpasswd").write_text(users)
    signing = ed25519.Ed25519PrivateKey.generate()
    (tmp / "signing.pem").write_bytes(
        signing.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    a_config = tmp / "a.toml"
    a_config.write_text(
        f'[encryption]\nkey = "{"ab" * 32}"\n'
        f'[mutual_ssl]\ntruststore = ["{pki.path("ca.pem")}"]\ntrusted_proxies = ["127.0.0.1/32"]\n'
        '[basic_auth]\nusers_file = "users.htpasswd"\n'
        '[api_keys]\nsigning_key = "signing.pem"\n'
        '[api_keys.issuer]\nenabled = true\nname = "edge-1"\nvalidity = 600\n'
        '[[api_keys.issuer.apis]]\nname = "alpha"\n' + _apis("alpha", "beta")
    )
    a = module_servers.serve(APP, a_config)

    wso2_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (tmp / "wso2.pem").write_bytes(_self_signed(wso2_key, "wso2carbon"))
    idp_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = RSAAlgorithm.to_jwk(idp_key.public_key(), as_dict=True)
    (tmp / "idp-jwks.json").write_text(json.dumps({"keys": [{**jwk, "kid": "idp-1", "use": "sig"}]}))
    b_config = tmp / "b.toml"
    b_config.write_text(
        f'[encryption]\nkey = "{"cd" * 32}"\n'
        '[throttling.tiers]\nTwoAMinute = "2/minute"\nThreeAMinute = "3/minute"\n'
        "[[key_managers]]\n"
        f'name = "idp"\nissuer = "{IDP_ISSUER}"\njwks_file = "idp-jwks.json"\nvalidate_subscription = true\n'
        "[[api_keys.trusted_issuers]]\n"
        f'name = "edge-1"\njwks_url = "{a.url}/.well-known/jwks.json"\n'
        "[[api_keys.trusted_issuers]]\n"
        f'name = "{WSO2_ISSUER}"\ncertificate = "wso2.pem"\n'
        + _apis("alpha", "beta", "pizzashack")
        + _apis("gamma", scheme="oauth2")
    )
    b = module_servers.serve(APP, b_config)
    yield World(a, b, pki, wso2_key, idp_key)


def _key(world: World, **kwargs: Any) -> httpx.Response:
    return httpx.get(f"{world.a.url}/apikey", timeout=10, **kwargs)


def test_basic_auth_key_opens_its_api_only(world: World) -> None:
    r = _key(world, auth=("alice", "wonderland"))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain") and r.headers["cache-control"] == "no-store"
    key = r.text
    claims = jwt.decode(key, options={"verify_signature": False})
    assert (claims["iss"], claims["sub"], claims["keytype"]) == ("edge-1", "alice", "PRODUCTION")
    assert claims["exp"] - claims["iat"] == 600 and claims["jti"] and claims["aud"]
    assert [(s["name"], s["context"], s["version"]) for s in claims["subscribedAPIs"]] == [("alpha", "/alpha", "*")]

    ok = httpx.get(f"{world.a.url}/alpha/x", headers={"apikey": key}, timeout=10)
    assert ok.status_code == 200, ok.text
    assert (ok.json()["method"], ok.json()["subject"], ok.json()["tier"]) == ("api_key", "alice", "Unlimited")
    refused = httpx.get(f"{world.a.url}/beta/x", headers={"apikey": key}, timeout=10)
    assert refused.status_code == 403 and refused.json()["code"] == 900908
    assert refused.headers["content-type"] == "application/problem+json"


def test_wrong_password_or_nothing_is_401(world: World) -> None:
    wrong = _key(world, auth=("alice", "looking-glass"))
    assert wrong.status_code == 401 and wrong.json()["code"] == 900901
    assert wrong.headers["www-authenticate"].startswith("Basic")
    assert "looking-glass" not in wrong.text
    missing = _key(world)
    assert missing.status_code == 401 and missing.json()["code"] == 900902
    posted = httpx.post(f"{world.a.url}/apikey", auth=("alice", "wonderland"), timeout=10)
    assert posted.status_code == 405


def test_client_certificate_from_a_trusted_proxy_gets_a_key(world: World) -> None:
    pem = world.pki.client.cert_pem().decode()
    r = _key(world, headers={"x-wso2-client-certificate": quote(pem), "accept": "application/json"})
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["validityTime"] == 600
    assert jwt.decode(doc["apikey"], options={"verify_signature": False})["sub"] == "CN=e2e-client,O=asgi-apim dev"
    stranger = _key(world, headers={"x-wso2-client-certificate": quote(world.pki.stranger.cert_pem().decode())})
    assert stranger.status_code == 401


def test_the_query_narrows_validity_and_refuses_other_apis(world: World) -> None:
    r = _key(world, auth=("alice", "wonderland"), params={"validity": "60", "api": "alpha"})
    claims = jwt.decode(r.text, options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 60
    assert _key(world, auth=("alice", "wonderland"), params={"validity": "6000"}).status_code == 400
    assert _key(world, auth=("alice", "wonderland"), params={"api": "beta"}).status_code == 400


def test_jwks_publishes_the_signing_key(world: World) -> None:
    jwks = httpx.get(f"{world.a.url}/.well-known/jwks.json", timeout=10).json()
    key = _key(world, auth=("alice", "wonderland")).text
    kid = jwt.get_unverified_header(key)["kid"]
    assert [k["kid"] for k in jwks["keys"]] == [kid]
    assert jwks["keys"][0]["kty"] == "OKP" and "d" not in jwks["keys"][0]


def test_a_second_instance_accepts_the_first_ones_keys_through_its_jwks(world: World) -> None:
    key = _key(world, auth=("alice", "wonderland")).text
    r = httpx.get(f"{world.b.url}/alpha/x", headers={"apikey": key}, timeout=10)
    assert r.status_code == 200, r.text + world.b.log()[-2000:]
    assert r.json()["subject"] == "alice"
    beta = httpx.get(f"{world.b.url}/beta/x", headers={"apikey": key}, timeout=10)
    assert beta.status_code == 403 and beta.json()["code"] == 900908
    forged = jwt.encode(
        jwt.decode(key, options={"verify_signature": False}),
        ed25519.Ed25519PrivateKey.generate(),
        algorithm="EdDSA",
        headers={"kid": jwt.get_unverified_header(key)["kid"]},
    )
    assert httpx.get(f"{world.b.url}/alpha/x", headers={"apikey": forged}, timeout=10).status_code == 401


def _wso2_key(world: World, subscription_tier: str, application_tier: str, *apis: tuple[str, str, str]) -> str:
    """A key as WSO2 API Manager's Developer Portal signs it (claims from WSO2's documentation)."""
    now = int(time.time())
    app_id = uuid.uuid4()
    claims = {
        "sub": "admin@carbon.super",
        "application": {
            "owner": "admin",
            "tier": application_tier,
            "name": "DefaultApplication",
            "id": 1,
            "uuid": str(app_id),
        },
        "iss": WSO2_ISSUER,
        "tierInfo": {subscription_tier: {"stopOnQuotaReach": True, "spikeArrestLimit": 0, "spikeArrestUnit": None}},
        "keytype": "PRODUCTION",
        "permittedReferer": "",
        "subscribedAPIs": [
            {
                "subscriberTenantDomain": "carbon.super",
                "name": name,
                "context": context,
                "publisher": "admin",
                "version": version,
                "subscriptionTier": subscription_tier,
            }
            for name, context, version in apis
        ],
        "token_type": "apiKey",
        "permittedIP": "",
        "iat": now,
        "exp": now + 3600,
        "jti": str(uuid.uuid4()),
    }
    return jwt.encode(claims, world.wso2_key, algorithm="RS256", headers={"x5t": "wso2carbon"})


PIZZA = ("PizzaShackAPI", "/pizzashack/1.0.0", "1.0.0")  # opens /pizzashack by its versioned context
ALPHA = ("alpha", "/alpha", "1.0.0")


def _call(world: World, path: str, key: str) -> httpx.Response:
    return httpx.get(f"{world.b.url}{path}", headers={"apikey": key}, timeout=10)


def test_a_wso2_developer_portal_key_is_read_with_its_tiers(world: World) -> None:
    key = _wso2_key(world, "Gold", "Unlimited", PIZZA)
    r = _call(world, "/pizzashack/menu", key)
    assert r.status_code == 200, r.text
    assert (r.json()["subject"], r.json()["tier"]) == ("admin@carbon.super", "Gold")
    other = _call(world, "/alpha/x", key)
    assert other.status_code == 403 and other.json()["code"] == 900908


def test_subscription_tier_throttles_with_900804(world: World) -> None:
    key = _wso2_key(world, "TwoAMinute", "Unlimited", PIZZA)
    assert [_call(world, "/pizzashack/menu", key).status_code for _ in range(2)] == [200, 200]
    third = _call(world, "/pizzashack/menu", key)
    assert third.status_code == 429 and third.json()["code"] == 900804 and int(third.headers["retry-after"]) > 0


def test_application_tier_throttles_with_900803_across_apis(world: World) -> None:
    key = _wso2_key(world, "Unlimited", "ThreeAMinute", PIZZA, ALPHA)
    codes = [_call(world, path, key).status_code for path in ("/pizzashack/a", "/alpha/b", "/pizzashack/c")]
    assert codes == [200, 200, 200]
    fourth = _call(world, "/alpha/d", key)
    assert fourth.status_code == 429 and fourth.json()["code"] == 900803


def _access_token(world: World, *apis: tuple[str, str, str]) -> str:
    now = int(time.time())
    claims = {
        "iss": IDP_ISSUER,
        "sub": "bob",
        "azp": "app-1",
        "iat": now,
        "exp": now + 600,
        "keytype": "PRODUCTION",
        "application": {"id": 7, "name": "Shop", "tier": "Unlimited", "owner": "bob"},
        "subscribedAPIs": [{"name": n, "context": c, "version": v, "subscriptionTier": "Silver"} for n, c, v in apis],
    }
    return jwt.encode(claims, world.idp_key, algorithm="RS256", headers={"kid": "idp-1"})


def test_jwt_access_tokens_must_subscribe_to_the_api(world: World) -> None:
    subscribed = _access_token(world, ("gamma", "/gamma", "v1"))
    r = httpx.get(f"{world.b.url}/gamma/x", headers={"authorization": f"Bearer {subscribed}"}, timeout=10)
    assert r.status_code == 200, r.text
    assert (r.json()["method"], r.json()["tier"]) == ("oauth2", "Silver")
    other = _access_token(world, ("alpha", "/alpha", "v1"))
    r = httpx.get(f"{world.b.url}/gamma/x", headers={"authorization": f"Bearer {other}"}, timeout=10)
    assert r.status_code == 403 and r.json()["code"] == 900908
    none = _access_token(world)
    r = httpx.get(f"{world.b.url}/gamma/x", headers={"authorization": f"Bearer {none}"}, timeout=10)
    assert r.status_code == 403 and r.json()["code"] == 900908


def test_keys_of_apikey_issue_still_work(world: World, tmp_path: Path) -> None:
    """The command writes the same format: the key it prints opens the API on A."""
    config = Path(world.a.process.argv[world.a.process.argv.index("--config") + 1])
    done = subprocess.run(
        [sys.executable, "-m", "asgi_apim.cli", "apikey", "issue", "--config", str(config), "--api", "beta"]
        + ["--tier", "Gold", "--subject", "batch"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    key = done.stdout.strip()
    assert jwt.decode(key, options={"verify_signature": False})["iss"] == "edge-1"
    r = httpx.get(f"{world.a.url}/beta/x", headers={"apikey": key}, timeout=10)
    assert r.status_code == 200 and (r.json()["subject"], r.json()["tier"]) == ("batch", "Gold")
