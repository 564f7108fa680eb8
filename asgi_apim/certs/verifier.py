"""pyca/cryptography's client verifier, set up for client certificates.

Traps of `x509.verification` handled here: a leaf without an EKU extension is
accepted by default (clientAuth is required through the extension policy, and
a leaf asserting only anyExtendedKeyUsage does not have it); the default
policy demands a SAN, which many client certificates lack, and an authority
key identifier, which self-signed ones lack (both relaxed); the validation
time is fixed when the verifier is built (`ChainVerifier` rebuilds it at least
every minute, and never with a time ahead of the clock; a chain refused as not
yet valid at that time is asked again at the clock's, for a certificate issued
within the minute, once per second begun). Revocation is not
checked by cryptography at all (`asgi_apim.certs.crl`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
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

MAX_CHAIN_DEPTH = 8
VERIFIER_MAX_AGE = 60.0

NOT_TRUSTED = "not issued by a trusted CA"
NO_CLIENT_AUTH = "lacks the clientAuth extended key usage"
CHAIN_TIME = "a CA certificate of its chain is expired or not yet valid"
CA_AS_LEAF = "is a CA certificate, not a client certificate"


class _NotClientAuth(Exception):
    pass


def _require_client_auth(policy: Policy, cert: x509.Certificate, eku: x509.ExtendedKeyUsage) -> None:
    if ExtendedKeyUsageOID.CLIENT_AUTH not in eku:
        raise _NotClientAuth("the leaf lacks clientAuth")


EE_POLICY = (
    ExtensionPolicy.webpki_defaults_ee()
    .may_be_present(x509.SubjectAlternativeName, Criticality.AGNOSTIC, None)
    .may_be_present(x509.AuthorityKeyIdentifier, Criticality.NON_CRITICAL, None)
    .require_present(x509.ExtendedKeyUsage, Criticality.AGNOSTIC, _require_client_auth)
)


def _ca_key_usage(policy: Policy, cert: x509.Certificate, usage: x509.KeyUsage | None) -> None:
    if usage is not None and not usage.key_cert_sign:
        raise ValueError("a CA certificate's keyUsage lacks keyCertSign")


# The Web PKI's CA defaults demand a keyUsage extension, which the CAs `openssl req -x509`
# makes (OpenSSL's v3_ca section) do not carry: when present it must still allow keyCertSign.
CA_POLICY = ExtensionPolicy.webpki_defaults_ca().may_be_present(x509.KeyUsage, Criticality.AGNOSTIC, _ca_key_usage)


def build_client_verifier(store: Store, when: dt.datetime) -> ClientVerifier:
    """cryptography's client verifier with this module's policies, at ``when``."""
    return (
        PolicyBuilder()
        .store(store)
        .time(when)
        .max_chain_depth(MAX_CHAIN_DEPTH)
        .extension_policies(ca_policy=CA_POLICY, ee_policy=EE_POLICY)
        .build_client_verifier()
    )


def self_signed(cert: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(cert)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def describe(exc: VerificationError) -> str:
    """A short reason for a verification failure, without the certificate dump."""
    message = str(exc)
    if "2.5.29.37" in message or "clientAuth" in message or "EKU" in message:
        return NO_CLIENT_AUTH
    if "not valid at validation time" in message:
        return CHAIN_TIME
    if "cA must not be asserted in an EE" in message:
        return CA_AS_LEAF
    if "candidates exhausted" in message:
        inner = message.split("candidates exhausted:", 1)[-1].split(" (encountered processing")[0].strip()
        if inner.startswith(("invalid extension", "signature algorithm", "invalid key", "basicConstraints")):
            return f"{NOT_TRUSTED}: a CA on the way has {inner}"  # found, but unusable: say why
        return NOT_TRUSTED
    detail = message.split(" (encountered processing")[0].removeprefix("validation failed: ")
    return f"invalid certificate chain: {detail}"


class ChainVerifier:
    """A client verifier over one store, rebuilt lazily so its time stays current."""

    def __init__(self, trusted: Sequence[x509.Certificate]) -> None:
        self.store = Store(list(trusted)) if trusted else None
        self._verifier: ClientVerifier | None = None
        self._built = 0.0

    def verify(
        self, leaf: x509.Certificate, intermediates: list[x509.Certificate], now: float
    ) -> tuple[list[x509.Certificate] | None, str | None]:
        """The validated chain (leaf first, the trusted certificate last), or why there is none."""
        store = self.store
        if store is None:
            return None, NOT_TRUSTED
        verifier = self._verifier
        if verifier is None or not 0.0 <= now - self._built < VERIFIER_MAX_AGE:
            verifier = self._build(store, now)
        try:
            return verifier.verify(leaf, intermediates).chain, None
        except VerificationError as exc:
            reason = describe(exc)
        if reason == CHAIN_TIME and int(now) > int(self._built):
            # valid since the verifier's time (a certificate issued within the minute): asked again
            # at the clock's time, once a whole second has begun since (validity is in whole seconds)
            verifier = self._build(store, now)
            try:
                return verifier.verify(leaf, intermediates).chain, None
            except VerificationError as exc:
                reason = describe(exc)
        return None, reason

    def _build(self, store: Store, now: float) -> ClientVerifier:
        verifier = self._verifier = build_client_verifier(store, dt.datetime.fromtimestamp(now, dt.UTC))
        self._built = now
        return verifier
