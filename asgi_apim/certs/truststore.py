"""The truststore, the CRLs and the registered client certificates, loaded and kept current.

Everything mutual SSL trusts comes from files: ``[mutual_ssl] truststore``
(PEM or DER files, directories of them, PKCS#12 ``.p12``/``.pfx`` and Java
``.jks`` keystores opened with ``truststore_password``, read by `asgi_apim.certs.keystores`), ``[mutual_ssl] crl``
(PEM or DER) and each ``[[apis.certificates]]`` registration; registrations
from the certificate registry (a `RegistrySource`) join those of the file,
which wins on a conflict (same API and alias, or same API and certificate:
logged). `load_trust` reads them into one immutable `TrustMaterial`.
`TrustReloader` checks the files every ``reload_interval`` seconds by the hash
of their contents, and the registry by its change marker, rebuilds off the
event loop when either changed and swaps the new material in with one
attribute assignment. A file that is missing or corrupt at start-up is fatal;
on a reload the last good material keeps serving and the reason is logged once.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import anyio
import anyio.to_thread
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from asgi_apim.certs.keystores import certificates_in, crls_in, list_directory, pem_or_der, read_file
from asgi_apim.config import ApiConfig, CertificateRegistration, MutualSSLConfig
from asgi_apim.errors import TruststoreError

logger = logging.getLogger("asgi_apim.certs.truststore")


@dataclass(frozen=True)
class RegisteredCertificate:
    api: str
    alias: str
    tier: str
    cert: x509.Certificate
    sha256: bytes
    is_ca: bool
    source: str = "config"  # "config" ([[apis.certificates]]) | "registry" (the database)


def registered(api: str, alias: str, tier: str, cert: x509.Certificate, *, source: str) -> RegisteredCertificate:
    """A registration of ``cert`` for ``api``, its fingerprint and CA flag computed."""
    return RegisteredCertificate(
        api=api,
        alias=alias,
        tier=tier,
        cert=cert,
        sha256=hashlib.sha256(cert.public_bytes(Encoding.DER)).digest(),
        is_ca=_is_ca(cert),
        source=source,
    )


class RegistrySource(Protocol):
    """Registrations kept outside the configuration file (`asgi_apim.registry.RegistryFeed`)."""

    def registrations(self) -> tuple[Hashable, Sequence[RegisteredCertificate]]:
        """The current view and a marker that changes with it; the last good view if the
        source cannot be read now (blocking: called off the event loop)."""
        ...


@dataclass(frozen=True)
class TrustMaterial:
    """One generation of what mutual SSL trusts. ``apis`` names every configured
    API, including those with no registrations (they accept no certificate);
    ``truststore_tiers`` maps the APIs that set ``truststore_tier`` to it (any
    certificate the truststore validates passes for them, at that tier)."""

    anchors: tuple[x509.Certificate, ...]
    crls: tuple[x509.CertificateRevocationList, ...]
    registrations: tuple[RegisteredCertificate, ...]
    generation: int
    digest: bytes
    apis: tuple[str, ...] = ()
    truststore_tiers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _Source:
    kind: str  # "truststore" | "crl" | "registration"
    path: Path
    data: bytes
    registration: CertificateRegistration | None = None
    key: str = ""  # the configuration key that named it, for errors


@contextlib.contextmanager
def _named(key: str) -> Iterator[None]:
    """A `TruststoreError` raised inside names the configuration ``key`` first, then the file."""
    try:
        yield
    except TruststoreError as exc:
        raise TruststoreError(f"{key}: {exc}") from None


def _read_sources(mutual_ssl: MutualSSLConfig, apis: Sequence[ApiConfig]) -> tuple[list[_Source], bytes]:
    """Every source file's contents, directories listed anew, and their digest."""
    sources: list[_Source] = []
    for i, entry in enumerate(mutual_ssl.truststore):
        key = f"mutual_ssl.truststore[{i}]"
        with _named(key):
            try:
                is_dir = entry.is_dir()
            except OSError as exc:  # pathlib lets a permission or a name too long through
                raise TruststoreError(f"{entry}: cannot be read ({exc.strerror or exc})") from None
            files = list_directory(entry) if is_dir else [entry]
            sources.extend(_Source("truststore", f, read_file(f), None, key) for f in files)
    for i, p in enumerate(mutual_ssl.crl):
        with _named(key := f"mutual_ssl.crl[{i}]"):
            sources.append(_Source("crl", p, read_file(p), None, key))
    for api in apis:
        for r in api.certificates:
            with _named(key := f"apis[{api.name}].certificates[{r.alias}].certificate"):
                sources.append(_Source("registration", r.certificate, read_file(r.certificate), r, key))
    h = hashlib.sha256()
    for s in sources:
        for part in (s.kind.encode(), str(s.path).encode(), s.data):
            h.update(len(part).to_bytes(8, "big"))
            h.update(part)
    return sources, h.digest()


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def _registration(source: _Source) -> RegisteredCertificate:
    reg = source.registration
    assert reg is not None
    return registered(reg.api, reg.alias, reg.tier, pem_or_der(source.path, source.data)[0], source="config")


def _join(
    configured: list[RegisteredCertificate], stored: Sequence[RegisteredCertificate]
) -> list[RegisteredCertificate]:
    """The configuration's registrations, then the registry's that do not clash with one (logged)."""
    aliases = {(r.api, r.alias): r for r in configured}
    prints = {(r.api, r.sha256): r for r in configured}
    joined = list(configured)
    for r in stored:
        clash = aliases.get((r.api, r.alias)) or prints.get((r.api, r.sha256))
        if clash is not None:
            logger.warning(
                "registry certificate %r of API %r ignored: the configuration registers %s (alias %r), and wins",
                r.alias,
                r.api,
                "that alias" if clash.alias == r.alias else "that certificate",
                clash.alias,
            )
            continue
        joined.append(r)
    return joined


def _unique(certs: Iterable[x509.Certificate]) -> tuple[x509.Certificate, ...]:
    return tuple(dict.fromkeys(certs))


def _build(
    sources: list[_Source],
    digest: bytes,
    password: str | None,
    apis: Sequence[ApiConfig],
    generation: int,
    stored: Sequence[RegisteredCertificate] = (),
) -> TrustMaterial:
    anchors: list[x509.Certificate] = []
    crls: list[x509.CertificateRevocationList] = []
    registrations: list[RegisteredCertificate] = []
    for source in sources:
        with _named(source.key):
            if source.kind == "truststore":
                anchors.extend(certificates_in(source.path, source.data, password))
            elif source.kind == "crl":
                crls.extend(crls_in(source.path, source.data))
            else:
                registrations.append(_registration(source))
    if stored:
        registrations = _join(registrations, stored)
    names = tuple(api.name for api in apis)
    tiers = {api.name: api.truststore_tier for api in apis if api.truststore_tier is not None}
    return TrustMaterial(_unique(anchors), tuple(crls), tuple(registrations), generation, digest, names, tiers)


def _with_marker(digest: bytes, marker: Hashable) -> bytes:
    return hashlib.sha256(digest + repr(marker).encode()).digest()


def load_trust(
    mutual_ssl: MutualSSLConfig,
    apis: Sequence[ApiConfig],
    *,
    generation: int = 1,
    registry: RegistrySource | None = None,
) -> TrustMaterial:
    """Read every source file (and the registry) and build the material (blocking: run it off the event loop)."""
    sources, digest = _read_sources(mutual_ssl, apis)
    stored: Sequence[RegisteredCertificate] = ()
    if registry is not None:
        marker, stored = registry.registrations()
        digest = _with_marker(digest, marker)
    return _build(sources, digest, mutual_ssl.truststore_password, apis, generation, stored)


def warn_closed_apis(apis: Iterable[ApiConfig], registrations: Iterable[RegisteredCertificate] = ()) -> None:
    """Log each API that asks for mutual SSL but can accept no certificate."""
    served = {r.api for r in registrations}
    for api in apis:
        if api.security.mutual_ssl != "disabled" and api.name not in served and api.truststore_tier is None:
            logger.warning(
                "API %r accepts no client certificate: register certificates or set truststore_tier", api.name
            )


class TrustReloader:
    """Holds the current `TrustMaterial` and replaces it when its files change.

    ``current`` is read on every request; `check` (blocking) rebuilds and swaps
    it; `run` calls `check` from a worker thread every ``reload_interval``
    seconds and then tells the subscribers, on the event loop, about the swap.
    """

    def __init__(
        self, mutual_ssl: MutualSSLConfig, apis: Sequence[ApiConfig], *, registry: RegistrySource | None = None
    ) -> None:
        self.mutual_ssl = mutual_ssl
        self.apis = tuple(apis)
        self.registry = registry
        self.interval = mutual_ssl.reload_interval
        self._current = load_trust(mutual_ssl, self.apis, registry=registry)
        self.generation = self._current.generation  # read on every request: a plain attribute, set with the swap
        warn_closed_apis(self.apis, self._current.registrations)
        self._lock = threading.Lock()
        self._failure: str | None = None
        self._failed_digest: bytes | None = None
        self._subscribers: list[Callable[[TrustMaterial], None]] = []
        self._preparers: list[Callable[[TrustMaterial], None]] = []
        self._notified = self._current.generation
        self.reloads = 0  # new generations swapped in since start-up (metrics)
        self.failures = 0  # reloads of changed files that failed, the last good generation serving (metrics)

    @property
    def current(self) -> TrustMaterial:
        return self._current

    def subscribe(self, callback: Callable[[TrustMaterial], None]) -> None:
        """``callback(material)`` on the event loop, after each new generation is swapped in."""
        self._subscribers.append(callback)

    def prepare(self, callback: Callable[[TrustMaterial], None]) -> None:
        """``callback(material)`` in `check`'s thread, with each new generation before it is
        swapped in: work that would otherwise stall the event loop on the next request (a
        validator over 100 000 registrations) is done there."""
        self._preparers.append(callback)

    def check(self) -> bool:
        """Rebuild if any source changed; True when a new generation was swapped in."""
        with self._lock:
            current = self._current
            try:
                sources, digest = _read_sources(self.mutual_ssl, self.apis)
                stored: Sequence[RegisteredCertificate] = ()
                if self.registry is not None:
                    marker, stored = self.registry.registrations()  # the last good view if the database is away
                    digest = _with_marker(digest, marker)
                if digest == current.digest:
                    self._recovered()
                    return False
                if digest == self._failed_digest:
                    return False
                try:
                    material = _build(
                        sources,
                        digest,
                        self.mutual_ssl.truststore_password,
                        self.apis,
                        current.generation + 1,
                        stored,
                    )
                except TruststoreError:
                    self._failed_digest = digest
                    raise
            except TruststoreError as exc:
                self._failed(str(exc))
                return False
            for prepare in self._preparers:
                try:
                    prepare(material)
                except Exception:  # the request path builds what was not prepared
                    logger.exception("preparing truststore generation %d failed", material.generation)
            self._current = material
            self.generation = material.generation
            self.reloads += 1
            self._recovered()
            logger.info(
                "truststore reloaded: generation %d, %d trusted certificates, %d CRLs, %d registered certificates",
                material.generation,
                len(material.anchors),
                len(material.crls),
                len(material.registrations),
            )
            return True

    def _failed(self, reason: str) -> None:
        self.failures += 1
        if reason != self._failure:
            self._failure = reason
            logger.warning(
                "truststore reload failed, generation %d keeps serving: %s", self._current.generation, reason
            )

    def _recovered(self) -> None:
        self._failed_digest = None
        if self._failure is not None:
            self._failure = None
            logger.info("truststore files readable again, generation %d serving", self._current.generation)

    def notify(self) -> None:
        """Tell the subscribers about a generation they have not seen (event loop thread)."""
        material = self._current
        if material.generation == self._notified:
            return
        self._notified = material.generation
        for callback in list(self._subscribers):
            try:
                callback(material)
            except Exception:
                logger.exception("truststore subscriber %r failed", callback)

    async def run(self) -> None:
        """Check every ``reload_interval`` seconds until cancelled."""
        while True:
            await anyio.sleep(self.interval)
            try:
                await anyio.to_thread.run_sync(self.check)
            except Exception:
                logger.exception("truststore check failed")
            self.notify()
