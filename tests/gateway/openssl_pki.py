"""Certificates made with the ``openssl`` command line, as operators make them: a CA (``req -x509``),
server and client certificates signed by it, encrypted keys, PKCS#12 files."""

from __future__ import annotations

import subprocess
from pathlib import Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(directory: Path, name: str) -> Path:
    """``NAME.pem`` and ``NAME.key``: a self-signed CA."""
    directory.mkdir(parents=True, exist_ok=True)
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
        "-subj", f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.pem", cwd=directory,
    )  # fmt: skip
    return directory / f"{name}.pem"


def issue(
    directory: Path, ca: str, name: str, *, client: bool = False, san: str = "IP:127.0.0.1,DNS:localhost"
) -> Path:
    """``NAME.pem`` and ``NAME.key`` signed by the CA ``ca``; a server certificate unless ``client``."""
    usage = "clientAuth" if client else "serverAuth"
    (directory / f"{name}.ext").write_text(
        f"basicConstraints=CA:FALSE\nextendedKeyUsage={usage}\n" + ("" if client else f"subjectAltName={san}\n")
    )
    _openssl(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-subj", f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=directory,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-CAcreateserial",
        "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem", cwd=directory,
    )  # fmt: skip
    return directory / f"{name}.pem"


def encrypt_key(directory: Path, name: str, password: str) -> Path:
    """``NAME.enc.key``: the key of NAME under ``password`` (AES-256)."""
    _openssl(
        "pkey", "-in", f"{name}.key", "-aes256", "-passout", f"pass:{password}", "-out", f"{name}.enc.key",
        cwd=directory,
    )  # fmt: skip
    return directory / f"{name}.enc.key"


def pkcs12(directory: Path, name: str, password: str, *, ca: str | None = None) -> Path:
    """``NAME.p12``: NAME's certificate and key (and the CA's certificate) under ``password``."""
    extra = ["-certfile", f"{ca}.pem"] if ca else []
    _openssl(
        "pkcs12", "-export", "-in", f"{name}.pem", "-inkey", f"{name}.key", *extra,
        "-passout", f"pass:{password}", "-out", f"{name}.p12", cwd=directory,
    )  # fmt: skip
    return directory / f"{name}.p12"


def trust_pkcs12(directory: Path, ca: str, password: str) -> Path:
    """``CA-trust.p12``: the CA's certificate alone, as a PKCS#12 truststore."""
    _openssl(
        "pkcs12", "-export", "-nokeys", "-in", f"{ca}.pem", "-passout", f"pass:{password}",
        "-out", f"{ca}-trust.p12", cwd=directory,
    )  # fmt: skip
    return directory / f"{ca}-trust.p12"
