from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from jwt.algorithms import RSAAlgorithm

from asgi_apim.auth.jwt import JWTIssuer, OAuth2Authenticator, parse_compact
from asgi_apim.config import ApiConfig, KeyManagerConfig
from asgi_apim.errors import InvalidCredentials
from tests.auth.idp import API, ISSUER, SigningKey, claims, ec_key, ed_key, rsa_key

RSA = rsa_key("k1")
ROGUE = rsa_key("k1", second=True)
EC = ec_key("e1")
ED = ed_key("o1")
SECRET = "a-shared-secret-of-at-least-32-bytes!"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def raw(header: dict[str, Any], payload: dict[str, Any] | bytes, signature: bytes = b"") -> str:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return f"{b64(json.dumps(header).encode())}.{b64(body)}.{b64(signature)}"


def jwks_file(tmp_path: Path, *keys: SigningKey) -> Path:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [k.jwk() for k in keys]}))
    return path


def make_auth(
    tmp_path: Path, *, algorithms: tuple[str, ...] = ("RS256", "ES256", "EdDSA"), cache_size: int = 100, **km: Any
) -> OAuth2Authenticator:
    cfg = KeyManagerConfig(
        name="idp",
        issuer=ISSUER,
        audience=("pets",),
        jwks_file=jwks_file(tmp_path, RSA, EC, ED),
        algorithms=algorithms,
        **km,
    )
    return OAuth2Authenticator([JWTIssuer.from_config(cfg, tiers={"Unlimited", "Gold"})], cache_size=cache_size)


@pytest.fixture
def auth(tmp_path: Path) -> OAuth2Authenticator:
    return make_auth(tmp_path)


@pytest.mark.parametrize("key", [RSA, EC, ED], ids=["RS256", "ES256", "EdDSA"])
async def test_valid_tokens_of_each_key_type(auth: OAuth2Authenticator, key: SigningKey) -> None:
    p = await auth.authenticate(key.sign(claims(scope="pets:read pets:write", azp="app-1")), API, {})
    assert (p.method, p.subject, p.api, p.tier) == ("oauth2", "alice", "pets", "Unlimited")
    assert p.scopes == ("pets:read", "pets:write")
    assert p.throttle_key == "azp:idp:app-1"
    assert p.claims["sub"] == "alice"


async def test_scp_list_tier_claim_and_subscriber_fallback(tmp_path: Path) -> None:
    auth = make_auth(tmp_path, tier_claim="tier")
    p = await auth.authenticate(RSA.sign(claims(scp=["a", "b"], tier="Gold")), API, {})
    assert p.scopes == ("a", "b") and p.tier == "Gold" and p.throttle_key == "sub:idp:alice"
    with pytest.raises(InvalidCredentials, match="tier"):
        await auth.authenticate(RSA.sign(claims(tier="Platinum")), API, {})


async def test_audience_list_and_issuers_select_key_manager(tmp_path: Path) -> None:
    other = KeyManagerConfig(name="other", issuer="https://other", algorithms=("HS256",), shared_secret=SECRET)
    idp = KeyManagerConfig(name="idp", issuer=ISSUER, audience=("pets",), jwks_file=jwks_file(tmp_path, RSA))
    auth = OAuth2Authenticator([JWTIssuer.from_config(idp), JWTIssuer.from_config(other)])
    p = await auth.authenticate(RSA.sign(claims(aud=["x", "pets"])), API, {})
    assert p.subject == "alice"
    hs = jwt.encode(claims(iss="https://other", sub="bob"), SECRET, algorithm="HS256")
    p = await auth.authenticate(hs, API, {})
    assert p.subject == "bob" and p.throttle_key == "sub:other:bob"
    # an HS256 token claiming the RSA issuer: that issuer does not allow HS256
    with pytest.raises(InvalidCredentials, match="algorithm"):
        await auth.authenticate(jwt.encode(claims(), SECRET, algorithm="HS256"), API, {})


async def test_cache_hits_skip_verification_and_expire(
    auth: OAuth2Authenticator, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = RSA.sign(claims(exp=int(time.time()) + 40))
    first = await auth.authenticate(token, API, {})
    calls = []
    monkeypatch.setattr("asgi_apim.auth.jwt.verify_signature", lambda *a: calls.append(a) or True)
    again = await auth.authenticate(token, API, {})
    assert again is first and calls == []
    other = await auth.authenticate(token, ApiConfig(name="cats", context="/cats"), {})
    assert other.api == "cats" and calls == []
    monkeypatch.setattr("asgi_apim.auth.jwt.now", lambda: time.time() + 100)  # past exp + leeway
    with pytest.raises(InvalidCredentials, match="expired"):
        await auth.authenticate(token, API, {})


async def test_cache_is_bounded(tmp_path: Path) -> None:
    auth = make_auth(tmp_path, cache_size=8)
    for i in range(50):
        await auth.authenticate(RSA.sign(claims(sub=f"user{i}")), API, {})
    assert len(auth._cache) <= 8


def test_credential_extraction(auth: OAuth2Authenticator) -> None:
    def scope(value: str | None) -> dict[str, Any]:
        return {"headers": [] if value is None else [(b"authorization", value.encode())]}

    assert auth.credential(scope("Bearer abc.def.ghi")) == "abc.def.ghi"
    assert auth.credential(scope("bearer   xyz ")) == "xyz"
    assert auth.credential(scope("Basic dXNlcjpwdw==")) is None
    assert auth.credential(scope(None)) is None
    assert auth.challenge == 'Bearer realm="asgi-apim"'


def test_parse_compact_decodes_once() -> None:
    token = RSA.sign(claims())
    jws = parse_compact(token, "Bearer")
    assert jws.header == {"alg": "RS256", "kid": "k1", "typ": "JWT"}
    assert jws.payload["sub"] == "alice"
    assert jws.signing_input == token.rsplit(".", 1)[0].encode()


# ----------------------------------------------------------------- malicious tokens


def _now() -> int:
    return int(time.time())


def signed(header: dict[str, Any], body: bytes) -> str:
    """RS256-sign arbitrary header and payload bytes with the real key, bypassing PyJWT's checks."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(body)}"
    sig = RSAAlgorithm(RSAAlgorithm.SHA256).sign(signing_input.encode(), RSA.key)
    return f"{signing_input}.{b64(sig)}"


def _rsa_pem() -> bytes:
    return RSA.key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)


def _hs256_with_public_key() -> str:
    header = b64(json.dumps({"alg": "HS256", "kid": "k1", "typ": "JWT"}).encode())
    payload = b64(json.dumps(claims()).encode())
    sig = hmac.new(_rsa_pem(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64(sig)}"


def _tampered() -> str:
    h, _, s = RSA.sign(claims()).split(".")
    return f"{h}.{b64(json.dumps(claims(sub='admin')).encode())}.{s}"


def _nan_exp() -> str:
    body = json.dumps(claims(exp=None)).encode()[:-1] + b', "exp": NaN}'
    return signed({"alg": "RS256", "kid": "k1"}, body)


def _embedded_jwk() -> str:
    rogue_jwk = rsa_key("k1", second=True).jwk()
    return jwt.encode(claims(), ROGUE.key, algorithm="RS256", headers={"kid": "attacker", "jwk": rogue_jwk})


NOT_ALLOWED, NO_KEY, BAD_SIG, MALFORMED = (
    "algorithm is not allowed",
    "no signing key",
    "signature is invalid",
    "malformed",
)

# name -> (token factory, what the refusal must say)
MALICIOUS: dict[str, tuple[Any, str]] = {
    **{
        f"alg_{alg}": ((lambda alg=alg: raw({"alg": alg, "kid": "k1"}, claims())), NOT_ALLOWED)
        for alg in ("none", "None", "NONE", "nOnE")
    },
    "alg_none_with_signature": (lambda: raw({"alg": "none"}, claims(), b"sig"), NOT_ALLOWED),
    "hs256_signed_with_rsa_public_key": (_hs256_with_public_key, NOT_ALLOWED),
    "rogue_key_under_known_kid": (lambda: ROGUE.sign(claims()), BAD_SIG),
    "unknown_kid": (lambda: SigningKey("nope", ROGUE.key, "RS256").sign(claims()), NO_KEY),
    "embedded_jwk_header": (_embedded_jwk, NO_KEY),
    "es256_header_on_rsa_kid": (lambda: raw({"alg": "ES256", "kid": "k1"}, claims(), b"x" * 64), NO_KEY),
    "tampered_payload": (_tampered, BAD_SIG),
    "truncated": (lambda: RSA.sign(claims())[:-12], BAD_SIG),
    "truncated_to_two_parts": (lambda: RSA.sign(claims()).rsplit(".", 1)[0], "opaque"),
    "empty_signature": (lambda: RSA.sign(claims()).rsplit(".", 1)[0] + ".", BAD_SIG),
    "expired": (lambda: RSA.sign(claims(exp=_now() - 3600)), "expired"),
    "not_yet_valid": (lambda: RSA.sign(claims(nbf=_now() + 3600)), "not yet valid"),
    "issued_in_future": (lambda: RSA.sign(claims(iat=_now() + 3600)), "future"),
    "wrong_aud": (lambda: RSA.sign(claims(aud="cats")), "audience"),
    "no_aud": (lambda: RSA.sign(claims(aud=None)), "audience"),
    "wrong_iss": (lambda: RSA.sign(claims(iss="https://evil.example")), "issuer is not trusted"),
    "no_iss": (lambda: RSA.sign(claims(iss=None)), "issuer is not trusted"),
    "no_exp": (lambda: RSA.sign(claims(exp=None)), 'no "exp"'),
    "string_exp": (lambda: RSA.sign(claims(exp="9999999999")), "must be a number"),
    "nan_exp": (_nan_exp, MALFORMED),
    "no_subject": (lambda: RSA.sign(claims(sub=None)), "no subject"),
    "crit_header": (lambda: RSA.sign(claims(), crit=["exp"]), "critical"),
    "kid_not_string": (lambda: signed({"alg": "RS256", "kid": 1}, json.dumps(claims()).encode()), MALFORMED),
    "payload_is_array": (lambda: signed({"alg": "RS256", "kid": "k1"}, b"[1,2]"), MALFORMED),
    "payload_not_json": (lambda: signed({"alg": "RS256", "kid": "k1"}, b"not json"), MALFORMED),
    "bad_base64": (lambda: "e30.!!!!.e30", MALFORMED),
    "four_parts": (lambda: RSA.sign(claims()) + ".x", "opaque"),
    "60kb_token": (lambda: RSA.sign(claims(pad="x" * 60_000)), "larger than 16 KiB"),
    "empty": (lambda: "", "empty"),
}


@pytest.mark.parametrize("name", sorted(MALICIOUS))
async def test_malicious_tokens_are_invalid(auth: OAuth2Authenticator, name: str) -> None:
    make, reason = MALICIOUS[name]
    token = make()
    with pytest.raises(InvalidCredentials, match=reason) as info:
        await auth.authenticate(token, API, {})
    assert info.value.headers["www-authenticate"].startswith("Bearer ")
    assert 'error="invalid_token"' in info.value.headers["www-authenticate"]
    assert token[:40] not in info.value.detail or not token


async def test_key_confusion_with_hmac_allowed_uses_only_the_shared_secret(tmp_path: Path) -> None:
    auth = make_auth(tmp_path, algorithms=("RS256", "HS256"), shared_secret=SECRET)
    with pytest.raises(InvalidCredentials, match="signature"):
        await auth.authenticate(_hs256_with_public_key(), API, {})
    p = await auth.authenticate(jwt.encode(claims(), SECRET, algorithm="HS256"), API, {})
    assert p.subject == "alice"


async def test_leeway_accepts_small_skew(tmp_path: Path) -> None:
    auth = make_auth(tmp_path, leeway=30)
    p = await auth.authenticate(RSA.sign(claims(exp=_now() - 10, nbf=_now() + 10)), API, {})
    assert p.subject == "alice"


async def test_opaque_token_without_introspection_is_invalid(auth: OAuth2Authenticator) -> None:
    with pytest.raises(InvalidCredentials, match="opaque"):
        await auth.authenticate("0123456789abcdef", API, {})


async def test_recall_answers_only_for_tokens_validated_before(
    auth: OAuth2Authenticator, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = RSA.sign(claims(exp=int(time.time()) + 40))
    assert auth.recall(token, API) is None  # never seen: the full check must run
    first = await auth.authenticate(token, API, {})
    assert auth.recall(token, API) is first
    assert auth.recall(token, ApiConfig(name="cats", context="/cats")).api == "cats"  # type: ignore[union-attr]
    raw = f"Bearer {token}".encode()
    assert auth.recall_raw(raw, API) is None  # a raw value is found only once remembered
    auth.remember(raw, token)
    assert auth.recall_raw(raw, API) is first
    assert (
        auth.recall_raw(b"Bearer " + token[:-40].encode() + b"x" + raw[-39:], API) is None
    )  # the same last bytes, another token
    assert auth.recall_raw(b"Bearer  " + token.encode(), API) is None  # the same tail, not the value remembered
    auth.remember(b"Bearer never-validated", "never-validated")
    assert auth.recall_raw(b"Bearer never-validated", API) is None
    monkeypatch.setattr("asgi_apim.auth.jwt.now", lambda: time.time() + 100)  # past its exp: forgotten, by either key
    assert auth.recall(token, API) is None
    assert auth.recall_raw(raw, API) is None
