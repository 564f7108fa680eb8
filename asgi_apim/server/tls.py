"""The server's SSLContext: what the TLS handshake trusts, kept current.

``asgi-apim serve`` hands uvicorn `TrustContextFactory` as its
``ssl_context_factory``. uvicorn's default factory builds the context first
(certificate, key, ``verify_mode`` from ``--ssl-cert-reqs``, ``--ssl-ca-certs``,
ciphers), so with ``--ssl-ca-certs`` uvicorn's meaning applies unchanged.
Without it, and when client certificates are requested, the handshake trusts
what the configuration trusts: the truststore's anchors and every registered
certificate, with ``VERIFY_X509_PARTIAL_CHAIN`` so a registered leaf or
intermediate is an anchor of its own.

``--ssl-cert-reqs`` defaults to 1 (CERT_OPTIONAL: a certificate is asked for,
checked if sent, not required) when TLS is on and any API or resource has
``mutual_ssl`` other than ``disabled``, and to 0 (none asked for) otherwise;
see `default_cert_reqs`. Requiring the certificate is left to the application
layer, which answers a missing one with a 401 problem rather than a failed
handshake.

`live_trust` keeps every registered live context current: `LiveTrust.update`
(subscribed to the truststore reloader by ``protect()``) adds new certificates
to each. OpenSSL cannot take a certificate out of a live store, so a removed or
revoked certificate may still complete the handshake; the application layer
makes the exact, current decision and refuses it there.
"""

from __future__ import annotations

import logging
import ssl
import threading
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from asgi_apim.config import Config
from asgi_apim.server.protocols import set_server_certificate

logger = logging.getLogger("asgi_apim.server")


def uses_mutual_ssl(config: Config) -> bool:
    return config.uses_mutual_ssl


def default_cert_reqs(config: Config, tls: bool) -> int:
    """1 (optional) when TLS is on and some API uses mutual SSL, else 0 (none)."""
    return int(ssl.CERT_OPTIONAL) if tls and uses_mutual_ssl(config) else int(ssl.CERT_NONE)


def trusted_certificates(material: Any) -> list[x509.Certificate]:
    """The anchors and registered certificates of a truststore ``TrustMaterial``."""
    certs = list(material.anchors)
    certs.extend(reg.cert for reg in material.registrations)
    return certs


def _der(cert: x509.Certificate | bytes) -> bytes:
    return cert if isinstance(cert, bytes) else cert.public_bytes(Encoding.DER)


class LiveTrust:
    """The certificates every registered SSLContext trusts; only ever grows."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._contexts: weakref.WeakSet[ssl.SSLContext] = weakref.WeakSet()
        self._known: dict[bytes, None] = {}

    def __len__(self) -> int:
        return len(self._known)

    def register(self, context: ssl.SSLContext) -> None:
        """Trust every known certificate in ``context`` and keep it current."""
        with self._lock:
            context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
            if self._known:
                context.load_verify_locations(cadata=b"".join(self._known))
            self._contexts.add(context)

    def update(self, material: Any) -> None:
        """Add the new certificates of ``material`` (a ``TrustMaterial``) to every live context."""
        self.add(trusted_certificates(material))

    def add(self, certificates: Iterable[x509.Certificate | bytes]) -> int:
        with self._lock:
            new = [der for der in dict.fromkeys(map(_der, certificates)) if der not in self._known]
            if not new:
                return 0
            self._known.update(dict.fromkeys(new))
            for context in list(self._contexts):
                context.load_verify_locations(cadata=b"".join(new))
        logger.info("TLS handshake now trusts %d new certificate(s)", len(new))
        return len(new)


live_trust = LiveTrust()


def server_certificate_pem(certfile: str | Path) -> str | None:
    """The first certificate of ``certfile`` as PEM, or None."""
    try:
        cert = x509.load_pem_x509_certificate(Path(certfile).read_bytes())
    except (OSError, ValueError):
        return None
    return cert.public_bytes(Encoding.PEM).decode("ascii")


@dataclass(frozen=True)
class TrustContextFactory:
    """uvicorn's ``ssl_context_factory``; picklable, so ``--workers`` get one each."""

    config_path: str

    def __call__(self, uv_config: Any, default: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
        context = default()
        if uv_config.ssl_certfile:
            set_server_certificate(context, server_certificate_pem(uv_config.ssl_certfile))
        if uv_config.ssl_ca_certs or context.verify_mode == ssl.CERT_NONE:
            return context
        from asgi_apim.certs.truststore import load_trust
        from asgi_apim.server.configs import config_for

        config = config_for(self.config_path)
        live_trust.add(trusted_certificates(load_trust(config.mutual_ssl, config.apis)))
        live_trust.register(context)
        return context
