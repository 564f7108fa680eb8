"""Self-contained API keys: JWTs that ``asgi-apim apikey issue`` signs.

The algorithm follows the type of ``[api_keys] signing_key``: Ed25519/Ed448 ->
EdDSA, EC P-256/P-384/P-521 -> ES256/ES384/ES512, RSA -> RS256. A key carries
``iss`` ("asgi-apim"), ``sub``, ``apis`` (the API names it opens), ``tier``,
``iat``, ``exp`` and ``jti``. Validation uses the public half of the signing
key, loaded once, and checks the signature, the algorithm (exactly the one the
key type gives), expiry, that the request's API is listed and that the ``jti``
is not in ``[api_keys] revoked``. The key is read from the ``[api_keys] header``
or, failing that, the ``query_param``.
"""

from __future__ import annotations

import copy
import json
import secrets
import time
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote_plus

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_der_private_key, load_pem_private_key
from starlette.types import Scope

from asgi_apim.auth.base import (
    DEFAULT_REALM,
    MAX_TOKEN_BYTES,
    ExpiringCache,
    LocationSupport,
    RecallSupport,
    Verified,
    header_value,
    invalid,
    known_tiers,
    now,
    without_header,
)
from asgi_apim.auth.jwt import check_times, parse_compact, verify_signature
from asgi_apim.config import ApiConfig, Config, SecurityConfig
from asgi_apim.errors import ConfigError
from asgi_apim.identity import Principal

ISSUER = "asgi-apim"
DEFAULT_EXPIRES = 365 * 86_400
LEEWAY = 30.0
_EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
_KEY_SETTING = "api_keys.signing_key"


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


def api_key_refusal(api: ApiConfig) -> str | None:
    """Why no API key could ever open ``api``, or None when one can.

    A key opens an API when ``api_key`` is among the ``application`` schemes of its
    security or one of its resources' and is asked for: ``mutual_ssl = "mandatory"``
    with ``application_mandatory = false`` is decided by the certificate alone.
    """
    securities = [api.security, *(r.security for r in api.resources if r.security is not None)]
    listed = [s for s in securities if "api_key" in s.application]
    if not listed:
        return (
            f'API {api.name!r} does not accept API keys: add "api_key" to its [apis.security] application'
            f" (for example application = {json.dumps([*api.security.application, 'api_key'])}) and restart"
        )
    if all(s.mutual_ssl == "mandatory" and not s.application_mandatory for s in listed):
        return (
            f'API {api.name!r} lists api_key but is decided by mutual_ssl = "mandatory" alone, so a key is'
            " never read: set application_mandatory = true in its [apis.security] to require both"
        )
    return None


def issue_api_key(
    config: Config,
    api: str,
    tier: str,
    *,
    subject: str | None = None,
    expires: int = DEFAULT_EXPIRES,
    scopes: Sequence[str] = (),
    issued_at: int | None = None,
) -> str:
    """A signed API key for ``api`` at ``tier``. Raises ValueError for an unknown API or tier."""
    names = [a.name for a in config.apis]
    if api not in names:
        raise ValueError(f"unknown API {api!r} (configured: {', '.join(names) or 'none'})")
    if tier not in config.throttling.tiers:
        raise ValueError(f"unknown tier {tier!r} (configured: {', '.join(sorted(config.throttling.tiers))})")
    if expires <= 0:
        raise ValueError("--expires must be a positive number of seconds")
    if config.api_keys.signing_key is None:
        raise ConfigError(_KEY_SETTING, "is not configured: no key to sign API keys with")
    key = load_signing_key(config.api_keys.signing_key)
    iat = int(time.time()) if issued_at is None else issued_at
    jti = secrets.token_hex(16)
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "sub": subject or f"apikey-{jti[:12]}",
        "apis": [api],
        "tier": tier,
        "iat": iat,
        "exp": iat + int(expires),
        "jti": jti,
    }
    if scopes:
        claims["scope"] = " ".join(scopes)
    return jwt.encode(claims, key, algorithm=algorithm_for(key), headers={"typ": "JWT"})


class ApiKeyAuthenticator(RecallSupport, LocationSupport):
    """API keys from a header or query parameter, verified with the signing key's public half."""

    scheme = "api_key"

    def __init__(
        self,
        public_key: Any,
        *,
        header: str = "apikey",
        query_param: str | None = "apikey",
        revoked: Collection[str] = (),
        tiers: Collection[str] | None = None,
        cache_size: int = 10_000,
        realm: str = DEFAULT_REALM,
    ) -> None:
        if hasattr(public_key, "public_key"):
            public_key = public_key.public_key()
        self.algorithm = algorithm_for(public_key)
        self.key = public_key
        self.header: bytes | None = header.lower().encode("latin-1")
        self.query_param = query_param or None
        self._needle = f"{query_param}=".encode() if query_param else b""
        self.revoked = frozenset(revoked)
        self.tiers = tiers
        self.challenge = f'APIKey realm="{realm}"'
        self._cache: ExpiringCache[str, Verified] = ExpiringCache(cache_size)

    @classmethod
    def from_config(cls, config: Config) -> ApiKeyAuthenticator:
        ak = config.api_keys
        if ak.signing_key is None:
            raise ConfigError(_KEY_SETTING, "an API lists api_key but no [api_keys] signing_key is configured")
        return cls(
            load_signing_key(ak.signing_key),
            header=ak.header,
            query_param=ak.query_param,
            revoked=ak.revoked,
            tiers=known_tiers(config),
        )

    def located(self, security: SecurityConfig) -> ApiKeyAuthenticator:
        """Keys read from ``security``'s ``api_key_header`` / ``api_key_query`` ("" : not there), the
        same keys, revocations and cache."""
        header, query = security.api_key_header, security.api_key_query
        if header is None and query is None:
            return self
        other = copy.copy(self)
        if header is not None:
            other.header = header.lower().encode("latin-1") if header else None
        if query is not None:
            other.query_param = query or None
            other._needle = f"{query}=".encode() if query else b""
        return other

    def credential(self, scope: Scope) -> str | None:
        raw = header_value(scope, self.header) if self.header is not None else None
        if raw is not None:
            return raw.decode("latin-1").strip()
        qs: bytes = scope.get("query_string", b"")
        if self._needle and self._needle in qs:
            for name, value in parse_qsl(qs.decode("latin-1"), keep_blank_values=True):
                if name == self.query_param:
                    return str(value)
        return None

    def recall(self, credential: str, api: ApiConfig) -> Principal | None:
        """The caller of a key validated before (cached) and valid for ``api``, else None."""
        return self._for_api(self._cache.get(credential, now()), api)

    def recall_raw(self, raw: bytes, api: ApiConfig) -> Principal | None:
        """`recall` by the raw header value `remember`-ed for a key."""
        return self._for_api(self._cache.aliased(raw, now()), api)

    @staticmethod
    def _for_api(verified: Verified | None, api: ApiConfig) -> Principal | None:
        if verified is None or api.name not in verified.claims["apis"]:
            return None
        return verified.principal(api.name, api.version)

    def remember(self, raw: bytes, credential: str) -> None:
        """Let `recall_raw` find a cached key by the raw header value it was read from."""
        self._cache.alias(raw, credential)

    def strip(self, scope: Scope) -> None:
        """Remove the key's header and its query parameter (the rest of the query string byte for byte)."""
        if self.header is not None:
            without_header(scope, self.header)
        qs = scope.get("query_string", b"")
        if self._needle and self._needle in qs:
            name = self.query_param
            kept = [part for part in qs.split(b"&") if unquote_plus(part.partition(b"=")[0].decode("latin-1")) != name]
            scope["query_string"] = b"&".join(kept)

    async def authenticate(self, credential: str, api: ApiConfig, scope: Scope) -> Principal:
        t = now()
        verified = self._cache.get(credential, t)
        if verified is None:
            verified = self._verify(credential, t)
            self._cache.put(credential, verified, verified.expires, t)
        if api.name not in verified.claims["apis"]:
            raise invalid(f"API key is not valid for API {api.name!r}", self.challenge)
        return verified.principal(api.name, api.version)

    def _verify(self, token: str, t: float) -> Verified:
        if len(token) > MAX_TOKEN_BYTES:
            raise invalid("API key is larger than 16 KiB", self.challenge)
        jws = parse_compact(token, self.challenge)
        if jws.header.get("alg") != self.algorithm:
            raise invalid("API key algorithm does not match the signing key", self.challenge)
        if not verify_signature(jws, self.algorithm, (self.key,)):
            raise invalid("API key signature is invalid", self.challenge)
        claims = jws.payload
        exp = check_times(claims, t, LEEWAY, self.challenge)
        if claims.get("iss") != ISSUER:
            raise invalid("API key was not issued by asgi-apim", self.challenge)
        jti, sub, tier, apis = claims.get("jti"), claims.get("sub"), claims.get("tier"), claims.get("apis")
        if not (isinstance(jti, str) and jti and isinstance(sub, str) and sub):
            raise invalid("API key lacks its jti or sub", self.challenge)
        if jti in self.revoked:
            raise invalid("API key has been revoked", self.challenge)
        if not isinstance(apis, list) or not all(isinstance(a, str) for a in apis):
            raise invalid("API key does not list its APIs", self.challenge)
        if not isinstance(tier, str) or (self.tiers is not None and tier not in self.tiers):
            raise invalid("API key names an unknown tier", self.challenge)
        scope = claims.get("scope")
        return Verified(
            method="api_key",
            subject=sub,
            tier=tier,
            throttle_key=f"key:{jti}",
            scopes=tuple(scope.split()) if isinstance(scope, str) else (),
            claims=claims,
            expires=exp,
        )

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        return None
