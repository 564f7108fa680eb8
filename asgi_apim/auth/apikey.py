"""API keys: self-contained JWTs, from this instance or from issuers it trusts.

Keys are made by ``asgi-apim apikey issue`` and by the token service (``GET
/apikey``, `asgi_apim.auth.issuer`), in one format (`asgi_apim.auth.signing`).
A key's ``iss`` picks its issuer (`asgi_apim.auth.keysources`): this instance,
whose keys are checked with the public half of ``[api_keys] signing_key``, or
one of ``[[api_keys.trusted_issuers]]`` (another instance, WSO2 API Manager's
Developer Portal). Validation checks the signature, the algorithm, expiry,
the audience (a trusted issuer's, when configured), that the ``jti`` is not in
``[api_keys] revoked``, and that the key opens the request's API: its
``subscribedAPIs`` (or ``allowedAPIs``, or, in keys made before those claims,
``apis``) must list it, else 403 with code 900908 (`asgi_apim.auth.subscriptions`),
which also gives the subscription and application tiers. The key is read from
the ``[api_keys] header`` or, failing that, the ``query_param``.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Collection, Sequence
from typing import Any
from urllib.parse import parse_qsl

from starlette.types import Scope

from asgi_apim.auth.base import (
    DEFAULT_REALM,
    MAX_TOKEN_BYTES,
    ExpiringCache,
    LocationSupport,
    RecallSupport,
    Verified,
    audiences,
    header_value,
    invalid,
    known_tiers,
    now,
    without_header,
    without_params,
)
from asgi_apim.auth.jwt import check_times, parse_compact, verify_signature
from asgi_apim.auth.keysources import KeyIssuer
from asgi_apim.auth.signing import Grant, Signer, algorithm_for, load_signing_key
from asgi_apim.auth.subscriptions import (
    NotSubscribed,
    Subscription,
    SubscriptionClaimError,
    Subscriptions,
    read_subscriptions,
)
from asgi_apim.config import ApiConfig, Config, SecurityConfig
from asgi_apim.errors import ConfigError
from asgi_apim.identity import Principal

__all__ = ["ApiKeyAuthenticator", "algorithm_for", "api_key_refusal", "issue_api_key", "load_signing_key"]

ISSUER = "asgi-apim"
DEFAULT_EXPIRES = 365 * 86_400
_KEY_SETTING = "api_keys.signing_key"


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
    signer = Signer.from_config(config)
    grants = [Grant(config.api(api), tier)]
    return signer.sign(
        signer.claims(grants, subject=subject, tier=tier, validity=expires, scopes=scopes, issued_at=issued_at)
    )


class ApiKeyAuthenticator(RecallSupport, LocationSupport):
    """API keys from a header or query parameter, verified with their issuer's keys."""

    scheme = "api_key"

    def __init__(
        self,
        public_key: Any = None,
        *,
        issuers: Sequence[KeyIssuer] = (),
        issuer_name: str = ISSUER,
        header: str = "apikey",
        query_param: str | None = "apikey",
        revoked: Collection[str] = (),
        tiers: Collection[str] | None = None,
        cache_size: int = 10_000,
        realm: str = DEFAULT_REALM,
    ) -> None:
        known = list(issuers)
        if public_key is not None:  # a private key is fine too: its public half is used
            known.insert(0, KeyIssuer.own_key(public_key, issuer_name))
        if not known:
            raise ValueError("an API key authenticator needs a signing key or a trusted issuer")
        self.issuers: dict[str, KeyIssuer] = {}
        for issuer in known:
            for name in issuer.names:
                self.issuers.setdefault(name, issuer)
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
        if ak.signing_key is None and not ak.trusted_issuers:
            raise ConfigError(
                _KEY_SETTING,
                "an API lists api_key but neither [api_keys] signing_key"
                " nor [[api_keys.trusted_issuers]] is configured",
            )
        return cls(
            load_signing_key(ak.signing_key) if ak.signing_key is not None else None,
            issuers=[KeyIssuer.trusted(t, i) for i, t in enumerate(ak.trusted_issuers)],
            issuer_name=ak.issuer.name,
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
        if verified is None or not verified.current():
            return None
        try:
            return verified.principal(api)
        except NotSubscribed:
            return None  # `authenticate` says why

    def remember(self, raw: bytes, credential: str) -> None:
        """Let `recall_raw` find a cached key by the raw header value it was read from."""
        self._cache.alias(raw, credential)

    def strip(self, scope: Scope) -> None:
        """Remove the key's header and its query parameter (the rest of the query string byte for byte)."""
        if self.header is not None:
            without_header(scope, self.header)
        qs = scope.get("query_string", b"")
        if self._needle and self._needle in qs and self.query_param is not None:
            scope["query_string"] = without_params(qs, (self.query_param,))

    async def authenticate(self, credential: str, api: ApiConfig, scope: Scope) -> Principal:
        t = now()
        verified = self._cache.get(credential, t)
        if verified is None or not verified.current():
            verified = await self._verify(credential, t)
            self._cache.put(credential, verified, verified.expires, t)
        return verified.principal(api)  # NotSubscribed: 403, 900908

    async def _verify(self, token: str, t: float) -> Verified:
        challenge = self.challenge
        if len(token) > MAX_TOKEN_BYTES:
            raise invalid("API key is larger than 16 KiB", challenge)
        jws = parse_compact(token, challenge)
        claims = jws.payload
        iss = claims.get("iss")
        issuer = self.issuers.get(iss) if isinstance(iss, str) else None
        if issuer is None:
            raise invalid("API key was not issued by a trusted issuer", challenge)
        alg, kid = jws.header.get("alg"), jws.header.get("kid")
        if not isinstance(alg, str) or alg not in issuer.algorithms:
            raise invalid("API key algorithm is not allowed for its issuer", challenge)
        if kid is not None and not isinstance(kid, str):
            raise invalid('malformed API key: "kid" must be a string', challenge)
        generation = issuer.generation
        keys = await issuer.keys(kid, alg)
        if not keys or not verify_signature(jws, alg, keys):
            raise invalid("API key signature is invalid", challenge)
        exp = check_times(claims, t, issuer.leeway, challenge)
        if issuer.audience and not issuer.audience.intersection(audiences(claims.get("aud"))):
            raise invalid("API key audience is not accepted", challenge)
        jti, sub = claims.get("jti"), claims.get("sub")
        if not (isinstance(sub, str) and sub) or (jti is not None and not (isinstance(jti, str) and jti)):
            raise invalid("API key lacks its sub, or has an empty jti", challenge)
        if issuer.own and jti is None:
            raise invalid("API key lacks its jti", challenge)
        if jti in self.revoked:
            raise invalid("API key has been revoked", challenge)
        tier, subscriptions = self._tier_and_subscriptions(issuer, claims)
        scope = claims.get("scope")
        application = subscriptions.application if subscriptions is not None else None
        return Verified(
            method="api_key",
            subject=sub,
            tier=tier,
            throttle_key=self._counted_by(issuer, jti, application, sub),
            scopes=tuple(scope.split()) if isinstance(scope, str) else (),
            claims=claims,
            expires=exp,
            source=issuer.source,
            at_generation=generation,
            subscriptions=subscriptions,
            tiers=self.tiers,
            issuer=issuer.name,
        )

    def _tier_and_subscriptions(self, issuer: KeyIssuer, claims: dict[str, Any]) -> tuple[str, Subscriptions | None]:
        """The key's own tier (its ``tier`` claim, else the issuer's default) and its subscriptions
        (None when they are not validated)."""
        challenge = self.challenge
        tier = claims.get("tier")
        if issuer.own or tier is not None:
            if not isinstance(tier, str) or (self.tiers is not None and tier not in self.tiers):
                raise invalid("API key names an unknown tier", challenge)
        else:
            tier = issuer.default_tier
        if not issuer.validate_subscription:
            return tier, None
        try:
            subscriptions = read_subscriptions(claims)
        except SubscriptionClaimError as exc:
            raise invalid(f"malformed API key: {exc}", challenge) from None
        if subscriptions is None:
            apis = claims.get("apis")  # keys made before subscribedAPIs: the API names
            if issuer.own and not (isinstance(apis, list) and all(isinstance(a, str) for a in apis)):
                raise invalid("API key does not list its APIs", challenge)
            names = apis if isinstance(apis, list) else []
            subscriptions = Subscriptions(tuple(Subscription(name=a) for a in names if isinstance(a, str)))
        return tier, subscriptions

    @staticmethod
    def _counted_by(issuer: KeyIssuer, jti: str | None, application: str | None, subject: str) -> str:
        """Own keys count by their ``jti``, as they always have; a trusted issuer's by the
        application the key belongs to (WSO2 counts a subscription per application), else the key."""
        if issuer.own:
            return f"key:{jti}"
        if application is not None:
            return f"app:{issuer.name}:{application}"
        return f"key:{issuer.name}:{jti}" if jti else f"sub:{issuer.name}:{subject}"

    async def start(self) -> None:
        for issuer in dict.fromkeys(self.issuers.values()):
            await issuer.start()

    async def aclose(self) -> None:
        for issuer in dict.fromkeys(self.issuers.values()):
            await issuer.aclose()
