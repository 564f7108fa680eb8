"""What ``asgi-apim serve`` checks before it starts, each problem one line naming the fix.

* `check_tls_files`: the ``--ssl-*`` files, read with cryptography so that an
  error names the flag and the file (``--ssl-keyfile server.pem: not a private
  key (a certificate; are --ssl-certfile and --ssl-keyfile swapped?)``) rather
  than OpenSSL's ``[SSL] PEM lib (_ssl.c:3926)``.
* `per_worker_limits`: ``memory://`` throttling storage with more than one
  worker counts every limit once per worker (``--workers 4`` lets four times
  each tier through). That is refused unless ``--allow-per-worker-limits``
  says it is meant: a tier is a contract, and a log line is easy to miss.
* `unreachable_certificate_apis`: an API that requires a client certificate
  (``mutual_ssl = "mandatory"``) while the server asks for none (no TLS, or
  ``--ssl-cert-reqs 0``) and no proxy is trusted to forward one: every request
  to it will be refused. A WARNING, since the rest of the app still works.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from asgi_apim.config import Config


class PreflightError(ValueError):
    """One line naming the flag, the file and the fix."""


def _read(flag: str, path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise PreflightError(f"{flag} {path}: no such file") from None
    except OSError as exc:
        raise PreflightError(f"{flag} {path}: {exc.strerror or exc}") from None


def _certificates(data: bytes) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError:
        return []


def _has_private_key(data: bytes) -> bool:
    return b"PRIVATE KEY-----" in data


def _private_key(flag: str, path: str, data: bytes, password: str | None) -> object:
    try:
        return load_pem_private_key(data, password.encode() if password is not None else None)
    except TypeError:
        if password is None:
            raise PreflightError(f"{flag} {path}: the key is encrypted; give --ssl-keyfile-password") from None
        raise PreflightError(f"{flag} {path}: the key is not encrypted; drop --ssl-keyfile-password") from None
    except ValueError:
        if password is not None and _has_private_key(data):
            raise PreflightError(f"{flag} {path}: cannot decrypt the key with --ssl-keyfile-password") from None
        if _certificates(data):
            hint = " (a certificate; are --ssl-certfile and --ssl-keyfile swapped?)"
        else:
            hint = " (no PEM private key in it)"
        raise PreflightError(f"{flag} {path}: not a private key{hint}") from None


def check_tls_files(
    certfile: str | None, keyfile: str | None, password: str | None = None, ca_certs: str | None = None
) -> None:
    """Raise `PreflightError` unless the ``--ssl-*`` files make a working server context."""
    if keyfile and not certfile:
        raise PreflightError("--ssl-keyfile needs --ssl-certfile")
    if ca_certs:
        ca_data = _read("--ssl-ca-certs", ca_certs)
        if not _certificates(ca_data):
            raise PreflightError(f"--ssl-ca-certs {ca_certs}: no PEM certificate in it")
    if not certfile:
        if ca_certs:
            raise PreflightError("--ssl-ca-certs needs --ssl-certfile and --ssl-keyfile (TLS is off without them)")
        return
    cert_data = _read("--ssl-certfile", certfile)
    certs = _certificates(cert_data)
    if not certs:
        hint = " (a private key; are --ssl-certfile and --ssl-keyfile swapped?)" if _has_private_key(cert_data) else ""
        raise PreflightError(f"--ssl-certfile {certfile}: not a PEM certificate{hint}")
    if keyfile:
        key_flag, key_path, key_data = "--ssl-keyfile", keyfile, _read("--ssl-keyfile", keyfile)
    elif _has_private_key(cert_data):
        key_flag, key_path, key_data = "--ssl-certfile", certfile, cert_data
    else:
        raise PreflightError(f"--ssl-certfile {certfile}: holds no private key; give it with --ssl-keyfile")
    key = _private_key(key_flag, key_path, key_data, password)
    public = getattr(key, "public_key", None)
    if public is None or public() != certs[0].public_key():
        raise PreflightError(
            f"{key_flag} {key_path}: the key does not match the certificate in --ssl-certfile {certfile}"
        )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:  # what OpenSSL itself will do with them, for anything the checks above let through
        context.load_cert_chain(certfile, keyfile, password)
    except ssl.SSLError as exc:
        raise PreflightError(f"--ssl-certfile {certfile} / {key_flag} {key_path}: {exc.reason or exc}") from None


def per_worker_limits(config: Config, workers: int | None, allowed: bool) -> str | None:
    """The refusal line for ``memory://`` storage under several workers, or None."""
    if not workers or workers < 2 or allowed or not config.throttling.storage.startswith("memory://"):
        return None
    return (
        f'--workers {workers} with throttling.storage = "{config.throttling.storage}": each worker would count '
        f"on its own and let {workers} times every limit through; use a shared storage "
        '(storage = "redis://HOST:6379/0") or pass --allow-per-worker-limits'
    )


def mandatory_certificate_apis(config: Config) -> list[str]:
    """The names of the APIs (or API resources) that refuse any request without a client certificate."""
    names = []
    for api in config.apis:
        if api.security.mutual_ssl == "mandatory" or any(
            r.security is not None and r.security.mutual_ssl == "mandatory" for r in api.resources
        ):
            names.append(api.name)
    return names


def unreachable_certificate_apis(config: Config, tls: bool, cert_reqs: int) -> str | None:
    """The start-up warning when certificate-only APIs can receive no certificate, or None."""
    if config.mutual_ssl.trusted_proxies or (tls and cert_reqs != ssl.CERT_NONE):
        return None
    names = mandatory_certificate_apis(config)
    if not names:
        return None
    why = "--ssl-cert-reqs 0 asks clients for no certificate" if tls else "the server has no TLS"
    return (
        f'API {", ".join(names)} requires a client certificate (mutual_ssl = "mandatory") but {why} and '
        "mutual_ssl.trusted_proxies is empty, so every request to it will be refused: serve with --ssl-certfile, "
        "--ssl-keyfile and --ssl-cert-reqs 1, or list the proxy that forwards the certificate in trusted_proxies"
    )
