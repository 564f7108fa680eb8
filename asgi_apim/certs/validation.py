"""Is a client certificate accepted, and for which APIs: one path for the TLS
handshake's certificate and a trusted proxy's header.

Per API, a certificate passes when (1) the SHA-256 of its DER equals a
certificate registered for that API ("exact"), or, with chain validation on,
when pyca/cryptography's `x509.verification` builds a chain from it to the
truststore or a registered CA and (2) a CA registered for the API is in that
chain ("ca"), or (3) the API registers nothing and the chain reaches the
truststore ("truststore"). Exact wins over CA. Expired, not yet valid and
revoked certificates never pass.

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
from types import MappingProxyType

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


@dataclass(frozen=True, slots=True)
class Acceptance:
    api: str
    alias: str | None
    tier: str
    how: str  # "exact" | "ca" | "truststore"


@dataclass(frozen=True)
class CertificateVerdict:
    """What validation found. ``reason`` is None when the certificate is
    trusted at all (a valid chain or an exact registration); ``acceptances``
    says for which APIs; `reason_for` says why not for one API."""

    leaf: x509.Certificate | None
    subject: str
    sha256: str
    spki_sha256: str
    not_after: float
    acceptances: Mapping[str, Acceptance]
    reason: str | None
    api_reasons: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), repr=False)

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


def _epoch(moment: dt.datetime) -> float:
    return moment.timestamp()


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


@dataclass(frozen=True)
class _Scope:
    """What one API trusts: its registered CAs, or (with no registrations) the
    truststore, whose certificates map to None."""

    members: Mapping[x509.Certificate, RegisteredCertificate | None]
    verifier: _Verifier
    truststore: bool = False


class CertificateValidator:
    """Built once per `TrustMaterial`; `validate` is the per-request call."""

    def __init__(self, material: TrustMaterial, *, chain_validation: bool = True, cache_size: int = 10_000) -> None:
        self.material = material
        self.generation = material.generation
        self.chain_validation = chain_validation
        self.cache_size = max(1, cache_size)
        self._exact: dict[bytes, list[RegisteredCertificate]] = {}
        by_api: dict[str, dict[x509.Certificate, RegisteredCertificate]] = {}
        for reg in material.registrations:
            self._exact.setdefault(reg.sha256, []).append(reg)
            cas = by_api.setdefault(reg.api, {})
            if reg.is_ca:
                cas.setdefault(reg.cert, reg)
        ca_certs = tuple(dict.fromkeys(c for cas in by_api.values() for c in cas))
        anchors = frozenset(material.anchors)
        self._verifier = _Verifier(tuple(dict.fromkeys(material.anchors + ca_certs)))
        self._intermediates = [c for c in material.anchors if not _self_signed(c)]
        self._pool = self._intermediates + [c for c in ca_certs if c not in anchors and not _self_signed(c)]
        truststore = _Scope(dict.fromkeys(material.anchors), _Verifier(material.anchors), truststore=True)
        self._scopes: dict[str, _Scope | None] = {}
        for api in material.apis:
            cas = by_api.get(api)
            self._scopes[api] = truststore if cas is None else (_Scope(cas, _Verifier(tuple(cas))) if cas else None)
        self._revocations = Revocations(material.crls, material.anchors + ca_certs)
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
            verdict, expires = self._validate(tuple(ders), now)
        except Exception:  # never let a certificate turn into a 500
            logger.exception("certificate validation failed unexpectedly")
            return _refused(None, b"", ders, "certificate could not be validated")
        if expires > now:
            self._cache[key] = (verdict, expires)
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return verdict

    def _validate(self, ders: tuple[bytes, ...], now: float) -> tuple[CertificateVerdict, float]:
        if not ders:
            return _refused(None, b"", ders, "no certificate presented"), now + CACHE_MAX_TTL
        try:
            certs = [x509.load_der_x509_certificate(d) for d in ders]
            leaf = certs[0]
            spki = leaf.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
            not_before, not_after = _epoch(leaf.not_valid_before_utc), _epoch(leaf.not_valid_after_utc)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            return _refused(None, b"", ders, UNPARSEABLE), now + CACHE_MAX_TTL
        if now < not_before:
            return _refused(leaf, spki, ders, NOT_YET_VALID, not_after), min(not_before, now + CACHE_MAX_TTL)
        if now > not_after:
            return _refused(leaf, spki, ders, EXPIRED, not_after), now  # not cached: never outlive not_after
        presented = certs[1:]
        sha256 = hashlib.sha256(ders[0]).digest()
        exact = self._exact.get(sha256, ())
        acceptances: dict[str, Acceptance] = {}
        for reg in exact:
            acceptances.setdefault(reg.api, Acceptance(reg.api, reg.alias, reg.tier, "exact"))
        chain: list[x509.Certificate] | None = None
        chain_reason: str | None = None
        if self.chain_validation:
            chain, chain_reason = self._verifier.verify(leaf, presented + self._intermediates, now)
        if chain is not None:
            revoked = self._revocations.revoked_in_chain(chain)
            if revoked is not None:
                return _refused(leaf, spki, ders, REVOKED if revoked == 0 else ISSUER_REVOKED, not_after), _expiry(now, certs, chain)
        elif exact and self._revocations.revoked_without_chain(leaf, presented):
            return _refused(leaf, spki, ders, REVOKED, not_after), _expiry(now, certs, ())
        reasons: dict[str, str] = {}
        chains = [chain] if chain is not None else []
        if chain is not None:
            within: dict[int, tuple[list[x509.Certificate], RegisteredCertificate | None] | str | None] = {}
            for api, scope in self._scopes.items():
                if api in acceptances:
                    continue
                if scope is None:
                    reasons[api] = f"{NOT_REGISTERED} for API {api!r}"
                    continue
                if id(scope) not in within:
                    within[id(scope)] = self._within(scope, leaf, presented, chain, now)
                outcome = within[id(scope)]
                if outcome is None or isinstance(outcome, str):
                    default = NOT_TRUSTED if scope.truststore else f"{NOT_REGISTERED} for API {api!r}, nor issued by a CA registered for it"
                    reasons[api] = outcome or default
                    continue
                found, reg = outcome
                chains.append(found)
                acceptances[api] = Acceptance(api, None, "Unlimited", "truststore") if reg is None else Acceptance(api, reg.alias, reg.tier, "ca")
        else:
            for api in self.material.apis:
                if api not in acceptances:
                    reasons[api] = chain_reason or f"{NOT_REGISTERED} for API {api!r} (chain validation is disabled)"
        reason = None if (chain is not None or acceptances) else (chain_reason or f"{NOT_REGISTERED} (chain validation is disabled)")
        verdict = CertificateVerdict(
            leaf=leaf,
            subject=leaf.subject.rfc4514_string(),
            sha256=sha256.hex(),
            spki_sha256=hashlib.sha256(spki).hexdigest(),
            not_after=not_after,
            acceptances=MappingProxyType(acceptances),
            reason=reason,
            api_reasons=MappingProxyType(reasons),
        )
        return verdict, _expiry(now, certs, [c for found in chains for c in found])

    def _within(
        self, scope: _Scope, leaf: x509.Certificate, presented: list[x509.Certificate], chain: list[x509.Certificate], now: float
    ) -> tuple[list[x509.Certificate], RegisteredCertificate | None] | str | None:
        """A validated chain from the leaf to one of ``scope``'s certificates and
        the registration met on it, or why there is none. The chain already
        found ends at the first trusted certificate on the way up, which may
        belong to another API: then one is built for this scope."""
        if not any(c in scope.members for c in chain):
            found, _ = scope.verifier.verify(leaf, presented + self._pool, now)
            if found is None:
                return None
            if self._revocations.revoked_in_chain(found) is not None:
                return ISSUER_REVOKED
            chain = found
        for cert in chain:
            if cert in scope.members:
                return chain, scope.members[cert]
        return None


def _expiry(now: float, certs: Sequence[x509.Certificate], chain: Sequence[x509.Certificate]) -> float:
    """When a verdict must be recomputed: the first expiry in the chain, the
    moment a not-yet-valid certificate becomes valid, and an hour at most."""
    expires = now + CACHE_MAX_TTL
    for cert in (*certs, *chain):
        expires = min(expires, _epoch(cert.not_valid_after_utc))
        not_before = _epoch(cert.not_valid_before_utc)
        if not_before > now:
            expires = min(expires, not_before)
    return expires


def _refused(leaf: x509.Certificate | None, spki: bytes, ders: Sequence[bytes], reason: str, not_after: float = 0.0) -> CertificateVerdict:
    first = ders[0] if ders and isinstance(ders[0], (bytes, bytearray)) else b""
    return CertificateVerdict(
        leaf=leaf,
        subject=leaf.subject.rfc4514_string() if leaf is not None else "",
        sha256=hashlib.sha256(first).hexdigest() if first else "",
        spki_sha256=hashlib.sha256(spki).hexdigest() if spki else "",
        not_after=not_after,
        acceptances=MappingProxyType({}),
        reason=reason,
    )
