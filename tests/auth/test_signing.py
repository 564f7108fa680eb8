"""The signing key, the one key format and the published JWK."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from asgi_apim.auth.signing import Grant, Signer, public_jwk
from asgi_apim.config import ApiConfig

PETS = ApiConfig(name="pets", context="/pets")
CATS = ApiConfig(name="cats", context="/cats")
KEYS = {
    "EdDSA": (ed25519.Ed25519PrivateKey.generate, OKPAlgorithm),
    "ES256": (lambda: ec.generate_private_key(ec.SECP256R1()), ECAlgorithm),
    "RS256": (lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048), RSAAlgorithm),
}


@pytest.mark.parametrize("alg", sorted(KEYS))
def test_jwk_is_public_and_its_kid_is_the_rfc7638_thumbprint(alg: str) -> None:
    make, loader = KEYS[alg]
    key: Any = make()
    jwk = public_jwk(key.public_key())
    assert jwk["alg"] == alg and jwk["use"] == "sig"
    assert not {"d", "p", "q", "dp", "dq", "qi"} & set(jwk)
    members = {k: jwk[k] for k in jwk if k not in ("kid", "use", "alg")}
    digest = hashlib.sha256(json.dumps(members, separators=(",", ":"), sort_keys=True).encode()).digest()
    assert jwk["kid"] == base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    assert loader.from_jwk(json.dumps(jwk)) is not None


def test_rfc7638_example_thumbprint() -> None:
    """RFC 7638, section 3.1: the thumbprint of its example RSA key."""
    n = (
        "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3"
        "oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdA"
        "ZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kE"
        "gU8awapJzKnqDKgw"
    )
    public = RSAAlgorithm.from_jwk({"kty": "RSA", "n": n, "e": "AQAB"})
    assert public_jwk(public)["kid"] == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_claims_have_wso2s_shape_and_asgi_apims_earlier_one() -> None:
    signer = Signer(ed25519.Ed25519PrivateKey.generate(), issuer="edge-1", audience="gw")
    grants = [Grant(PETS, "Gold", ("1.0.0", "2.0.0")), Grant(CATS, "Silver")]
    claims = signer.claims(grants, subject="alice", tier="Gold", validity=60, scopes=("a", "b"), issued_at=1000)
    assert claims["subscribedAPIs"] == [
        {"name": "pets", "context": "/pets", "version": "1.0.0", "subscriptionTier": "Gold"},
        {"name": "pets", "context": "/pets", "version": "2.0.0", "subscriptionTier": "Gold"},
        {"name": "cats", "context": "/cats", "version": "*", "subscriptionTier": "Silver"},
    ]
    assert claims["tierInfo"] == {"Gold": {"stopOnQuotaReach": True}, "Silver": {"stopOnQuotaReach": True}}
    assert (claims["apis"], claims["tier"], claims["scope"]) == (["pets", "cats"], "Gold", "a b")
    assert (claims["iss"], claims["aud"], claims["iat"], claims["exp"]) == ("edge-1", "gw", 1000, 1060)
    assert (claims["keytype"], claims["token_type"], len(claims["jti"])) == ("PRODUCTION", "apiKey", 32)
    token = signer.sign(claims)
    assert jwt.get_unverified_header(token) == {"alg": "EdDSA", "typ": "JWT", "kid": signer.kid}
    decoded = jwt.decode(
        token, signer.key.public_key(), algorithms=["EdDSA"], audience="gw", options={"verify_exp": False}
    )
    assert decoded == claims
    assert signer.jwks() == {"keys": [signer.jwk]}
