"""OAuth2 bearer tokens: JWTs from several issuers, opaque tokens by introspection.

A JWT is split and its header and payload base64url-decoded once; the
unverified ``iss`` picks the key manager, whose allow-list must name the
header's ``alg`` (``none`` never passes, in any case); the signature is then
checked with PyJWT's algorithm objects against a key prepared for exactly that
algorithm (`asgi_apim.auth.jwks`). ``exp`` is required; ``nbf``, ``iat``,
``aud`` (when configured) are checked with the key manager's leeway. Verified
tokens are cached until their ``exp``, keyed by the token itself (no hash
collisions), bounded, and dropped when the key that signed them is rotated out.

A token that is not three dot-separated parts is opaque and goes to the key
managers that have an ``introspection_url`` (`asgi_apim.auth.introspection`).
"""

from __future__ import annotations

import binascii
import copy
import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from jwt.algorithms import HMACAlgorithm
from starlette.types import Scope

from asgi_apim.auth.base import (
    DEFAULT_REALM,
    MAX_TOKEN_BYTES,
    TAIL,
    ExpiringCache,
    LocationSupport,
    RecallSupport,
    Verified,
    audiences,
    authorization,
    invalid,
    known_tiers,
    now,
    without_header,
)
from asgi_apim.auth.introspection import IntrospectionError, Introspector
from asgi_apim.auth.jwks import ALGORITHMS, JWKSource
from asgi_apim.auth.subscriptions import SubscriptionClaimError, Subscriptions, read_subscriptions
from asgi_apim.config import ApiConfig, Config, KeyManagerConfig, SecurityConfig
from asgi_apim.errors import ConfigError
from asgi_apim.identity import Principal

_URLSAFE = str.maketrans("-_", "+/")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


_JSON = json.JSONDecoder(parse_constant=_reject_constant)


@dataclass(frozen=True, slots=True)
class CompactJWS:
    header: dict[str, Any]
    payload: dict[str, Any]
    signing_input: bytes
    signature: bytes


def b64url_decode(segment: str) -> bytes:
    return binascii.a2b_base64((segment + "=" * (-len(segment) % 4)).translate(_URLSAFE), strict_mode=True)


def parse_compact(token: str, challenge: str) -> CompactJWS:
    """Split and decode a compact JWS once. Raises `InvalidCredentials`; verifies nothing."""
    parts = token.split(".")
    if len(parts) != 3 or not parts[0] or not parts[1]:
        raise invalid("malformed token: expected three base64url parts", challenge)
    try:
        header = _JSON.decode(b64url_decode(parts[0]).decode())
        payload = _JSON.decode(b64url_decode(parts[1]).decode())
        signature = b64url_decode(parts[2])
    except (ValueError, binascii.Error, UnicodeError):
        raise invalid("malformed token: a part is not base64url-encoded JSON", challenge) from None
    if not isinstance(header, dict) or not isinstance(payload, dict):
        raise invalid("malformed token: header and payload must be JSON objects", challenge)
    if "crit" in header:
        raise invalid("token uses critical header extensions, which are not supported", challenge)
    return CompactJWS(header, payload, f"{parts[0]}.{parts[1]}".encode("ascii"), signature)


def verify_signature(jws: CompactJWS, alg: str, keys: Sequence[Any]) -> bool:
    algorithm = ALGORITHMS[alg]
    for key in keys:
        try:
            if algorithm.verify(jws.signing_input, key, jws.signature):
                return True
        except Exception:  # noqa: BLE001 - any failure inside a verifier is a failed verification
            continue
    return False


def _number(payload: Mapping[str, Any], name: str, challenge: str) -> int | float | None:
    value = payload.get(name)
    if value is None:
        return None
    if (
        isinstance(value, bool) or not isinstance(value, (int, float)) or not -1e15 < value < 1e15
    ):  # huge ints overflow floats
        raise invalid(f'the "{name}" claim must be a number', challenge)
    return value


def check_times(payload: Mapping[str, Any], t: float, leeway: float, challenge: str) -> int | float:
    """Check ``exp`` (required), ``nbf`` and ``iat``; return ``exp``."""
    exp = _number(payload, "exp", challenge)
    if exp is None:
        raise invalid('token has no "exp" claim', challenge)
    if t > exp + leeway:
        raise invalid("token has expired", challenge)
    nbf = _number(payload, "nbf", challenge)
    if nbf is not None and t < nbf - leeway:
        raise invalid("token is not yet valid (nbf)", challenge)
    iat = _number(payload, "iat", challenge)
    if iat is not None and t < iat - leeway:
        raise invalid("token was issued in the future (iat)", challenge)
    return exp


def scopes_of(claims: Mapping[str, Any]) -> tuple[str, ...]:
    scope = claims.get("scope")
    if isinstance(scope, str):
        return tuple(scope.split())
    scp = claims.get("scp")
    if isinstance(scp, str):
        return tuple(scp.split())
    if isinstance(scp, list):
        return tuple(s for s in scp if isinstance(s, str))
    return ()


def subscriber_key(claims: Mapping[str, Any], names: Sequence[str], manager: str, fallback: str) -> str:
    for name in names:
        value = claims.get(name)
        if isinstance(value, str) and value:
            return f"{name}:{manager}:{value}"
    return f"sub:{manager}:{fallback}"


def subscriptions_of(claims: Mapping[str, Any], challenge: str) -> Subscriptions:
    """The token's subscriptions, when they are validated: none listed is none at all (every API
    refused, 403); claims of another shape make the token malformed (401)."""
    try:
        return read_subscriptions(claims) or Subscriptions()
    except SubscriptionClaimError as exc:
        raise invalid(f"malformed token: {exc}", challenge) from None


def tier_of(claims: Mapping[str, Any], km: KeyManagerConfig, tiers: Collection[str] | None, challenge: str) -> str:
    if not km.tier_claim or km.tier_claim not in claims:
        return km.default_tier
    tier = claims[km.tier_claim]
    if not isinstance(tier, str) or (tiers is not None and tier not in tiers):
        raise invalid(f'the "{km.tier_claim}" claim does not name a configured tier', challenge)
    return tier


class JWTIssuer:
    """One key manager that signs JWTs: its keys, allow-list and claim rules."""

    def __init__(
        self, km: KeyManagerConfig, keys: JWKSource | None = None, *, tiers: Collection[str] | None = None
    ) -> None:
        self.km = km
        self.keys = keys
        self.tiers = tiers
        self.algorithms = frozenset(a for a in km.algorithms if a in ALGORITHMS and a.lower() != "none")
        self.audience = frozenset(km.audience)
        self.hmac_key: bytes | None = None
        if km.shared_secret:
            self.hmac_key = HMACAlgorithm(HMACAlgorithm.SHA256).prepare_key(km.shared_secret)

    @classmethod
    def from_config(cls, km: KeyManagerConfig, *, tiers: Collection[str] | None = None) -> JWTIssuer:
        unknown = [a for a in km.algorithms if a not in ALGORITHMS]
        if unknown:
            raise ConfigError(f"key_managers[{km.name}].algorithms", f"unsupported algorithm {unknown[0]!r}")
        keys = None
        if km.jwks_url or km.jwks_file:
            keys = JWKSource(
                km.algorithms,
                url=km.jwks_url,
                file=None if km.jwks_url else km.jwks_file,
                refresh_interval=km.jwks_refresh_interval,
                min_refetch_interval=km.jwks_min_refetch_interval,
                timeout=km.fetch_timeout,
                wait=km.jwks_wait,
                name=km.name,
            )
        return cls(km, keys, tiers=tiers)

    async def verify(self, jws: CompactJWS, t: float, challenge: str) -> Verified:
        alg = jws.header.get("alg")
        if not isinstance(alg, str) or alg.lower() == "none" or alg not in self.algorithms:
            raise invalid("token algorithm is not allowed for this issuer", challenge)
        if alg.startswith("HS"):
            keys: list[Any] = [self.hmac_key] if self.hmac_key is not None else []
        else:
            kid = jws.header.get("kid")
            if kid is not None and not isinstance(kid, str):
                raise invalid('malformed token: "kid" must be a string', challenge)
            keys = [] if self.keys is None else await self.keys.lookup(kid, alg)
        if not keys:
            raise invalid("no signing key of this issuer matches the token", challenge)
        generation = self.keys.generation if self.keys is not None else 0
        if not verify_signature(jws, alg, keys):
            raise invalid("token signature is invalid", challenge)
        claims = jws.payload
        exp = check_times(claims, t, self.km.leeway, challenge)
        if self.audience and not self.audience.intersection(audiences(claims.get("aud"))):
            raise invalid("token audience is not accepted", challenge)
        subject = next(
            (claims[c] for c in ("sub", "client_id", "azp") if isinstance(claims.get(c), str) and claims[c]), None
        )
        if subject is None:
            raise invalid("token has no subject", challenge)
        return Verified(
            method="oauth2",
            subject=subject,
            tier=tier_of(claims, self.km, self.tiers, challenge),
            throttle_key=subscriber_key(claims, self.km.subscriber_claim, self.km.name, subject),
            scopes=scopes_of(claims),
            claims=claims,
            expires=exp,
            source=self.keys,
            at_generation=generation,
            subscriptions=subscriptions_of(claims, challenge) if self.km.validate_subscription else None,
            tiers=self.tiers,
            issuer=self.km.name,
        )


class OAuth2Authenticator(RecallSupport, LocationSupport):
    """``Authorization: Bearer`` tokens: JWTs by issuer, opaque ones by introspection."""

    scheme = "oauth2"
    query_param: str | None = None  # a token is never read from the query string

    def __init__(
        self,
        issuers: Sequence[JWTIssuer] = (),
        introspectors: Sequence[Introspector] = (),
        *,
        cache_size: int = 10_000,
        realm: str = DEFAULT_REALM,
    ) -> None:
        self.issuers: dict[str, JWTIssuer] = {}
        for issuer in issuers:
            self.issuers.setdefault(issuer.km.issuer, issuer)
        self.introspectors = tuple(introspectors)
        self.challenge = f'Bearer realm="{realm}"'
        self.invalid_challenge = f'Bearer realm="{realm}", error="invalid_token"'
        self._cache: ExpiringCache[str, Verified] = ExpiringCache(cache_size)
        # read by `recall` and `recall_raw` on every cached token (this package's cache: its dicts are never replaced)
        self._entries = self._cache._data
        self._aliases = self._cache._aliases
        self.header: bytes | None = b"authorization"

    @classmethod
    def from_config(cls, config: Config) -> OAuth2Authenticator:
        if not config.key_managers:
            raise ConfigError("key_managers", "an API lists oauth2 but no [[key_managers]] is configured")
        tiers = known_tiers(config)
        issuers = [
            JWTIssuer.from_config(km, tiers=tiers)
            for km in config.key_managers
            if km.jwks_url or km.jwks_file or km.shared_secret
        ]
        introspectors = [Introspector(km, tiers=tiers) for km in config.key_managers if km.introspection_url]
        return cls(issuers, introspectors)

    def located(self, security: SecurityConfig) -> OAuth2Authenticator:
        """Tokens read from ``security``'s ``auth_header`` (``Bearer <token>`` there, WSO2's custom
        authorization header), the same issuers and cache."""
        if security.auth_header is None:
            return self
        other = copy.copy(self)
        other.header = security.auth_header.lower().encode("latin-1")
        return other

    def credential(self, scope: Scope) -> str | None:
        header = self.header
        if header is None or header == b"authorization":
            return authorization(scope, "bearer")
        return authorization(scope, "bearer", header)

    def recall(self, credential: str, api: ApiConfig) -> Principal | None:
        """The caller of a token validated before and still good (cached, keys unchanged), else None."""
        return self._current(self._entries.get(credential), api)

    def recall_raw(self, raw: bytes, api: ApiConfig) -> Principal | None:
        """`recall` by the raw ``Authorization`` value `remember`-ed for a token, without parsing it."""
        # ExpiringCache.aliased and `_current`, inline: the request path of every cached token
        found = self._aliases.get(raw[TAIL])
        if found is not None and found[0] == raw:
            item = found[1]
            if item[0] > now():
                hit = item[1]
                source = hit.source
                if source is None or source.generation == hit.at_generation:
                    return hit._principals.get(api.name) or hit.principal(api)
        return None

    @staticmethod
    def _current(item: tuple[float, Verified] | None, api: ApiConfig) -> Principal | None:
        """The principal of a cache item (expiry, `Verified`) that has not expired and whose
        issuer's keys have not changed since (`Verified.current`)."""
        if item is not None and item[0] > now() and item[1].current():
            return item[1].principal(api)
        return None

    def remember(self, raw: bytes, credential: str) -> None:
        """Let `recall_raw` find a cached token by the raw header value it was read from, without parsing it again."""
        self._cache.alias(raw, credential)

    def strip(self, scope: Scope) -> None:
        without_header(scope, self.header or b"authorization")

    async def authenticate(self, credential: str, api: ApiConfig, scope: Scope) -> Principal:
        if len(credential) > MAX_TOKEN_BYTES:
            raise invalid("token is larger than 16 KiB", self.invalid_challenge)
        if not credential:
            raise invalid("empty bearer token", self.invalid_challenge)
        recalled = self.recall(credential, api)
        if recalled is not None:
            return recalled
        t = now()
        if credential.count(".") != 2:
            return (await self._introspect(credential, t)).principal(api)
        jws = parse_compact(credential, self.invalid_challenge)
        iss = jws.payload.get("iss")
        issuer = self.issuers.get(iss) if isinstance(iss, str) else None
        if issuer is None:
            raise invalid("token issuer is not trusted", self.invalid_challenge)
        verified = await issuer.verify(jws, t, self.invalid_challenge)
        self._cache.put(credential, verified, verified.expires, t)
        return verified.principal(api)

    async def _introspect(self, token: str, t: float) -> Verified:
        if not self.introspectors:
            raise invalid(
                "opaque tokens are not accepted: no key manager has an introspection_url", self.invalid_challenge
            )
        failed = False
        for introspector in self.introspectors:
            try:
                verified = await introspector.introspect(token, t)
            except IntrospectionError:
                failed = True
                continue
            if verified is not None:
                return verified
        if failed:
            raise invalid("token could not be checked: the introspection endpoint failed", self.invalid_challenge)
        raise invalid("token is not active", self.invalid_challenge)

    async def start(self) -> None:
        for issuer in self.issuers.values():
            if issuer.keys is not None:
                await issuer.keys.start()

    async def aclose(self) -> None:
        for issuer in self.issuers.values():
            if issuer.keys is not None:
                await issuer.keys.aclose()
        for introspector in self.introspectors:
            await introspector.aclose()
