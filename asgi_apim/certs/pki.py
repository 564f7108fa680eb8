"""A development PKI: a CA, a server certificate and client certificates.

``asgi-apim pki init DIR`` writes ``ca.pem``, ``ca.key``, ``server.pem``,
``server.key`` (localhost, 127.0.0.1, ::1) and ``client.pem``, ``client.key``
(clientAuth). The same builders make the certificates of the test suite.
Keys are EC P-256 unless asked otherwise. Never use these in production.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


@dataclass(frozen=True)
class Issued:
    cert: x509.Certificate
    key: PrivateKey

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    def write(self, cert_path: str | os.PathLike[str], key_path: str | os.PathLike[str] | None = None) -> None:
        Path(cert_path).write_bytes(self.cert_pem())
        if key_path is not None:
            _write_private(Path(key_path), self.key_pem())


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def new_key(kind: str = "ec") -> PrivateKey:
    if kind == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(f"unknown key kind {kind!r}")


def _name(common_name: str, org: str = "asgi-apim dev") -> x509.Name:
    return x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org), x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _sign_alg(key: PrivateKey) -> hashes.SHA256 | None:
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: CertificatePublicKeyTypes,
    not_before: dt.datetime,
    not_after: dt.datetime,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def make_ca(
    common_name: str = "asgi-apim dev CA",
    *,
    issuer: Issued | None = None,
    days: int = 365,
    key_kind: str = "ec",
    path_length: int | None = None,
) -> Issued:
    """A self-signed root CA, or an intermediate CA when ``issuer`` is given."""
    key = new_key(key_kind)
    now = _now()
    subject = _name(common_name)
    b = _builder(
        subject,
        issuer.cert.subject if issuer else subject,
        key.public_key(),
        now - dt.timedelta(minutes=5),
        now + dt.timedelta(days=days),
    )
    b = b.add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
    b = b.add_extension(
        x509.KeyUsage(
            digital_signature=True,
            content_commitment=False,
            key_encipherment=False,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=True,
            crl_sign=True,
            encipher_only=False,
            decipher_only=False,
        ),
        critical=True,
    )
    signer = issuer.key if issuer else key
    if issuer is not None:
        b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), critical=False)
    return Issued(b.sign(signer, _sign_alg(signer)), key)


def _leaf(
    ca: Issued | None,
    common_name: str,
    *,
    eku: Sequence[x509.ObjectIdentifier] | None,
    san: Sequence[str] | None,
    days: int,
    not_before: dt.datetime | None,
    not_after: dt.datetime | None,
    key_kind: str,
) -> Issued:
    key = new_key(key_kind)
    now = _now()
    subject = _name(common_name)
    nb = not_before or now - dt.timedelta(minutes=5)
    na = not_after or now + dt.timedelta(days=days)
    b = _builder(subject, ca.cert.subject if ca else subject, key.public_key(), nb, na)
    b = b.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    b = b.add_extension(
        x509.KeyUsage(
            digital_signature=True,
            content_commitment=False,
            key_encipherment=key_kind == "rsa",
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=False,
            crl_sign=False,
            encipher_only=False,
            decipher_only=False,
        ),
        critical=True,
    )
    if eku:
        b = b.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
    if san:
        names: list[x509.GeneralName] = []
        for s in san:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(s)))
            except ValueError:
                names.append(x509.DNSName(s))
        b = b.add_extension(x509.SubjectAlternativeName(names), critical=False)
    signer = ca.key if ca else key
    if ca is not None:
        b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False)
    return Issued(b.sign(signer, _sign_alg(signer)), key)


def issue_client(
    ca: Issued | None,
    common_name: str = "client",
    *,
    days: int = 365,
    eku: Sequence[x509.ObjectIdentifier] | None = (ExtendedKeyUsageOID.CLIENT_AUTH,),
    san: Sequence[str] | None = None,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    key_kind: str = "ec",
) -> Issued:
    """A client certificate issued by ``ca`` (self-signed when ``ca`` is None).
    ``eku=None`` leaves the EKU extension out; ``san=None`` leaves SAN out."""
    return _leaf(
        ca, common_name, eku=eku, san=san, days=days, not_before=not_before, not_after=not_after, key_kind=key_kind
    )


def issue_server(
    ca: Issued, hosts: Sequence[str] = ("localhost", "127.0.0.1", "::1"), *, days: int = 365, key_kind: str = "ec"
) -> Issued:
    return _leaf(
        ca,
        hosts[0],
        eku=(ExtendedKeyUsageOID.SERVER_AUTH,),
        san=hosts,
        days=days,
        not_before=None,
        not_after=None,
        key_kind=key_kind,
    )


def make_crl(
    ca: Issued, revoked_serials: Sequence[int] = (), *, next_update_days: int = 7
) -> x509.CertificateRevocationList:
    now = _now()
    b = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.cert.subject)
        .last_update(now - dt.timedelta(minutes=5))
        .next_update(now + dt.timedelta(days=next_update_days))
    )
    for serial in revoked_serials:
        b = b.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(now - dt.timedelta(minutes=1))
            .build()
        )
    return b.sign(ca.key, _sign_alg(ca.key))


PKI_FILES = ("ca.pem", "ca.key", "server.pem", "server.key", "client.pem", "client.key")


class PKIExists(ValueError):
    """``directory`` already holds part of a PKI, which `init_pki` would not silently replace."""


def existing_pki(directory: str | os.PathLike[str]) -> list[str]:
    """The files of a development PKI already in ``directory``."""
    return [n for n in PKI_FILES if (Path(directory) / n).exists()]


def init_pki(directory: str | os.PathLike[str], *, days: int = 365, force: bool = False) -> list[str]:
    """Write the development PKI into ``directory``; returns the files written. A directory that
    already holds some of its files is refused unless ``force``: a new CA key would orphan every
    certificate the old one issued and every configuration that trusts it."""
    d = Path(directory)
    present = existing_pki(d)
    if present and not force:
        raise PKIExists(f"{d} already holds {', '.join(present)}; pass --force to replace the development PKI")
    d.mkdir(parents=True, exist_ok=True)
    ca = make_ca(days=days)
    server = issue_server(ca, days=days)
    client = issue_client(ca, "dev-client", days=days)
    ca.write(d / "ca.pem", d / "ca.key")
    server.write(d / "server.pem", d / "server.key")
    client.write(d / "client.pem", d / "client.key")
    return [str(d / n) for n in PKI_FILES]
