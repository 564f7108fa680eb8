"""The registry as the truststore reloader sees it: a view, polled cheaply, kept when the database is away.

`RegistryFeed.registrations` (a `asgi_apim.certs.truststore.RegistrySource`)
is called by `TrustReloader` from its worker thread every ``reload_interval``
seconds. It reads the change marker first and the whole list only when the
marker moved; certificates are parsed once per fingerprint. A database that
cannot be reached keeps the last good view: the outage is logged once, and so
is the recovery. No request ever waits for it: requests read the material the
reloader built.

Registrations naming an API the configuration no longer has, or a tier it no
longer knows, are left out of the view (logged once each). Registrations
expiring within ``[registry] expiry_warning_days`` are logged at the first
successful read and then once a day.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import math
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

from cryptography import x509

from asgi_apim.certs.truststore import RegisteredCertificate, TrustReloader, registered
from asgi_apim.config import Config
from asgi_apim.errors import RegistryUnavailable
from asgi_apim.registry.store import RegistryStore, StoredCertificate

logger = logging.getLogger("asgi_apim.registry")

EXPIRY_LOG_EVERY = 86_400.0  # seconds between two logs of the certificates about to expire
_LISTED = 20  # expiring certificates named one by one in a log; the rest are counted


def days_left(cert: x509.Certificate, now: datetime.datetime | None = None) -> float:
    now = now or datetime.datetime.now(datetime.UTC)
    return (cert.not_valid_after_utc - now).total_seconds() / 86_400


def expiry_summary(registrations: Iterable[RegisteredCertificate]) -> tuple[int, float | None]:
    """(how many registrations, days to the nearest expiry or None): what metrics report."""
    now = datetime.datetime.now(datetime.UTC)
    count = 0
    nearest: float | None = None
    for r in registrations:
        count += 1
        days = days_left(r.cert, now)
        nearest = days if nearest is None or days < nearest else nearest
    return count, nearest


class RegistryFeed:
    """The registry's registrations for the APIs of ``config``, as a `RegistrySource`."""

    def __init__(self, config: Config, store: RegistryStore | None = None) -> None:
        if store is None:
            if config.registry.url is None:
                raise ValueError("the configuration has no [registry]")
            store = RegistryStore(config.registry.url)
        self.store = store
        self.tiers = frozenset(config.throttling.tiers)
        self.apis = frozenset(api.name for api in config.apis)
        self.warning_days = config.registry.expiry_warning_days
        self._lock = threading.Lock()
        self._marker: int | None = None
        self._view: tuple[RegisteredCertificate, ...] = ()
        self._parsed: dict[str, x509.Certificate] = {}  # by fingerprint: each certificate parsed once
        self._outage: str | None = None
        self._skipped: set[tuple[str, str, str]] = set()
        self._next_expiry_log = 0.0

    def registrations(self) -> tuple[int | None, tuple[RegisteredCertificate, ...]]:
        with self._lock:
            try:
                marker = self.store.marker()
                if marker != self._marker:
                    self._view = self._convert(self.store.active())
                    self._marker = marker
            except RegistryUnavailable as exc:
                self._down(str(exc))
                return self._marker, self._view
            self._up()
            self._log_expiring()
            return self._marker, self._view

    def summary(self) -> tuple[int, float | None]:
        """(count, days to the nearest expiry) of the last good view."""
        return expiry_summary(self._view)

    def _convert(self, rows: Sequence[StoredCertificate]) -> tuple[RegisteredCertificate, ...]:
        parsed: dict[str, x509.Certificate] = {}
        view = []
        for row in rows:
            if row.api not in self.apis or row.tier not in self.tiers:
                self._skip(row, "API" if row.api not in self.apis else "tier")
                continue
            cert = self._parsed.get(row.sha256) or parsed.get(row.sha256)
            if cert is None:
                try:
                    cert = x509.load_pem_x509_certificate(row.certificate.encode("ascii"))
                except ValueError:
                    self._skip(row, "certificate")
                    continue
            parsed[row.sha256] = cert
            view.append(registered(row.api, row.alias, row.tier, cert, source="registry"))
        self._parsed = parsed
        return tuple(view)

    def _skip(self, row: StoredCertificate, what: str) -> None:
        key = (row.api, row.alias, what)
        if key not in self._skipped:
            self._skipped.add(key)
            detail = {
                "API": f"API {row.api!r} is not in the configuration",
                "tier": f"tier {row.tier!r} is not in [throttling.tiers]",
                "certificate": "its PEM does not parse",
            }[what]
            logger.warning("registry certificate %r of API %r left out: %s", row.alias, row.api, detail)

    def _down(self, reason: str) -> None:
        if self._outage is None:
            logger.warning(
                "certificate registry unreachable, the last good view (%d registrations) keeps serving: %s",
                len(self._view),
                reason,
            )
        self._outage = reason

    def _up(self) -> None:
        if self._outage is not None:
            self._outage = None
            logger.info("certificate registry reachable again: %d registrations", len(self._view))

    def _log_expiring(self) -> None:
        now = time.monotonic()
        if now < self._next_expiry_log:
            return
        self._next_expiry_log = now + EXPIRY_LOG_EVERY
        log_expiring(self._view, self.warning_days)


def log_expiring(registrations: Iterable[RegisteredCertificate], warning_days: int) -> list[RegisteredCertificate]:
    """Log the registrations that expire within ``warning_days`` (or have expired); answer them."""
    now = datetime.datetime.now(datetime.UTC)
    soon = sorted(
        (r for r in registrations if days_left(r.cert, now) <= warning_days), key=lambda r: r.cert.not_valid_after_utc
    )
    for r in soon[:_LISTED]:
        days = days_left(r.cert, now)
        when = r.cert.not_valid_after_utc.strftime("%Y-%m-%d %H:%M UTC")
        state = f"expired on {when}" if days < 0 else f"expires in {int(days)} days ({when})"
        logger.warning("registered certificate %r of API %r (%s) %s", r.alias, r.api, r.source, state)
    if len(soon) > _LISTED:
        logger.warning("%d more registered certificates expire within %d days", len(soon) - _LISTED, warning_days)
    return soon


def feed_for(config: Config) -> RegistryFeed | None:
    """The registry feed of ``config``; None without a ``[registry]`` table."""
    return RegistryFeed(config) if config.registry.url is not None else None


def as_json(r: RegisteredCertificate) -> dict[str, Any]:
    """A registration as the admin API and ``certs list --json`` show it."""
    return {
        "api": r.api,
        "alias": r.alias,
        "tier": r.tier,
        "subject": r.cert.subject.rfc4514_string(),
        "sha256": r.sha256.hex(),
        "not_after": r.cert.not_valid_after_utc.isoformat(),
        "days_left": math.floor(days_left(r.cert)),
        "ca": r.is_ca,
        "source": r.source,
    }


async def log_configured_expiry(trust: TrustReloader, warning_days: int) -> None:
    """Log the certificates registered in the configuration file (``[[apis.certificates]]``) that
    expire within ``warning_days``, at start-up and then once a day (the database's own
    registrations are logged by their `RegistryFeed`)."""
    while True:
        configured = [r for r in trust.current.registrations if r.source == "config"]
        log_expiring(configured, warning_days)
        await asyncio.sleep(EXPIRY_LOG_EVERY)
