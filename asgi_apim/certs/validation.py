"""Is a client certificate accepted, and for which APIs: one path for the TLS
handshake's certificate and a trusted proxy's header.

Per API, a certificate passes when (1) the SHA-256 of its DER equals a
certificate registered for that API ("exact"), or, with chain validation on,
when pyca/cryptography's `x509.verification` builds a chain from it to the
truststore or a registered CA and (2) a CA registered for the API is in that
chain ("ca"), or (3) the API sets ``truststore_tier`` and the chain reaches
the truststore ("truststore", at that tier). Exact wins over CA, CA over
truststore; an API that registers nothing and sets no ``truststore_tier``
accepts no certificate. Expired, not yet valid and revoked certificates never
pass.

Traps of cryptography's client verifier that are handled here: a leaf without
an EKU extension is accepted by default (clientAuth is required through the
extension policy); the default policy demands a SAN, which many client
certificates lack, and an authority key identifier, which self-signed ones
lack (both relaxed); the validation time is fixed when the verifier is
built (rebuilt at least every minute); revocation is not checked at all
(`asgi_apim.certs.crl`). A `CertificateValidator` belongs to one truststore
generation; its verdict cache is bounded and no entry outlives the certificate.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import (
    ClientVerifier,
    Criticality,
    ExtensionPolicy,
    Policy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from asgi_apim.certs.crl import Revocations
from asgi_apim.certs.truststore import RegisteredCertificate, TrustMaterial

logger = logging.getLogger("asgi_apim.certs.validation")

MAX_CHAIN_DEPTH = 8
VERIFIER_MAX_AGE = 60.0
CACHE_MAX_TTL = 3600.0

UNPARSEABLE = "unparseable certificate"
EXPIRED = "expired"
NOT_YET_VALID = "not yet valid"
REVOKED = "revoked"
ISSUER_REVOKED = "an issuing CA certificate of its chain is revoked"
NOT_TRUSTED = "not issued by a trusted CA"
NO_CLIENT_AUTH = "lacks the clientAuth extended key usage"
CHAIN_TIME = "a CA certificate of its chain is expired or not yet valid"
CA_AS_LEAF = "is a CA certificate, not a client certificate"
NOT_REGISTERED = "certificate is not registered"


class _NotClientAuth(Exception):
    pass


def _require_client_auth(policy: Policy, cert: x509.Certificate, eku: x509.ExtendedKeyUsage) -> None:
    if ExtendedKeyUsageOID.CLIENT_AUTH not in eku:
        raise _NotClientAuth("the leaf lacks clientAuth")


_EE_POLICY = (
    ExtensionPolicy.webpki_defaults_ee()
    .may_be_present(x509.SubjectAlternativeName, Criticality.AGNOSTIC, None)
    .may_be_present(x509.AuthorityKeyIdentifier, Criticality.NON_CRITICAL, None)
    .require_present(x509.ExtendedKeyUsage, Criticality.AGNOSTIC, _require_client_auth)
)
_CA_POLICY = ExtensionPolicy.webpki_defaults_ca()
_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Acceptance:
    api: str
    alias: str | None
    tier: str
    how: str  # "exact" | "ca" | "truststore"


@dataclass(frozen=True, eq=False)
class CertificateVerdict:
    """What validation found. ``reason`` is None when the certificate is
    trusted at all (a valid chain or an exact registration); ``acceptances``
    says for which APIs; `reason_for` says why not for one API. ``subject``
    (RFC 4514) and ``spki_sha256`` (the throttling key: a renewed certificate
    with the same key keeps its count) are computed on first use.
    ``valid_until`` (epoch seconds) is when the verdict must be recomputed: the
    first expiry in the chains it rests on, the moment a not-yet-valid
    certificate becomes valid, an hour at most; 0 for a verdict not to keep."""

    leaf: x509.Certificate | None
    sha256: str
    not_after: float
    acceptances: Mapping[str, Acceptance]
    reason: str | None
    api_reasons: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), repr=False)
    valid_until: float = 0.0
    # the Principal built for each API, shared by every request of this (cached) verdict
    principals: dict[str, Any] = field(default_factory=dict, repr=False)

    @cached_property
    def subject(self) -> str:
        return self.leaf.subject.rfc4514_string() if self.leaf is not None else ""

    @cached_property
    def spki_sha256(self) -> str:
        if self.leaf is None:
            return ""
        spki = self.leaf.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        return hashlib.sha256(spki).hexdigest()

    def accepted_for(self, api: str) -> Acceptance | None:
        return self.acceptances.get(api)

    def reason_for(self, api: str) -> str:
        if api in self.acceptances:
            return "accepted"
        return self.api_reasons.get(api) or self.reason or f"certificate is not accepted for API {api!r}"


def load_pem_chain(data: bytes) -> list[x509.Certificate]:
    """Every certificate of a PEM bundle, in order (ValueError if there is none)."""
    return x509.load_pem_x509_certificates(data)


def _self_signed(cert: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(cert)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _describe(exc: VerificationError) -> str:
    message = str(exc)
    if "2.5.29.37" in message or "clientAuth" in message or "EKU" in message:
        return NO_CLIENT_AUTH
    if "not valid at validation time" in message:
        return CHAIN_TIME
    if "cA must not be asserted in an EE" in message:
        return CA_AS_LEAF
    if "candidates exhausted" in message:
        return NOT_TRUSTED
    detail = message.split(" (encountered processing")[0].removeprefix("validation failed: ")
    return f"invalid certificate chain: {detail}"


class _Verifier:
    """A client verifier over one store, rebuilt lazily so its time stays current."""

    def __init__(self, trusted: Sequence[x509.Certificate]) -> None:
        self.store = Store(list(trusted)) if trusted else None
        self._verifier: ClientVerifier | None = None
        self._built = 0.0

    def verify(self, leaf: x509.Certificate, intermediates: list[x509.Certificate], now: float) -> tuple[list[x509.Certificate] | None, str | None]:
        if self.store is None:
            return None, NOT_TRUSTED
        if self._verifier is None or abs(now - self._built) >= VERIFIER_MAX_AGE:
            self._verifier = (
                PolicyBuilder()
                .store(self.store)
                .time(dt.datetime.fromtimestamp(now, dt.timezone.utc))
                .max_chain_depth(MAX_CHAIN_DEPTH)
                .extension_policies(ca_policy=_CA_POLICY, ee_policy=_EE_POLICY)
                .build_client_verifier()
            )
            self._built = now
        try:
            return self._verifier.verify(leaf, intermediates).chain, None
        except VerificationError as exc:
            return None, _describe(exc)


class _Known:
    """The DER and validity period of each certificate a chain can hold: the
    truststore's and the registrations' (known up front) and the presented
    ones (from the request, computed at most once)."""

    __slots__ = ("ders", "times", "presented", "presented_times")

    def __init__(self, ders: dict[int, bytes], times: dict[int, tuple[float, float]], presented: dict[int, bytes]) -> None:
        self.ders = ders
        self.times = times
        self.presented = presented
        self.presented_times: dict[int, tuple[float, float]] = {}

    def der(self, cert: x509.Certificate) -> bytes:
        key = id(cert)
        der = self.ders.get(key) or self.presented.get(key)
        return der if der is not None else cert.public_bytes(Encoding.DER)

    def of(self, chain: Sequence[x509.Certificate]) -> list[bytes]:
        return [self.der(c) for c in chain]

    def validity(self, cert: x509.Certificate) -> tuple[float, float]:
        key = id(cert)
        times = self.times.get(key) or self.presented_times.get(key)
        if times is None:
            times = self.presented_times[key] = _validity(cert)
        return times

    def expiry(self, now: float, certs: Sequence[x509.Certificate]) -> float:
        """When a verdict on ``certs`` must be recomputed: the first expiry, the
        moment a not-yet-valid one becomes valid, and an hour at most."""
        expires = now + CACHE_MAX_TTL
        for cert in certs:
            not_before, not_after = self.validity(cert)
            expires = min(expires, not_after, not_before if not_before > now else expires)
        return expires

    def outlived(self, chain: Sequence[x509.Certificate], now: float) -> bool:
        """Has a certificate of a chain the verifier accepted expired since
        the verifier's time (fixed when it was built, up to a minute ago)?"""
        return any(self.validity(c)[1] < now for c in chain)


@dataclass(frozen=True)
class _Scope:
    """One way an API trusts, by DER: its registered CAs, or the truststore
    (for an API with ``truststore_tier``), whose certificates map to None."""

    members: Mapping[bytes, RegisteredCertificate | None]
    verifier: _Verifier
    truststore: bool = False


class CertificateValidator:
    """Built once per `TrustMaterial`; `validate` is the per-request call."""

    def __init__(self, material: TrustMaterial, *, chain_validation: bool = True, cache_size: int = 10_000) -> None:
        self.material = material
        self.generation = material.generation
        self.chain_validation = chain_validation
        self.cache_size = max(1, cache_size)
        self._exact: dict[bytes, dict[str, Acceptance]] = {}
        self._accept: dict[int, Acceptance] = {}
        by_api: dict[str, dict[bytes, RegisteredCertificate]] = {}
        ca_certs: dict[bytes, x509.Certificate] = {}
        self._der: dict[int, bytes] = {id(c): c.public_bytes(Encoding.DER) for c in material.anchors}
        for reg in material.registrations:
            der = self._der[id(reg.cert)] = reg.cert.public_bytes(Encoding.DER)
            self._exact.setdefault(reg.sha256, {}).setdefault(reg.api, Acceptance(reg.api, reg.alias, reg.tier, "exact"))
            self._accept.setdefault(id(reg), Acceptance(reg.api, reg.alias, reg.tier, "ca"))
            cas = by_api.setdefault(reg.api, {})
            if reg.is_ca:
                cas.setdefault(der, reg)
                ca_certs.setdefault(der, reg.cert)
        anchors = {self._der[id(c)]: c for c in material.anchors}
        self._verifier = _Verifier(tuple({**anchors, **ca_certs}.values()))
        self._intermediates = [c for c in anchors.values() if not _self_signed(c)]
        self._pool = self._intermediates + [c for d, c in ca_certs.items() if d not in anchors and not _self_signed(c)]
        truststore = _Scope(dict.fromkeys(anchors), _Verifier(tuple(anchors.values())), truststore=True)
        tiers = material.truststore_tiers
        self._scopes: dict[str, tuple[_Scope, ...]] = {}  # tried in order: registered CAs, then the truststore
        self._open: dict[str, Acceptance] = {}
        for api in material.apis:
            cas = by_api.get(api)
            scopes = [_Scope(cas, _Verifier(tuple(ca_certs[d] for d in cas)))] if cas else []
            if api in tiers:
                scopes.append(truststore)
                self._open[api] = Acceptance(api, None, tiers[api], "truststore")
            self._scopes[api] = tuple(scopes)
        self._validity = {id(c): _validity(c) for c in (*anchors.values(), *ca_certs.values())}
        self._revocations = Revocations(material.crls, (*anchors.values(), *ca_certs.values()))
        self._cache: OrderedDict[Hashable, tuple[CertificateVerdict, float]] = OrderedDict()

    def validate(self, ders: tuple[bytes, ...], cache_key: bytes | None = None) -> CertificateVerdict:
        """The verdict on a chain (DER, leaf first); cached by ``cache_key``
        (the raw header bytes, say) or by the DERs themselves."""
        key: Hashable = tuple(ders) if cache_key is None else cache_key
        now = time.time()
        hit = self._cache.get(key)
        if hit is not None:
            if hit[1] > now:
                self._cache.move_to_end(key)
                return hit[0]
            self._cache.pop(key, None)
        try:
            verdict = self._validate(tuple(ders), now)
        except Exception:  # never let a certificate turn into a 500
            logger.exception("certificate validation failed unexpectedly")
            return _refused(None, ders, "certificate could not be validated")
        if verdict.valid_until > now:
            self._cache[key] = (verdict, verdict.valid_until)
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return verdict

    def _validate(self, ders: tuple[bytes, ...], now: float) -> CertificateVerdict:
        if not ders:
            return _refused(None, ders, "no certificate presented", valid_until=now + CACHE_MAX_TTL)
        try:
            certs = [x509.load_der_x509_certificate(d) for d in ders]
            leaf = certs[0]
            not_before, not_after = _validity(leaf)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            return _refused(None, ders, UNPARSEABLE, valid_until=now + CACHE_MAX_TTL)
        if now < not_before:
            return _refused(leaf, ders, NOT_YET_VALID, not_after, min(not_before, now + CACHE_MAX_TTL))
        if now > not_after:
            return _refused(leaf, ders, EXPIRED, not_after, now)  # not kept: never outlive not_after
        presented = certs[1:]
        known = _Known(self._der, self._validity, {id(c): d for c, d in zip(certs, ders)})
        known.presented_times[id(leaf)] = (not_before, not_after)
        sha256 = hashlib.sha256(ders[0]).digest()
        exact = self._exact.get(sha256)
        acceptances: dict[str, Acceptance] = dict(exact) if exact else {}
        chain: list[x509.Certificate] | None = None
        chain_reason: str | None = None
        if self.chain_validation:
            chain, chain_reason = self._verifier.verify(leaf, presented + self._intermediates, now)
            if chain is not None and known.outlived(chain, now):
                chain, chain_reason = None, CHAIN_TIME
        if chain is not None:
            revoked = self._revocations.revoked_in_chain(chain, known.of(chain))
            if revoked is not None:
                reason = REVOKED if revoked == 0 else ISSUER_REVOKED
                return _refused(leaf, ders, reason, not_after, known.expiry(now, [*certs, *chain]))
        elif exact and self._revocations.revoked_without_chain(leaf, presented):
            return _refused(leaf, ders, REVOKED, not_after, known.expiry(now, certs))
        reasons: dict[str, str] = {}
        chains = [chain] if chain is not None else []
        if chain is not None:
            within: dict[int, tuple[list[x509.Certificate], RegisteredCertificate | None] | str | None] = {}
            for api, scopes in self._scopes.items():
                if api in acceptances:
                    continue
                why: str | None = None
                for scope in scopes:
                    if id(scope) not in within:
                        within[id(scope)] = self._within(scope, leaf, presented, chain, known, now)
                    outcome = within[id(scope)]
                    if outcome is not None and not isinstance(outcome, str):
                        found, reg = outcome
                        chains.append(found)
                        acceptances[api] = self._open[api] if reg is None else self._accept[id(reg)]
                        break
                    why = why or outcome
                else:
                    reasons[api] = why or _unregistered(api, scopes)
        else:
            for api in self.material.apis:
                if api not in acceptances:
                    reasons[api] = chain_reason or f"{NOT_REGISTERED} for API {api!r} (chain validation is disabled)"
        reason = None if (chain is not None or acceptances) else (chain_reason or f"{NOT_REGISTERED} (chain validation is disabled)")
        verdict = CertificateVerdict(
            leaf=leaf,
            sha256=sha256.hex(),
            not_after=not_after,
            acceptances=MappingProxyType(acceptances),
            reason=reason,
            api_reasons=MappingProxyType(reasons) if reasons else _EMPTY,
            valid_until=known.expiry(now, [*certs, *(c for found in chains for c in found)]),
        )
        return verdict

    def _within(
        self,
        scope: _Scope,
        leaf: x509.Certificate,
        presented: list[x509.Certificate],
        chain: list[x509.Certificate],
        known: _Known,
        now: float,
    ) -> tuple[list[x509.Certificate], RegisteredCertificate | None] | str | None:
        """A validated chain from the leaf to one of ``scope``'s certificates and
        the registration met on it, or why there is none. The chain already
        found ends at the first trusted certificate on the way up, which may
        belong to another API: then one is built for this scope."""
        found_member, reg = _member(scope, chain, known)
        if found_member:
            return chain, reg
        found, _ = scope.verifier.verify(leaf, presented + self._pool, now)
        if found is None:
            return None
        if known.outlived(found, now):
            return CHAIN_TIME
        if self._revocations.revoked_in_chain(found, known.of(found)) is not None:
            return ISSUER_REVOKED
        found_member, reg = _member(scope, found, known)
        return (found, reg) if found_member else None


def _member(scope: _Scope, chain: list[x509.Certificate], known: _Known) -> tuple[bool, RegisteredCertificate | None]:
    """Is one of the scope's certificates in the chain, and its registration
    (the one closest to the leaf; a chain ends at the first trusted certificate,
    so that is usually its last one)."""
    members = scope.members
    for cert in (chain[-1], *chain[:-1]):
        der = known.der(cert)
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


def _refused(
    leaf: x509.Certificate | None, ders: Sequence[bytes], reason: str, not_after: float = 0.0, valid_until: float = 0.0
) -> CertificateVerdict:
    first = ders[0] if ders and isinstance(ders[0], (bytes, bytearray)) else b""
    return CertificateVerdict(
        leaf=leaf,
        sha256=hashlib.sha256(first).hexdigest() if first else "",
        not_after=not_after,
        acceptances=_EMPTY,
        reason=reason,
        valid_until=valid_until,
    )
