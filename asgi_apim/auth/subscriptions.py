"""Subscriptions carried by a self-contained token, read with WSO2's meaning.

WSO2 API Manager's JWT access tokens and the API keys of its Developer Portal
say which APIs their application subscribed to, and at which tiers::

    "subscribedAPIs": [{"name": "PizzaShackAPI", "context": "/pizzashack/1.0.0",
                        "version": "1.0.0", "publisher": "admin",
                        "subscriptionTier": "Gold", "subscriberTenantDomain": "carbon.super"}],
    "tierInfo": {"Gold": {"stopOnQuotaReach": true, "spikeArrestLimit": 0, "spikeArrestUnit": null}},
    "application": {"id": 1, "uuid": "...", "name": "DefaultApplication", "tier": "Unlimited", "owner": "admin"},
    "keytype": "PRODUCTION"

WSO2 API Microgateway's own keys write ``allowedAPIs`` (``[{"name", "version"}]``,
``"*"`` for any version) instead; it reads ``subscribedAPIs`` first, then
``allowedAPIs``, and so do we.

An entry opens an API when its ``name`` is the API's name, or its ``context``
is the API's context (or the context followed by ``/`` and the entry's
``version``, as WSO2 writes versioned contexts), and, when both the entry and
the API (``[[apis]] version``) name a version, they are the same (``"*"``: any
version). The entry's
``subscriptionTier`` is the caller's tier (the subscription level, 900804);
``application.tier`` is the application tier (the application level, 900803),
counted per application and user, across APIs, as WSO2 does. ``tierInfo``
describes the subscription tiers and is not needed to count them.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from asgi_apim.config import ApiConfig
from asgi_apim.errors import Forbidden

MAX_ENTRIES = 1024


class SubscriptionClaimError(ValueError):
    """Subscription claims that are not of WSO2's shape: the token is malformed."""


class NotSubscribed(Forbidden):
    """The token does not subscribe to the API it is used on (403, 900908)."""

    title = "Forbidden"


@dataclass(frozen=True, slots=True)
class Subscription:
    """One entry of ``subscribedAPIs`` (or ``allowedAPIs``)."""

    name: str | None = None
    context: str | None = None
    version: str | None = None
    tier: str | None = None  # subscriptionTier

    def opens(self, api: ApiConfig) -> bool:
        version = self.version if self.version != "*" else None
        if version is not None and api.version is not None and version != api.version:
            return False  # a subscription to another version of the API
        if self.name is not None and self.name == api.name:
            return True
        if self.context is None:
            return False
        context = self.context.rstrip("/") or "/"
        owns = [api.context] if api.unversioned_context is None else [api.context, api.unversioned_context]
        for own in (c.rstrip("/") or "/" for c in owns):
            if context == own or (version is not None and context == f"{own.rstrip('/')}/{version}"):
                return True
        return False


@dataclass(frozen=True, slots=True)
class Subscriptions:
    """What a token says it subscribed to. ``application`` names the application (its uuid,
    id or name), None when the token carries no ``application`` claim."""

    entries: tuple[Subscription, ...] = ()
    application: str | None = None
    application_tier: str | None = None

    def find(self, api: ApiConfig) -> Subscription | None:
        for entry in self.entries:
            if entry.opens(api):
                return entry
        return None


def _text(entry: Mapping[str, Any], name: str, where: str) -> str | None:
    value = entry.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise SubscriptionClaimError(f"{where}: {name!r} must be a string")
    return value


def _entries(claims: Mapping[str, Any]) -> tuple[Subscription, ...] | None:
    for claim in ("subscribedAPIs", "allowedAPIs"):
        if claim not in claims:
            continue
        listed = claims[claim]
        if not isinstance(listed, list):
            raise SubscriptionClaimError(f"the {claim} claim must be a list")
        if len(listed) > MAX_ENTRIES:
            raise SubscriptionClaimError(f"the {claim} claim lists more than {MAX_ENTRIES} APIs")
        entries = []
        for i, entry in enumerate(listed):
            where = f"{claim}[{i}]"
            if not isinstance(entry, dict):
                raise SubscriptionClaimError(f"{where} must be an object")
            entries.append(
                Subscription(
                    name=_text(entry, "name", where),
                    context=_text(entry, "context", where),
                    version=_text(entry, "version", where),
                    tier=_text(entry, "subscriptionTier", where),
                )
            )
        return tuple(entries)
    return None


def _application(claims: Mapping[str, Any]) -> tuple[str | None, str | None]:
    app = claims.get("application")
    if app is None:
        return None, None
    if not isinstance(app, dict):
        raise SubscriptionClaimError("the application claim must be an object")
    tier = _text(app, "tier", "application")
    ident: Any = next((app[k] for k in ("uuid", "id", "name") if app.get(k) not in (None, "")), None)
    if isinstance(ident, bool) or not isinstance(ident, (str, int)):
        raise SubscriptionClaimError("the application claim names no uuid, id or name")
    return str(ident), tier


def read_subscriptions(claims: Mapping[str, Any]) -> Subscriptions | None:
    """The subscriptions of a token's claims; None when it carries neither ``subscribedAPIs`` nor
    ``allowedAPIs``. Raises `SubscriptionClaimError` for claims of another shape."""
    entries = _entries(claims)
    application, tier = _application(claims)
    if entries is None:
        return None
    return Subscriptions(entries, application, tier)


def tiers_for(
    subscriptions: Subscriptions, api: ApiConfig, default: str, known: Collection[str] | None
) -> tuple[str, str | None]:
    """(subscription tier, application tier) of a token on ``api``; raises `NotSubscribed` when
    no entry opens it, or when it names a tier this configuration does not define."""
    entry = subscriptions.find(api)
    if entry is None:
        raise NotSubscribed(f"the credential is not subscribed to API {api.name!r}")
    tier = entry.tier or default
    application_tier = subscriptions.application_tier
    for name in (tier, application_tier):
        if name is not None and known is not None and name not in known:
            raise NotSubscribed(f"the credential's tier {name!r} for API {api.name!r} is not configured here")
    return tier, application_tier
