"""Revocation: the loaded CRLs, applied to a validated chain or to one certificate.

pyca/cryptography's verifier does no revocation checking, so it is done here.
A CRL counts for a certificate only when its issuer name is the certificate's
issuer name AND its signature verifies under the issuer's public key; a CRL
signed by any other key is ignored, so nobody can revoke (or un-revoke) a
certificate with a CRL of their own making.

Issuers are looked up by their DER: hashing a `x509.Certificate` or building its
`x509.Name` costs more than the rest of the check, and the DER is at hand.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.serialization import Encoding

_MEMO_SIZE = 4096


def _signed_by(crl: x509.CertificateRevocationList, issuer: x509.Certificate) -> bool:
    try:
        return crl.issuer == issuer.subject and crl.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]  # X25519/X448: TypeError, below
    except (TypeError, ValueError, UnsupportedAlgorithm):
        return False


class Revocations:
    """Built once per truststore generation from its CRLs and the CA
    certificates it knows. The CRLs become one set of revoked serial numbers
    per issuer, filed under the DER of the issuer whose key signed them; issuers met later
    (intermediates a client presents) are matched once and memoised, bounded."""

    def __init__(self, crls: Sequence[x509.CertificateRevocationList], known: Iterable[x509.Certificate] = ()) -> None:
        self._crls = tuple(crls)
        self._serials = tuple(frozenset(revoked.serial_number for revoked in crl) for crl in self._crls)
        self._by_issuer: dict[bytes, frozenset[int]] = {}
        self._known_signed: set[int] = set()
        self._ca_revoked: dict[tuple[bytes, bytes], bool] = {}
        if self._crls:
            for cert in dict.fromkeys(known):
                indexes = self._signed_indexes(cert)
                self._known_signed.update(indexes)
                self._by_issuer[cert.public_bytes(Encoding.DER)] = self._union(indexes)
        self._known = len(self._by_issuer)

    def __bool__(self) -> bool:
        return bool(self._crls)

    def _signed_indexes(self, issuer: x509.Certificate) -> list[int]:
        return [i for i, crl in enumerate(self._crls) if _signed_by(crl, issuer)]

    def _union(self, indexes: Iterable[int]) -> frozenset[int]:
        return frozenset().union(*(self._serials[i] for i in indexes))

    def _revoked_by(self, issuer: x509.Certificate, issuer_der: bytes) -> frozenset[int]:
        serials = self._by_issuer.get(issuer_der)
        if serials is None:
            if len(self._by_issuer) >= self._known + _MEMO_SIZE:
                self._by_issuer = dict(list(self._by_issuer.items())[: self._known])
            serials = self._by_issuer[issuer_der] = self._union(self._signed_indexes(issuer))
        return serials

    def revoked_in_chain(self, chain: Sequence[x509.Certificate], ders: Sequence[bytes]) -> int | None:
        """The position of the first revoked certificate of a validated chain
        (leaf first, trust anchor last; ``ders`` are their DERs), or None. The
        answer for each CA certificate under its issuer is memoised (clients
        keep presenting the same intermediates), bounded."""
        if not self._crls or len(chain) < 2:
            return None
        revoked = self._by_issuer.get(ders[1])
        if revoked is None:
            revoked = self._revoked_by(chain[1], ders[1])
        if revoked and chain[0].serial_number in revoked:
            return 0
        memo = self._ca_revoked
        for position in range(1, len(chain) - 1):
            key = (ders[position], ders[position + 1])
            hit = memo.get(key)
            if hit is None:
                if len(memo) >= _MEMO_SIZE:
                    memo.clear()
                revoked = self._revoked_by(chain[position + 1], ders[position + 1])
                hit = memo[key] = bool(revoked) and chain[position].serial_number in revoked
            if hit:
                return position
        return None

    def revoked_without_chain(self, cert: x509.Certificate, candidates: Sequence[x509.Certificate] = ()) -> bool:
        """For a certificate accepted without a validated chain (an exact
        registration): is it on a CRL of its issuer's name signed by a known
        CA, by one of ``candidates`` (the presented chain) or by itself?"""
        if not self._crls:
            return False
        serial, issuer = cert.serial_number, cert.issuer
        for index, crl in enumerate(self._crls):
            if serial not in self._serials[index] or crl.issuer != issuer:
                continue
            if index in self._known_signed or any(_signed_by(crl, c) for c in (cert, *candidates)):
                return True
        return False
