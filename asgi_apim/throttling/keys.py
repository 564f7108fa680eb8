"""Who is counted: the caller a request's rate limits are charged to.

Throttling reads only what the security stage left in the scope:

==================  =========================================  ===========================
``scope["user"]``   counted by                                 tier
==================  =========================================  ===========================
mutual_ssl          ``cert:`` + SHA-256 of the certificate's   the registration's tier
                    public key (SubjectPublicKeyInfo)
oauth2              the subscriber: the first of the key       the tier claim, else the
                    manager's ``subscriber_claim`` (``azp``,   key manager's default
                    then ``sub``) present in the token
api_key             the key's own identity                     the key's tier
basic               the user name                              ``[basic_auth] tier``
not authenticated   ``ip:`` + the client IP                    ``Unauthenticated``
==================  =========================================  ===========================

A mutual-SSL caller is counted by its *public key*, not by the certificate: a
certificate renewed with the same key pair keeps its count (and cannot be
used to reset it); a re-keyed certificate starts a new count. The client IP
comes from X-Forwarded-For only when the socket peer is one of
``trusted_proxies`` (`asgi_apim.certs.trust.client_ip`); otherwise it is the
peer itself, so a client cannot pick its own bucket by sending the header.
"""

from __future__ import annotations

import logging
from collections.abc import Container
from typing import NamedTuple

from starlette.types import Scope

from asgi_apim.certs.trust import TrustedProxies, client_ip
from asgi_apim.identity import Principal

logger = logging.getLogger("asgi_apim.throttling")


class Caller(NamedTuple):
    key: str
    tier: str


class CallerKeys:
    """Built once; calling it with a scope answers who to count and at which tier."""

    def __init__(self, trusted_proxies: TrustedProxies, *, tiers: Container[str], default_tier: str) -> None:
        self.trusted = trusted_proxies
        self.tiers = tiers
        self.default_tier = default_tier
        self._warned: set[str] = set()

    def __call__(self, scope: Scope) -> Caller:
        user = scope.get("user")
        if isinstance(user, Principal):
            key = user.throttle_key or f"{user.method}:{user.subject}"
            return Caller(key, self.tier(user.tier))
        return Caller(self.anonymous(scope), self.default_tier)

    def anonymous(self, scope: Scope) -> str:
        """The key of a caller without a `Principal`: its client IP."""
        ip = client_ip(scope, self.trusted)
        return f"ip:{ip or 'unknown'}"

    def tier(self, tier: str | None) -> str:
        """``tier`` if it is configured, else the default tier (with a warning, once per name)."""
        if tier is not None and tier in self.tiers:
            return tier
        name = tier or ""
        if name not in self._warned and len(self._warned) < 64:
            self._warned.add(name)
            logger.warning("caller tier %r is not configured; counting it under %r", tier, self.default_tier)
        return self.default_tier
