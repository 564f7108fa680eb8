"""Opaque access tokens, checked at a key manager's RFC 7662 introspection endpoint.

The token is POSTed (``token``, ``token_type_hint=access_token``) with the key
manager's ``client_id``/``client_secret`` as HTTP basic credentials. Only
``"active": true`` passes; ``exp`` (with the leeway), ``iss`` (when present it
must be the key manager's issuer) and ``aud`` (when an audience is configured)
are honoured; ``scope``, ``client_id`` and ``sub`` become the principal's.
Answers are cached, bounded and keyed by a SHA-256 of the token (never the
token): active ones until their ``exp`` (or ``default_ttl`` when the endpoint
gives none), inactive ones for ``introspection_negative_ttl``. Identical
lookups in flight share one call; at most ``introspection_max_concurrency``
calls are in flight, and a lookup beyond that is refused at once. Each call
has the total deadline ``fetch_timeout`` (`asgi_apim._fetch`). An endpoint
that fails (unreachable, slow, non-200, not JSON) or is busy is logged (at
most once a second) and the token refused; failures are not cached.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Collection
from typing import Any

import httpx

from asgi_apim._fetch import FetchError, fetch
from asgi_apim._redact import redact
from asgi_apim.auth.base import ExpiringCache, Verified, audiences
from asgi_apim.auth.subscriptions import SubscriptionClaimError, Subscriptions, read_subscriptions
from asgi_apim.config import KeyManagerConfig
from asgi_apim.errors import concealed

logger = logging.getLogger("asgi_apim.auth.introspection")

MAX_ANSWER_BYTES = 256 * 1024


class IntrospectionError(Exception):
    """The endpoint could not give an answer (or was not asked: too many calls in flight)."""


class _RateLimitedLog:
    """A warning logged at most once per ``interval`` seconds, with how many were left out."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self._next = float("-inf")
        self._left_out = 0

    def warning(self, message: str, *args: Any) -> None:
        t = time.monotonic()
        if t < self._next:
            self._left_out += 1
            return
        self._next = t + self.interval
        left_out, self._left_out = self._left_out, 0
        if left_out:
            logger.warning(message + " (and %d more like it in the last %gs)", *args, left_out, self.interval)
        else:
            logger.warning(message, *args)


class Introspector:
    """One introspection endpoint. Build once; `introspect` is the per-request call.

    Bounded three ways: answers are cached by a SHA-256 of the token (active ones in one
    cache, inactive ones in another, so a flood of bogus tokens cannot push out good ones);
    identical lookups in flight share one call; and at most ``max_concurrency`` calls are in
    flight: a lookup beyond that is refused at once (`IntrospectionError`), never queued."""

    def __init__(
        self,
        km: KeyManagerConfig,
        *,
        tiers: Collection[str] | None = None,
        cache_size: int = 10_000,
        default_ttl: float = 60.0,
        negative_ttl: float | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
    ) -> None:
        if not km.introspection_url:
            raise ValueError("key manager has no introspection_url")
        self.km = km
        self.url = km.introspection_url
        self._shown = concealed(redact(self.url)) if self.url else ""  # the URL as logs name it: no credentials
        self.tiers = tiers
        self.default_ttl = default_ttl
        self.negative_ttl = km.introspection_negative_ttl if negative_ttl is None else negative_ttl
        self.timeout = km.fetch_timeout if timeout is None else timeout
        self.max_concurrency = km.introspection_max_concurrency if max_concurrency is None else max_concurrency
        self._auth = httpx.BasicAuth(km.client_id, km.client_secret or "") if km.client_id else None
        self._client: httpx.AsyncClient | None = self._new_client()
        self._cache: ExpiringCache[bytes, Verified] = ExpiringCache(cache_size)
        self._refused: ExpiringCache[bytes, bool] = ExpiringCache(cache_size)
        self._pending: dict[bytes, asyncio.Task[Verified | None]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._failed_log = _RateLimitedLog()
        self._busy_log = _RateLimitedLog()

    @property
    def in_flight(self) -> int:
        """Calls to the endpoint not yet answered."""
        return len(self._pending)

    async def introspect(self, token: str, t: float) -> Verified | None:
        """The verified token, or None when it is not active. Raises `IntrospectionError`."""
        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        hit = self._cache.get(digest, t)
        if hit is not None:
            return hit
        if self._refused.get(digest, t):
            return None
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._pending.clear()  # calls of an event loop that has ended (a test client's, say)
            self._loop = loop
        task = self._pending.get(digest)
        if task is None:
            if len(self._pending) >= self.max_concurrency:
                self._busy_log.warning(
                    "introspection at %s: %d calls in flight, token refused without asking",
                    self._shown,
                    self.max_concurrency,
                )
                raise IntrospectionError("introspection endpoint busy")
            task = loop.create_task(self._lookup(token, digest, t))
            self._pending[digest] = task
            task.add_done_callback(lambda done: self._settled(digest, done))
        return await asyncio.shield(task)  # a caller that goes away leaves the call to the others

    def _settled(self, digest: bytes, task: asyncio.Task[Verified | None]) -> None:
        if self._pending.get(digest) is task:
            del self._pending[digest]
        if not task.cancelled():
            task.exception()  # retrieved here: every caller may have gone

    async def _lookup(self, token: str, digest: bytes, t: float) -> Verified | None:
        verified = self._judge(await self._ask(token), t)
        if verified is None:
            self._refused.put(digest, True, t + self.negative_ttl, t)
        else:
            self._cache.put(digest, verified, verified.expires, t)
        return verified

    def _new_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(timeout=self.timeout, follow_redirects=False)

    async def _ask(self, token: str) -> dict[str, Any]:
        if self._client is None:
            self._client = self._new_client()
        try:
            response = await fetch(
                self._client,
                "POST",
                self.url,
                deadline=self.timeout,
                max_bytes=MAX_ANSWER_BYTES,
                data={"token": token, "token_type_hint": "access_token"},
                auth=self._auth,
                headers={"accept": "application/json"},
            )
        except FetchError as exc:
            self._failed_log.warning("introspection at %s failed: %s", self._shown, type(exc).__name__)
            raise IntrospectionError("introspection endpoint unreachable") from None
        if response.status != 200:
            self._failed_log.warning("introspection at %s answered HTTP %d", self._shown, response.status)
            raise IntrospectionError(f"introspection endpoint answered {response.status}")
        try:
            answer = json.loads(response.body)
        except (ValueError, RecursionError):
            answer = None
        if not isinstance(answer, dict):
            self._failed_log.warning("introspection at %s answered something that is not a JSON object", self._shown)
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
            subscriptions=self._subscriptions(answer) if km.validate_subscription else None,
            tiers=self.tiers,
            issuer=km.name,
        )

    @staticmethod
    def _subscriptions(answer: dict[str, Any]) -> Subscriptions:
        """An introspection answer's subscriptions (WSO2's claims, if the server adds them): none,
        or claims of another shape, subscribe to nothing (every API refused, 403)."""
        try:
            return read_subscriptions(answer) or Subscriptions()
        except SubscriptionClaimError:
            return Subscriptions()

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
