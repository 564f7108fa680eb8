"""Is a client certificate accepted, and for which APIs: one path for the TLS
handshake's certificate and a trusted proxy's header.

Per API, a certificate passes when (1) its DER equals that of a certificate
registered for that API ("exact"), or, with chain validation on,
when pyca/cryptography's `x509.verification` builds a chain from it to the
truststore or a registered CA and (2) a CA registered for the API is in that
chain ("ca"), or (3) the API sets ``truststore_tier`` and the chain reaches
the truststore ("truststore", at that tier). Exact wins over CA, CA over
truststore; an API that registers nothing and sets no ``truststore_tier``
accepts no certificate. Expired, not yet valid and revoked certificates never
pass.

Chains are built by cryptography (`asgi_apim.certs.verifier`, which also says
what its traps are), revocation is checked here with `asgi_apim.certs.crl`.
A `CertificateValidator` belongs to one truststore generation; its verdict
cache is bounded and no entry outlives a certificate its verdict rests on.
An uncached verdict costs little more than cryptography's own parse + verify
(bench/bench_validation.py): facts about the truststore are computed once,
those about presented CA certificates are memoised by DER, the rest once per
request.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from math import inf
from types import MappingProxyType
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.serialization import Encoding

from asgi_apim.certs.crl import Revocations
from asgi_apim.certs.truststore import RegisteredCertificate, TrustMaterial
from asgi_apim.certs.verdict import (
    EMPTY,
    EXPIRED,
    ISSUER_REVOKED,
    NOT_REGISTERED,
    NOT_YET_VALID,
    REVOKED,
    UNPARSEABLE,
    Acceptance,
    CertificateVerdict,
)
from asgi_apim.certs.verifier import CHAIN_TIME, NOT_TRUSTED, ChainVerifier, self_signed

logger = logging.getLogger("asgi_apim.certs.validation")

CACHE_MAX_TTL = 3600.0
_MEMO_SIZE = 4096


def load_pem_chain(data: bytes) -> list[x509.Certificate]:
    """Every certificate of a PEM bundle, in order (ValueError if there is none)."""
    return x509.load_pem_x509_certificates(data)


@dataclass(frozen=True)
class _Scope:
    """One way an API trusts, by DER: its registered CAs, or the truststore
    (for an API with ``truststore_tier``), whose certificates map to None."""

    members: Mapping[bytes, RegisteredCertificate | None]
    verifier: ChainVerifier
    truststore: bool = False


_Found = tuple[float, "RegisteredCertificate | None"]  # a chain to a scope: its first expiry, the registration met


class CertificateValidator:
    """Built once per `TrustMaterial`; `validate` is the per-request call."""

    def __init__(self, material: TrustMaterial, *, chain_validation: bool = True, cache_size: int = 10_000) -> None:
        self.material = material
        self.generation = material.generation
        self.chain_validation = chain_validation
        self.cache_size = max(1, cache_size)
        self._exact: dict[bytes, dict[str, Acceptance]] = {}  # by the leaf's DER
        self._accept: dict[int, Acceptance] = {}
        by_api: dict[str, dict[bytes, RegisteredCertificate]] = {}
        ca_certs: dict[bytes, x509.Certificate] = {}
        self._der: dict[int, bytes] = {id(c): c.public_bytes(Encoding.DER) for c in material.anchors}
        for reg in material.registrations:
            der = self._der[id(reg.cert)] = reg.cert.public_bytes(Encoding.DER)
            # exact for itself too, CA or not: `openssl req -x509` makes every self-signed certificate a CA
            self._exact.setdefault(der, {}).setdefault(reg.api, Acceptance(reg.api, reg.alias, reg.tier, "exact"))
            self._accept.setdefault(id(reg), Acceptance(reg.api, reg.alias, reg.tier, "ca"))
            cas = by_api.setdefault(reg.api, {})
            if reg.is_ca:
                cas.setdefault(der, reg)
                ca_certs.setdefault(der, reg.cert)
        self._exact_sizes = frozenset(
            map(len, self._exact)
        )  # a presented leaf of another size is not hashed to look it up
        anchors = {self._der[id(c)]: c for c in material.anchors}
        if (
            material.crls
        ):  # a CA that a loaded CRL revokes anchors nothing (a chain stops at an anchor: its CRL would go unread)
            trusted = {**anchors, **ca_certs}
            listed = Revocations(material.crls, trusted.values())
            gone = {
                d
                for d, c in trusted.items()
                if not self_signed(c) and listed.revoked_without_chain(c, tuple(trusted.values()))
            }
            for d in gone:
                logger.warning(
                    "CA certificate %s is revoked by a loaded CRL: it is not trusted",
                    trusted[d].subject.rfc4514_string(),
                )
                anchors.pop(d, None)
                ca_certs.pop(d, None)
                for registered in by_api.values():
                    registered.pop(d, None)
        self._verifier = ChainVerifier(tuple({**anchors, **ca_certs}.values()))
        self._intermediates = [c for c in anchors.values() if not self_signed(c)]
        self._pool = self._intermediates + [c for d, c in ca_certs.items() if d not in anchors and not self_signed(c)]
        truststore = _Scope(dict.fromkeys(anchors), ChainVerifier(tuple(anchors.values())), truststore=True)
        tiers = material.truststore_tiers
        self._scopes: dict[str, tuple[_Scope, ...]] = {}  # tried in order: registered CAs, then the truststore
        self._open: dict[str, Acceptance] = {}
        for api in material.apis:
            registered_cas = by_api.get(api)
            scopes = (
                [_Scope(registered_cas, ChainVerifier(tuple(ca_certs[d] for d in registered_cas)))]
                if registered_cas
                else []
            )
            if api in tiers:
                scopes.append(truststore)
                self._open[api] = Acceptance(api, None, tiers[api], "truststore")
            self._scopes[api] = tuple(scopes)
        known = (*anchors.values(), *ca_certs.values())
        # when the first trusted CA certificate that is not yet valid becomes valid: a chain refused
        # for its time is decided again then (the presented certificates' own times are `_expiry`'s)
        self._ca_valid_from = min(
            (nb for c in known if (nb := c.not_valid_before_utc.timestamp()) > time.time()), default=inf
        )
        self._not_after = {id(c): c.not_valid_after_utc.timestamp() for c in known}
        self._ca_after: dict[bytes, float] = {}  # presented CA certificates (clients resend theirs), bounded
        # per chain end (the DER of the anchor, or the tuple of a longer chain's CA part): the
        # acceptances and reasons of a leaf without exact registrations, when they rest on the end alone
        self._ends: dict[Hashable, tuple[Mapping[str, Acceptance], Mapping[str, str]]] = {}
        self._revocations = Revocations(material.crls, known)
        self._cache: OrderedDict[Hashable, CertificateVerdict] = OrderedDict()

    def validate(
        self, ders: tuple[bytes, ...], cache_key: bytes | None = None, *, cache: bool = True
    ) -> CertificateVerdict:
        """The verdict on a chain (DER, leaf first); cached by ``cache_key``
        (the raw header bytes, say) or by the DERs themselves, unless ``cache``
        is false (a caller with a cache of its own: `CertificateResolver`)."""
        now = time.time()
        key: Hashable = None
        if cache:
            key = tuple(ders) if cache_key is None else cache_key
            hit = self._cache.get(key)
            if hit is not None:
                if hit.valid_until > now:
                    self._cache.move_to_end(key)
                    return hit
                del self._cache[key]
        try:
            verdict = self._validate(tuple(ders), now)
        except Exception:  # never let a certificate turn into a 500
            logger.exception("certificate validation failed unexpectedly")
            return _refused(None, ders, "certificate could not be validated")
        if key is not None and verdict.valid_until > now:
            self._cache[key] = verdict
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return verdict

    def _validate(self, ders: tuple[bytes, ...], now: float) -> CertificateVerdict:
        if not ders:
            return _refused(None, ders, "no certificate presented", valid_until=now + CACHE_MAX_TTL)
        try:
            certs = (
                [x509.load_der_x509_certificate(ders[0])]
                if len(ders) == 1
                else [x509.load_der_x509_certificate(d) for d in ders]
            )
        except (ValueError, TypeError, UnsupportedAlgorithm):
            return _refused(None, ders, UNPARSEABLE, valid_until=now + CACHE_MAX_TTL)
        leaf = certs[0]
        chain: list[x509.Certificate] | None = None
        chain_reason: str | None = None
        # read before the verify, whose big-number work leaves the CPU caches cold for what follows
        not_after = leaf.not_valid_after_utc.timestamp()
        if self.chain_validation:
            # first, as cryptography would: it also checks every validity period, at its time
            intermediates = certs[1:] + self._intermediates if self._intermediates else certs[1:]
            chain, chain_reason = self._verifier.verify(leaf, intermediates, now)
        if chain is None:
            return self._unchained(certs, ders, chain_reason, now)
        if not_after < now:  # expired since the verifier's time
            return _refused(leaf, ders, EXPIRED, not_after, now)
        end: Hashable  # the chain's CA part, by DER: what the acceptances of a leaf without exact registrations rest on
        if len(chain) == 2 and (anchor := self._der.get(id(chain[1]))) is not None:
            # the usual chain: the leaf and the truststore certificate (or registered CA) that issued it
            chain_ders = [ders[0], anchor]
            until = self._not_after[id(chain[1])]
            if not_after < until:
                until = not_after
            end = anchor
        else:
            chain_ders, until = self._facts(chain, certs, ders, not_after)
            end = tuple(chain_ders[1:])
        if until < now:
            return self._unchained(certs, ders, CHAIN_TIME, now)
        revoked = self._revocations.revoked_in_chain(chain, chain_ders)  # every time: it is the leaf's serial number
        if revoked is not None:
            return _refused(
                leaf, ders, REVOKED if revoked == 0 else ISSUER_REVOKED, not_after, min(until, now + CACHE_MAX_TTL)
            )
        exact = self._exact.get(ders[0]) if len(ders[0]) in self._exact_sizes else None
        if not exact:
            known = self._ends.get(end)
            if known is not None:
                return CertificateVerdict(
                    leaf, ders[0], not_after, known[0], None, known[1], min(until, now + CACHE_MAX_TTL)
                )
        acceptances: dict[str, Acceptance] = dict(exact) if exact else {}
        reasons: dict[str, str] = {}
        settled = True  # no refusal below changes when a presented certificate becomes valid
        within: dict[int, _Found | str | None] = {}  # per scope (the truststore's is shared)
        last = chain_ders[-1]
        for api, scopes in self._scopes.items():
            if api in acceptances:
                continue
            why: str | None = None
            for scope in scopes:
                members = scope.members
                if last in members:  # the usual case: the chain ends at one of the scope's certificates
                    reg = members[last]
                    acceptances[api] = self._open[api] if reg is None else self._accept[id(reg)]
                    break
                outcome = within.get(id(scope), _UNSEEN)
                if outcome is _UNSEEN:
                    outcome = within[id(scope)] = self._within(scope, certs, ders, not_after, chain_ders, now)
                if isinstance(outcome, tuple):
                    until = min(until, outcome[0])
                    acceptances[api] = self._open[api] if outcome[1] is None else self._accept[id(outcome[1])]
                    break
                settled = False
                why = why or outcome
            else:
                reasons[api] = why or _unregistered(api, scopes)
        accepted, refused = MappingProxyType(acceptances), MappingProxyType(reasons) if reasons else EMPTY
        if not exact and not within:
            # Decided by the chain's end alone (no scope needed a chain of its own): the same for
            # every leaf that ends there. Only this validator (one truststore generation, its CRLs
            # included) keeps it, and revocation is checked above for each leaf all the same.
            if len(self._ends) >= _MEMO_SIZE:
                self._ends.clear()
            self._ends[end] = (accepted, refused)
        return CertificateVerdict(
            leaf,
            ders[0],
            not_after,
            accepted,
            None,
            refused,
            min(until, now + CACHE_MAX_TTL) if settled else min(until, _expiry(now, certs)),
        )

    def _unchained(
        self, certs: list[x509.Certificate], ders: tuple[bytes, ...], chain_reason: str | None, now: float
    ) -> CertificateVerdict:
        """The verdict without a validated chain: only exact registrations can pass."""
        leaf = certs[0]
        not_before, not_after = _validity(leaf)
        if now < not_before:
            return _refused(leaf, ders, NOT_YET_VALID, not_after, min(not_before, now + CACHE_MAX_TTL))
        if now > not_after:
            return _refused(leaf, ders, EXPIRED, not_after, now)  # not kept: never outlive not_after
        until = _expiry(now, certs)
        if chain_reason == CHAIN_TIME and self._ca_valid_from < until:
            until = max(self._ca_valid_from, now)  # a trusted CA becomes valid then: not kept past it
        exact = self._exact.get(ders[0])
        if exact and self._revocations.revoked_without_chain(leaf, certs[1:]):
            return _refused(leaf, ders, REVOKED, not_after, until)
        disabled = f"{NOT_REGISTERED} for API %r (chain validation is disabled)"
        reasons = {api: chain_reason or disabled % api for api in self.material.apis if not exact or api not in exact}
        return CertificateVerdict(
            leaf=leaf,
            der=ders[0],
            not_after=not_after,
            acceptances=MappingProxyType(dict(exact)) if exact else EMPTY,
            reason=None if exact else (chain_reason or f"{NOT_REGISTERED} (chain validation is disabled)"),
            api_reasons=MappingProxyType(reasons) if reasons else EMPTY,
            valid_until=until,
        )

    def _facts(
        self,
        chain: list[x509.Certificate],
        certs: list[x509.Certificate],
        ders: tuple[bytes, ...],
        leaf_not_after: float,
    ) -> tuple[list[bytes], float]:
        """The DER of each certificate of a validated chain (leaf first) and its first expiry."""
        known_der, known_after, memo = self._der, self._not_after, self._ca_after
        chain_ders = [ders[0]]
        until = leaf_not_after
        for position in range(1, len(chain)):
            cert = chain[position]
            key = id(cert)
            der = known_der.get(key)
            if der is not None:
                expires = known_after[key]
            else:  # presented, usually in chain order
                if position < len(certs) and certs[position] is cert:
                    der = ders[position]
                else:
                    der = next((d for c, d in zip(certs, ders) if c is cert), None) or cert.public_bytes(Encoding.DER)
                cached = memo.get(der)
                if cached is None:
                    if len(memo) >= _MEMO_SIZE:
                        memo.clear()
                    cached = memo[der] = cert.not_valid_after_utc.timestamp()
                expires = cached
            chain_ders.append(der)
            if expires < until:
                until = expires
        return chain_ders, until

    def _within(
        self,
        scope: _Scope,
        certs: list[x509.Certificate],
        ders: tuple[bytes, ...],
        leaf_not_after: float,
        chain_ders: list[bytes],
        now: float,
    ) -> _Found | str | None:
        """A validated chain from the leaf to one of ``scope``'s certificates
        (its first expiry and the registration met on it), or why there is
        none. The chain already found ends at the first trusted certificate on
        the way up, which may belong to another API: then one is built for
        this scope."""
        found_member, reg = _member(scope, chain_ders)
        if found_member:
            return float("inf"), reg
        found, _ = scope.verifier.verify(certs[0], certs[1:] + self._pool, now)
        if found is None:
            return None
        found_ders, found_until = self._facts(found, certs, ders, leaf_not_after)
        if found_until < now:
            return CHAIN_TIME
        if self._revocations.revoked_in_chain(found, found_ders) is not None:
            return ISSUER_REVOKED
        found_member, reg = _member(scope, found_ders)
        return (found_until, reg) if found_member else None


_UNSEEN: Any = object()


def _member(scope: _Scope, chain_ders: list[bytes]) -> tuple[bool, RegisteredCertificate | None]:
    """Is one of the scope's certificates in the chain, and its registration
    (the one closest to the leaf; a chain ends at the first trusted certificate,
    so that is usually its last one)."""
    members = scope.members
    last = chain_ders[-1]
    if last in members:
        return True, members[last]
    for der in chain_ders:
        if der in members:
            return True, members[der]
    return False, None


def _unregistered(api: str, scopes: Sequence[_Scope]) -> str:
    if not scopes:
        return f"{NOT_REGISTERED} for API {api!r}"
    if len(scopes) == 1 and scopes[0].truststore:
        return NOT_TRUSTED
    extra = " or by the truststore" if scopes[-1].truststore else ""
    return f"{NOT_REGISTERED} for API {api!r}, nor issued by a CA registered for it{extra}"


def _validity(cert: x509.Certificate) -> tuple[float, float]:
    return cert.not_valid_before_utc.timestamp(), cert.not_valid_after_utc.timestamp()


def _expiry(now: float, certs: Sequence[x509.Certificate]) -> float:
    """When a verdict that depends on when each presented certificate is valid
    must be recomputed: the first expiry, the moment a not-yet-valid one
    becomes valid, and an hour at most."""
    expires = now + CACHE_MAX_TTL
    for cert in certs:
        not_before, not_after = _validity(cert)
        expires = min(expires, not_after, not_before if not_before > now else expires)
    return expires


def _refused(
    leaf: x509.Certificate | None, ders: Sequence[bytes], reason: str, not_after: float = 0.0, valid_until: float = 0.0
) -> CertificateVerdict:
    first = ders[0] if ders and isinstance(ders[0], (bytes, bytearray)) else b""
    return CertificateVerdict(
        leaf=leaf,
        der=bytes(first),
        not_after=not_after,
        acceptances=EMPTY,
        reason=reason,
        valid_until=valid_until,
    )
