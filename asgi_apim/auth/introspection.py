"""Opaque access tokens, checked at a key manager's RFC 7662 introspection endpoint.

The token is POSTed (``token``, ``token_type_hint=access_token``) with the key
manager's ``client_id``/``client_secret`` as HTTP basic credentials. Only
``"active": true`` passes; ``exp`` (with the leeway), ``iss`` (when present it
must be the key manager's issuer) and ``aud`` (when an audience is configured)
are honoured; ``scope``, ``client_id`` and ``sub`` become the principal's.
Answers are cached, bounded: active ones until their ``exp`` (or
``default_ttl`` when the endpoint gives none), inactive ones for
``negative_ttl``. An endpoint that fails (unreachable, non-200, not JSON) is
logged and the token refused; failures are not cached.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection
from typing import Any

import httpx

from asgi_apim._redact import redact
from asgi_apim.auth.base import ExpiringCache, Verified, audiences
from asgi_apim.config import KeyManagerConfig
from asgi_apim.errors import concealed

logger = logging.getLogger("asgi_apim.auth.introspection")

_INACTIVE = Verified(method="oauth2", subject="", tier="", throttle_key="")


class IntrospectionError(Exception):
    """The endpoint could not give an answer."""


class Introspector:
    def __init__(
        self,
        km: KeyManagerConfig,
        *,
        tiers: Collection[str] | None = None,
        cache_size: int = 10_000,
        default_ttl: float = 60.0,
        negative_ttl: float = 10.0,
        timeout: float = 5.0,
    ) -> None:
        if not km.introspection_url:
            raise ValueError("key manager has no introspection_url")
        self.km = km
        self.url = km.introspection_url
        self._shown = concealed(redact(self.url)) if self.url else ""  # the URL as logs name it: no credentials
        self.tiers = tiers
        self.default_ttl = default_ttl
        self.negative_ttl = negative_ttl
        self.timeout = timeout
        self._auth = httpx.BasicAuth(km.client_id, km.client_secret or "") if km.client_id else None
        self._client: httpx.AsyncClient | None = self._new_client()
        self._cache: ExpiringCache[str, Verified] = ExpiringCache(cache_size)

    async def introspect(self, token: str, t: float) -> Verified | None:
        """The verified token, or None when it is not active. Raises `IntrospectionError`."""
        hit = self._cache.get(token, t)
        if hit is not None:
            return None if hit is _INACTIVE else hit
        answer = await self._ask(token)
        verified = self._judge(answer, t)
        if verified is None:
            self._cache.put(token, _INACTIVE, t + self.negative_ttl, t)
        else:
            self._cache.put(token, verified, verified.expires, t)
        return verified

    def _new_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(timeout=self.timeout, follow_redirects=False)

    async def _ask(self, token: str) -> dict[str, Any]:
        if self._client is None:
            self._client = self._new_client()
        try:
            response = await self._client.post(
                self.url,
                data={"token": token, "token_type_hint": "access_token"},
                auth=self._auth,  # type: ignore[arg-type]
                headers={"accept": "application/json"},
            )
        except Exception as exc:  # noqa: BLE001 - httpx's errors, and a URL it cannot use: the endpoint is unreachable
            logger.warning("introspection at %s failed: %s", self._shown, type(exc).__name__)
            raise IntrospectionError("introspection endpoint unreachable") from None
        if response.status_code != 200:
            logger.warning("introspection at %s answered HTTP %d", self._shown, response.status_code)
            raise IntrospectionError(f"introspection endpoint answered {response.status_code}")
        try:
            answer = json.loads(response.content)
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            logger.warning("introspection at %s answered something that is not a JSON object", self._shown)
            raise IntrospectionError("introspection endpoint answered garbage")
        return answer

    def _judge(self, answer: dict[str, Any], t: float) -> Verified | None:
        km = self.km
        if answer.get("active") is not True:
            return None
        exp = answer.get("exp")
        if exp is not None:
            if isinstance(exp, bool) or not isinstance(exp, (int, float)) or t > exp + km.leeway:
                return None
        iss = answer.get("iss")
        if iss is not None and iss != km.issuer:
            return None
        if km.audience and "aud" in answer and not set(km.audience).intersection(audiences(answer["aud"])):
            return None
        subject = next(
            (answer[k] for k in ("sub", "username", "client_id") if isinstance(answer.get(k), str) and answer[k]), None
        )
        if subject is None:
            return None
        tier = km.default_tier
        if km.tier_claim and km.tier_claim in answer:
            tier = answer[km.tier_claim]
            if not isinstance(tier, str) or (self.tiers is not None and tier not in self.tiers):
                return None
        scope = answer.get("scope")
        client = answer.get("client_id")
        key = next(
            (f"{c}:{km.name}:{answer[c]}" for c in km.subscriber_claim if isinstance(answer.get(c), str) and answer[c]),
            f"client_id:{km.name}:{client}" if isinstance(client, str) and client else f"sub:{km.name}:{subject}",
        )
        return Verified(
            method="oauth2",
            subject=subject,
            tier=tier,
            throttle_key=key,
            scopes=tuple(scope.split()) if isinstance(scope, str) else (),
            claims=answer,
            expires=min(exp, t + 86_400.0) if exp is not None else t + self.default_ttl,
        )

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
