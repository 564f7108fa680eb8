"""Revocation: the loaded CRLs, applied to a validated chain or to one certificate.

pyca/cryptography's verifier does no revocation checking, so it is done here.
A CRL counts for a certificate only when its issuer name is the certificate's
issuer name AND its signature verifies under the issuer's public key; a CRL
signed by any other key is ignored, so nobody can revoke (or un-revoke) a
certificate with a CRL of their own making.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm

_MEMO_SIZE = 4096


def _signed_by(crl: x509.CertificateRevocationList, issuer: x509.Certificate) -> bool:
    try:
        return crl.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]
    except (TypeError, ValueError, UnsupportedAlgorithm):
        return False


class Revocations:
    """Built once per truststore generation from its CRLs and the CA certificates
    it knows; signature checks against other issuers are memoised, bounded."""

    def __init__(self, crls: Sequence[x509.CertificateRevocationList], known: Iterable[x509.Certificate] = ()) -> None:
        self._by_issuer: dict[x509.Name, list[tuple[int, x509.CertificateRevocationList]]] = {}
        for index, crl in enumerate(crls):
            self._by_issuer.setdefault(crl.issuer, []).append((index, crl))
        self._memo: dict[tuple[int, x509.Certificate], bool] = {}
        self._known_signed: set[int] = set()
        for cert in dict.fromkeys(known):
            for index, crl in self._by_issuer.get(cert.subject, ()):
                if self._check(index, crl, cert):
                    self._known_signed.add(index)

    def __bool__(self) -> bool:
        return bool(self._by_issuer)

    def _check(self, index: int, crl: x509.CertificateRevocationList, issuer: x509.Certificate) -> bool:
        key = (index, issuer)
        ok = self._memo.get(key)
        if ok is None:
            if len(self._memo) >= _MEMO_SIZE:
                self._memo.clear()
            ok = self._memo[key] = _signed_by(crl, issuer)
        return ok

    def revoked_by(self, cert: x509.Certificate, issuer: x509.Certificate) -> bool:
        """Is ``cert`` on a CRL that ``issuer`` signed?"""
        for index, crl in self._by_issuer.get(cert.issuer, ()):
            if crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None and self._check(index, crl, issuer):
                return True
        return False

    def revoked_in_chain(self, chain: Sequence[x509.Certificate]) -> int | None:
        """The position of the first revoked certificate of a validated chain
        (leaf first, trust anchor last), or None."""
        if not self._by_issuer:
            return None
        for position in range(len(chain) - 1):
            if self.revoked_by(chain[position], chain[position + 1]):
                return position
        return None

    def revoked_without_chain(self, cert: x509.Certificate, candidates: Sequence[x509.Certificate] = ()) -> bool:
        """For a certificate accepted without a validated chain (an exact
        registration): is it on a CRL signed by a known CA, by one of
        ``candidates`` (the presented chain) or by the certificate itself?"""
        for index, crl in self._by_issuer.get(cert.issuer, ()):
            if crl.get_revoked_certificate_by_serial_number(cert.serial_number) is None:
                continue
            if index in self._known_signed or any(self._check(index, crl, c) for c in (cert, *candidates)):
                return True
        return False
