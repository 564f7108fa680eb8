"""What ``asgi-apim certs`` and the admin API do: add, list, update and remove registrations.

Both front ends call `Registry`, so both refuse the same things the same way:
an API the configuration does not have or a tier it does not know
(`RegistryUsageError`), something that is not exactly one certificate or that
holds a private key, or a certificate already expired (`CertificateFileError`),
an alias or a certificate the API already has, in the database or in the
configuration file (`RegistryError`). Every method blocks (database I/O).
"""

from __future__ import annotations

import datetime
import re
import unicodedata
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from asgi_apim.certs.truststore import RegisteredCertificate, registered
from asgi_apim.config import Config
from asgi_apim.errors import CertificateFileError, RegistryError, RegistryUsageError
from asgi_apim.registry.store import RegistryStore

_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)
MAX_ALIAS = 255
MAX_CERTIFICATE_BYTES = 64 * 1024


def read_certificate(data: bytes, name: str = "the file") -> x509.Certificate:
    """Exactly one certificate, PEM or DER, and no private key; `CertificateFileError` otherwise."""
    if b"PRIVATE KEY-----" in data:
        raise CertificateFileError(f"{name} holds a private key: register the certificate alone (keep the key secret)")
    if len(data) > MAX_CERTIFICATE_BYTES:
        raise CertificateFileError(f"{name} is larger than {MAX_CERTIFICATE_BYTES // 1024} KiB: not a certificate")
    try:
        if b"-----BEGIN" in data:
            blocks = _PEM_CERT.findall(data)
            if len(blocks) > 1:
                raise CertificateFileError(
                    f"{name} holds {len(blocks)} certificates: register one (a client certificate or its CA)"
                )
            if not blocks:
                raise ValueError
            return x509.load_pem_x509_certificate(blocks[0])
        return x509.load_der_x509_certificate(data)
    except ValueError:
        raise CertificateFileError(f"{name} is not a certificate (PEM or DER)") from None


def check_alias(alias: str) -> str:
    if not alias or len(alias) > MAX_ALIAS or alias != alias.strip():
        raise RegistryUsageError(f"alias {alias!r} must be 1 to {MAX_ALIAS} characters, without surrounding spaces")
    if any(unicodedata.category(c).startswith("C") for c in alias):
        raise RegistryUsageError(f"alias {alias!r} holds a control character")
    return alias


@dataclass(frozen=True)
class Listed:
    """A registration as ``certs list`` shows it: ``source`` is config, registry, or
    ``registry (config wins)`` for a database row the configuration overrides."""

    registration: RegisteredCertificate
    source: str


class Registry:
    """The registry of ``config``'s database, checked against ``config``'s APIs and tiers."""

    def __init__(self, config: Config, store: RegistryStore | None = None) -> None:
        if config.registry.url is None:
            where = config.path or "the configuration"
            raise RegistryUsageError(
                f"{where} has no [registry] table (add one; url defaults to sqlite:///registry.db)"
            )
        self.config = config
        self.store = store or RegistryStore(config.registry.url)

    def close(self) -> None:
        self.store.close()

    def _api(self, name: str) -> None:
        known = [api.name for api in self.config.apis]
        if name not in known:
            raise RegistryUsageError(f"unknown API {name!r} (configured: {', '.join(known) or 'none'})")

    def _tier(self, tier: str) -> None:
        known = self.config.throttling.tiers
        if tier not in known:
            raise RegistryUsageError(f"unknown tier {tier!r} (known: {', '.join(sorted(known))})")

    def configured(self, api: str | None = None) -> list[RegisteredCertificate]:
        """The ``[[apis.certificates]]`` registrations (each file's first certificate)."""
        found = []
        for a in self.config.apis:
            if api is not None and a.name != api:
                continue
            for c in a.certificates:
                data = c.certificate.read_bytes()
                blocks = _PEM_CERT.findall(data)
                cert = x509.load_pem_x509_certificate(blocks[0]) if blocks else x509.load_der_x509_certificate(data)
                found.append(registered(a.name, c.alias, c.tier, cert, source="config"))
        return found

    def add(self, api: str, alias: str, tier: str, data: bytes, name: str = "the file") -> RegisteredCertificate:
        self._api(api)
        check_alias(alias)
        self._tier(tier)
        cert = read_certificate(data, name)
        if cert.not_valid_after_utc <= datetime.datetime.now(datetime.UTC):
            raise CertificateFileError(f"{name} expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")
        reg = registered(api, alias, tier, cert, source="registry")
        for c in self.configured(api):
            if c.alias == alias:
                raise RegistryError(f"API {api!r} registers alias {alias!r} in the configuration file already")
            if c.sha256 == reg.sha256:
                raise RegistryError(
                    f"this certificate is registered for API {api!r} in the configuration as {c.alias!r}"
                )
        pem = cert.public_bytes(Encoding.PEM).decode("ascii")
        self.store.add(api, alias, pem, reg.sha256.hex(), tier)
        return reg

    def remove(self, api: str, alias: str) -> None:
        self._api(api)
        self._not_configured(api, alias)
        self.store.remove(api, alias)

    def update(self, api: str, alias: str, tier: str) -> None:
        self._api(api)
        self._tier(tier)
        self._not_configured(api, alias)
        self.store.update_tier(api, alias, tier)

    def _not_configured(self, api: str, alias: str) -> None:
        for c in self.config.api(api).certificates:
            if c.alias == alias:
                where = self.config.path or "the configuration file"
                raise RegistryError(f"alias {alias!r} of API {api!r} is registered in {where}: change it there")

    def listing(self, api: str | None = None) -> list[Listed]:
        """The configuration's registrations and the database's, by API and alias."""
        if api is not None:
            self._api(api)
        configured = self.configured(api)
        aliases = {(c.api, c.alias) for c in configured}
        prints = {(c.api, c.sha256) for c in configured}
        rows = [Listed(c, "config") for c in configured]
        for s in self.store.active(api):
            try:
                cert = x509.load_pem_x509_certificate(s.certificate.encode("ascii"))
            except ValueError:
                continue
            reg = registered(s.api, s.alias, s.tier, cert, source="registry")
            shadowed = (s.api, s.alias) in aliases or (s.api, reg.sha256) in prints
            rows.append(Listed(reg, "registry (config wins)" if shadowed else "registry"))
        return sorted(rows, key=lambda r: (r.registration.api, r.registration.alias, r.source))
