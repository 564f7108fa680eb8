"""Certificate and CRL files as mutual SSL and the gateway's SSL profiles read them: PEM or DER
certificates, PKCS#12 (``.p12``/``.pfx``) and Java (``.jks``/``.jceks``) keystores, PEM or DER CRLs.
Every failure is a `TruststoreError` naming the file."""

from __future__ import annotations

import re
from pathlib import Path

import jks
from cryptography import x509
from cryptography.hazmat.primitives.serialization import pkcs12

from asgi_apim._schema import PKCS12_SUFFIXES as PKCS12_SUFFIXES
from asgi_apim.errors import TruststoreError

CERTIFICATE_SUFFIXES = (".pem", ".crt", ".cer", ".der")
JKS_SUFFIXES = (".jks", ".jceks")
_JKS_MAGIC = (b"\xfe\xed\xfe\xed", b"\xce\xce\xce\xce")
_PEM_CRL = re.compile(rb"-----BEGIN X509 CRL-----.+?-----END X509 CRL-----", re.DOTALL)


def read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise TruststoreError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise TruststoreError(f"{path}: is a directory, a file was expected") from None
    except OSError as exc:
        raise TruststoreError(f"{path}: cannot be read ({exc.strerror or exc})") from None


def list_directory(path: Path) -> list[Path]:
    try:
        children = sorted(path.iterdir())
        suffixes = CERTIFICATE_SUFFIXES + PKCS12_SUFFIXES + JKS_SUFFIXES
        return [c for c in children if c.suffix.lower() in suffixes and not c.name.startswith(".") and c.is_file()]
    except OSError as exc:
        raise TruststoreError(f"{path}: cannot list the directory ({exc.strerror or exc})") from None


def pem_or_der(path: Path, data: bytes) -> list[x509.Certificate]:
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificates(data)
        return [x509.load_der_x509_certificate(data)]
    except ValueError:
        raise TruststoreError(f"{path}: not a PEM or DER certificate file (or holds no certificate)") from None


def _pkcs12(path: Path, data: bytes, password: str | None) -> list[x509.Certificate]:
    try:
        store = pkcs12.load_pkcs12(data, password.encode() if password is not None else None)
    except (ValueError, TypeError):
        hint = "wrong or missing truststore_password" if password is None else "wrong truststore_password"
        raise TruststoreError(f"{path}: cannot open the PKCS#12 file ({hint}, or the file is corrupt)") from None
    certs = [store.cert.certificate] if store.cert is not None else []
    return certs + [c.certificate for c in store.additional_certs]


def _jks(path: Path, data: bytes, password: str | None) -> list[x509.Certificate]:
    try:
        store = jks.KeyStore.loads(data, password, try_decrypt_keys=False)
        ders = [e.cert for e in store.certs.values() if e.type == "X.509"]
        ders += [der for e in store.private_keys.values() for kind, der in e.cert_chain if kind == "X.509"]
        return [x509.load_der_x509_certificate(d) for d in ders]
    except jks.util.KeystoreSignatureException:
        raise TruststoreError(f"{path}: the keystore's integrity check failed (wrong truststore_password?)") from None
    except Exception:  # pyjks reports a damaged file through many exception types
        raise TruststoreError(f"{path}: not a readable JKS keystore") from None


def certificates_in(path: Path, data: bytes, password: str | None = None) -> list[x509.Certificate]:
    """The certificates of one truststore file's contents: PEM, DER, PKCS#12 or JKS (by suffix, or
    the JKS magic number). Raises `TruststoreError` naming ``path``."""
    suffix = path.suffix.lower()
    if suffix in PKCS12_SUFFIXES:
        certs = _pkcs12(path, data, password)
    elif suffix in JKS_SUFFIXES or data[:4] in _JKS_MAGIC:
        certs = _jks(path, data, password)
    else:
        certs = pem_or_der(path, data)
    if not certs:
        raise TruststoreError(f"{path}: holds no certificate")
    return certs


def crls_in(path: Path, data: bytes) -> list[x509.CertificateRevocationList]:
    try:
        if b"-----BEGIN" in data:
            blocks = _PEM_CRL.findall(data)
            if not blocks:
                raise ValueError
            return [x509.load_pem_x509_crl(b) for b in blocks]
        return [x509.load_der_x509_crl(data)]
    except ValueError:
        raise TruststoreError(f"{path}: not a PEM or DER certificate revocation list") from None
