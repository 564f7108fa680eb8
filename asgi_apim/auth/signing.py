"""The API-key signing key, the keys it signs and the JWKS that publishes its public half.

The algorithm follows the type of ``[api_keys] signing_key``: Ed25519/Ed448 ->
EdDSA, EC P-256/P-384/P-521 -> ES256/ES384/ES512, RSA -> RS256. Every key,
whether ``asgi-apim apikey issue`` or the token service (``GET /apikey``) made
it, has one format: WSO2's claims, so that WSO2 API Microgateway and API
Manager read it as their own, plus ``apis`` and ``tier`` as earlier versions of
asgi-apim wrote them (they read those)::

    header   {"alg": "EdDSA", "typ": "JWT", "kid": "<RFC 7638 thumbprint>"}
    payload  {"iss": "asgi-apim", "sub": "alice", "aud": "http://org.wso2.apimgt/gateway",
              "iat": 1700000000, "exp": 1700003600, "jti": "<32 hex>",
              "keytype": "PRODUCTION", "token_type": "apiKey",
              "subscribedAPIs": [{"name": "pets", "context": "/pets", "version": "*",
                                  "subscriptionTier": "Gold"}],
              "tierInfo": {"Gold": {"stopOnQuotaReach": true}},
              "apis": ["pets"], "tier": "Gold"}

The JWKS holds the public key once, with that ``kid``, ``use`` sig and its ``alg``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_der_private_key, load_pem_private_key
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from asgi_apim.config import ApiConfig, Config
from asgi_apim.errors import ConfigError

_EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
_KEY_SETTING = "api_keys.signing_key"
_THUMBPRINT_MEMBERS = {"RSA": ("e", "kty", "n"), "EC": ("crv", "kty", "x", "y"), "OKP": ("crv", "kty", "x")}
KEY_TYPE = "PRODUCTION"


def algorithm_for(key: Any) -> str:
    """The JWS algorithm a private or public key signs with. Raises ValueError for other key types."""
    if isinstance(
        key, (ed25519.Ed25519PrivateKey, ed25519.Ed25519PublicKey, ed448.Ed448PrivateKey, ed448.Ed448PublicKey)
    ):
        return "EdDSA"
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
        alg = _EC_ALGORITHMS.get(key.curve.name)
        if alg is None:
            raise ValueError(f"EC curve {key.curve.name} is not supported (use P-256, P-384 or P-521)")
        return alg
    if isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)):
        if key.key_size < 2048:
            raise ValueError("RSA keys must have at least 2048 bits")
        return "RS256"
    raise ValueError(f"{type(key).__name__} keys are not supported (use Ed25519, EC or RSA)")


def load_signing_key(path: Path) -> Any:
    """The private key at ``path`` (PEM or DER, unencrypted). Raises `ConfigError` naming the setting."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(_KEY_SETTING, f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        key = (
            load_pem_private_key(data, password=None)
            if b"-----BEGIN" in data
            else load_der_private_key(data, password=None)
        )
        algorithm_for(key)
    except (ValueError, TypeError) as exc:
        raise ConfigError(_KEY_SETTING, f"{path} is not a usable private key: {exc}") from None
    return key


def public_jwk(public_key: Any) -> dict[str, Any]:
    """The public key as a JWK with its RFC 7638 thumbprint as ``kid``, ``use`` sig and ``alg``."""
    alg = algorithm_for(public_key)
    exporter: Any = OKPAlgorithm if alg == "EdDSA" else ECAlgorithm if alg.startswith("ES") else RSAAlgorithm
    jwk: dict[str, Any] = exporter.to_jwk(public_key, as_dict=True)
    members = {k: jwk[k] for k in _THUMBPRINT_MEMBERS[jwk["kty"]]}
    digest = hashlib.sha256(json.dumps(members, separators=(",", ":"), sort_keys=True).encode()).digest()
    kid = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    return {**members, "kid": kid, "use": "sig", "alg": alg}


@dataclass(frozen=True, slots=True)
class Grant:
    """One API a key opens: the versions allowed (``*``: any) and the subscription tier."""

    api: ApiConfig
    tier: str
    versions: tuple[str, ...] = ("*",)


class Signer:
    """The signing key, loaded once, and the issuer's name and audience: `sign` makes a key."""

    def __init__(self, private_key: Any, *, issuer: str, audience: str) -> None:
        self.key = private_key
        self.algorithm = algorithm_for(private_key)
        self.jwk = public_jwk(private_key.public_key())
        self.kid: str = self.jwk["kid"]
        self.issuer = issuer
        self.audience = audience

    @classmethod
    def from_config(cls, config: Config) -> Signer:
        ak = config.api_keys
        if ak.signing_key is None:
            raise ConfigError(_KEY_SETTING, "is not configured: no key to sign API keys with")
        return cls(load_signing_key(ak.signing_key), issuer=ak.issuer.name, audience=ak.issuer.audience)

    def jwks(self) -> dict[str, Any]:
        return {"keys": [self.jwk]}

    def claims(
        self,
        grants: Sequence[Grant],
        *,
        subject: str | None,
        tier: str,
        validity: int,
        scopes: Sequence[str] = (),
        issued_at: int | None = None,
    ) -> dict[str, Any]:
        iat = int(time.time()) if issued_at is None else issued_at
        jti = secrets.token_hex(16)
        subscribed = [
            {"name": g.api.name, "context": g.api.context, "version": v, "subscriptionTier": g.tier}
            for g in grants
            for v in g.versions
        ]
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": subject or f"apikey-{jti[:12]}",
            "aud": self.audience,
            "iat": iat,
            "exp": iat + int(validity),
            "jti": jti,
            "keytype": KEY_TYPE,
            "token_type": "apiKey",
            "subscribedAPIs": subscribed,
            "tierInfo": {t: {"stopOnQuotaReach": True} for t in dict.fromkeys(g.tier for g in grants)},
            "apis": list(dict.fromkeys(g.api.name for g in grants)),
            "tier": tier,
        }
        if scopes:
            claims["scope"] = " ".join(scopes)
        return claims

    def sign(self, claims: dict[str, Any]) -> str:
        return jwt.encode(claims, self.key, algorithm=self.algorithm, headers={"typ": "JWT", "kid": self.kid})
