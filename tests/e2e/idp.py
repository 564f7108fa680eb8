"""JWTs for the end-to-end tests: good claims, hand-forged tokens and the
malicious-token suite (each entry must be refused with 401, code 900901)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tests.auth.idp import SigningKey

ISSUER = "https://idp.example"
ISSUER2 = "https://idp2.example"
AUDIENCE = "pets"

Signer = Callable[[bytes], bytes]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims(**extra: Any) -> dict[str, Any]:
    """Good claims for ISSUER; ``name=None`` drops a claim."""
    t = int(time.time())
    base = {"iss": ISSUER, "sub": "alice", "aud": AUDIENCE, "exp": t + 600, "iat": t, "scope": "pets:read"}
    base.update(extra)
    return {k: v for k, v in base.items() if v is not None}


def forge(header: dict[str, Any], payload: dict[str, Any] | str, sign: Signer | None = None) -> str:
    """A compact JWS put together by hand (``payload`` may be raw JSON text), signed by ``sign`` or not at all."""
    raw = payload if isinstance(payload, str) else json.dumps(payload)
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(raw.encode())}"
    signature = sign(signing_input.encode()) if sign else b""
    return f"{signing_input}.{b64url(signature)}"


def rs256(key: rsa.RSAPrivateKey) -> Signer:
    return lambda data: key.sign(data, padding.PKCS1v15(), SHA256())


def _hs256_with(secret: bytes) -> Signer:
    return lambda data: hmac.new(secret, data, hashlib.sha256).digest()


MALICIOUS = [
    "alg-none",
    "alg-None",
    "alg-NONE",
    "alg-nOnE",
    "alg-none-signed",
    "alg-NONE-signed",
    "hs256-with-rsa-public-pem",
    "hs256-with-rsa-public-pem-no-kid",
    "rogue-key-known-kid",
    "unknown-kid",
    "tampered-payload",
    "truncated",
    "truncated-signature",
    "empty-signature",
    "two-parts",
    "expired",
    "not-yet-valid",
    "issued-in-the-future",
    "wrong-aud",
    "wrong-iss",
    "iss-of-the-other-issuer",
    "no-exp",
    "string-exp",
    "huge-exp",
    "huge-nbf",
    "infinite-exp",
    "60kb",
    "ps256-with-rs256-key",
    "garbage",
]


def malicious_tokens(key: SigningKey, rogue: SigningKey) -> dict[str, str]:
    """Every MALICIOUS case, built around ``key`` (the issuer's, kid k1) and ``rogue`` (another RSA key)."""
    good = key.sign(claims())
    head, payload, signature = good.split(".")
    now = int(time.time())
    pem = key.key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    tampered = {**json.loads(base64.urlsafe_b64decode(payload + "==")), "sub": "root", "scope": "pets:write"}
    tokens = {
        f"alg-{alg}": forge({"alg": alg, "typ": "JWT", "kid": key.kid}, claims())
        for alg in ("none", "None", "NONE", "nOnE")
    }
    tokens |= {
        f"alg-{alg}-signed": forge({"alg": alg, "kid": key.kid}, claims(), rs256(key.key)) for alg in ("none", "NONE")
    }
    tokens |= {
        "hs256-with-rsa-public-pem": forge({"alg": "HS256", "typ": "JWT", "kid": key.kid}, claims(), _hs256_with(pem)),
        "hs256-with-rsa-public-pem-no-kid": forge({"alg": "HS256"}, claims(), _hs256_with(pem)),
        "rogue-key-known-kid": SigningKey(key.kid, rogue.key, "RS256").sign(claims()),
        "unknown-kid": SigningKey("nobody", rogue.key, "RS256").sign(claims()),
        "tampered-payload": f"{head}.{b64url(json.dumps(tampered).encode())}.{signature}",
        "truncated": good[: len(good) * 2 // 3],
        "truncated-signature": good[:-10],
        "empty-signature": f"{head}.{payload}.",
        "two-parts": f"{head}.{payload}",
        "expired": key.sign(claims(exp=now - 3600, iat=now - 7200)),
        "not-yet-valid": key.sign(claims(nbf=now + 3600)),
        "issued-in-the-future": key.sign(claims(iat=now + 3600)),
        "wrong-aud": key.sign(claims(aud="cats")),
        "wrong-iss": key.sign(claims(iss="https://evil.example")),
        "iss-of-the-other-issuer": key.sign(claims(iss=ISSUER2)),
        "no-exp": key.sign(claims(exp=None)),
        "string-exp": key.sign(claims(exp=str(now + 600))),
        "huge-exp": key.sign(claims(exp=10**400)),  # overflows a float
        "huge-nbf": key.sign(claims(nbf=-(10**400))),
        "infinite-exp": forge(
            {"alg": "RS256", "kid": key.kid}, json.dumps(claims(exp=None))[:-1] + ', "exp": 1e999}', rs256(key.key)
        ),
        "60kb": key.sign(claims(pad="x" * 60_000)),
        "ps256-with-rs256-key": jwt.encode(claims(), key.key, algorithm="PS256", headers={"kid": key.kid}),
        "garbage": "Zm9v.YmFy.YmF6",
    }
    assert sorted(tokens) == sorted(MALICIOUS)
    return tokens
