"""The chain policies: what the Web PKI defaults would refuse and client certificates need."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from asgi_apim.certs.pki import Issued, issue_client
from asgi_apim.certs.verifier import CHAIN_TIME, NO_CLIENT_AUTH, NOT_TRUSTED, ChainVerifier

NOW = dt.datetime.now(dt.UTC)


def ca_with(key_usage: x509.KeyUsage | None) -> Issued:
    """A root CA as ``openssl req -x509`` makes it (no keyUsage), or with the given keyUsage."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "policy CA")])
    b = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(minutes=5))
        .not_valid_after(NOW + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if key_usage is not None:
        b = b.add_extension(key_usage, critical=True)
    return Issued(b.sign(key, hashes.SHA256()), key)


def usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def verify(ca: Issued, leaf: Issued) -> tuple[object, str | None]:
    return ChainVerifier([ca.cert]).verify(leaf.cert, [], NOW.timestamp())


@pytest.mark.parametrize(
    "key_usage", [None, usage(cert_sign=True)], ids=["no keyUsage (openssl req -x509)", "keyCertSign"]
)
def test_ca_without_or_with_a_proper_key_usage_issues_clients(key_usage: x509.KeyUsage | None) -> None:
    ca = ca_with(key_usage)
    chain, reason = verify(ca, issue_client(ca, "client"))
    assert reason is None and chain is not None


def test_ca_whose_key_usage_forbids_signing_certificates_is_refused() -> None:
    ca = ca_with(usage(cert_sign=False))
    chain, reason = verify(ca, issue_client(ca, "client"))
    assert chain is None and reason is not None and reason.startswith(NOT_TRUSTED)


def test_client_auth_is_required_and_san_is_not() -> None:
    ca = ca_with(None)
    assert verify(ca, issue_client(ca, "no san", san=None))[1] is None
    chain, reason = verify(ca, issue_client(ca, "server only", eku=[x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]))
    assert chain is None and reason == NO_CLIENT_AUTH


def test_a_certificate_issued_since_the_verifier_was_built_is_verified_at_the_clock_s_time() -> None:
    ca = ca_with(None)
    verifier = ChainVerifier([ca.cert])
    t0 = NOW.timestamp()
    assert verifier.verify(issue_client(ca, "earlier").cert, [], t0)[0] is not None  # built at t0
    fresh = custom_leaf(ca, not_before=NOW + dt.timedelta(seconds=20))  # issued after t0
    chain, reason = verifier.verify(fresh.cert, [], t0 + 30)  # within the verifier's minute
    assert chain is not None and reason is None
    still_early = custom_leaf(ca, not_before=NOW + dt.timedelta(seconds=120))
    assert verifier.verify(still_early.cert, [], t0 + 31)[1] == CHAIN_TIME  # not valid at the clock's time either


def test_a_certificate_valid_from_the_next_second_is_verified_once_that_second_begins() -> None:
    ca = ca_with(None)
    verifier = ChainVerifier([ca.cert])
    second = float(int(NOW.timestamp()) + 100)
    verifier.verify(issue_client(ca, "earlier").cert, [], second - 0.18)  # built at s - 0.18
    fresh = custom_leaf(ca, not_before=dt.datetime.fromtimestamp(second, dt.UTC))
    chain, reason = verifier.verify(fresh.cert, [], second + 0.05)  # 0.23 s later, in the next second
    assert chain is not None and reason is None


def custom_leaf(ca: Issued, *, not_before: dt.datetime) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fresh")])
    b = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(NOW + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False)  # type: ignore[arg-type]
    )
    return Issued(b.sign(ca.key, hashes.SHA256()), key)  # type: ignore[arg-type]
