"""TLS towards the backends: WSO2's dynamic SSL profiles, per ``host:port``.

Each ``[[ssl_profiles]]`` entry becomes an `SSLProfile`: an ``ssl.SSLContext``
(TLS 1.2 at least) that verifies the backend against ``ca`` (PEM, DER, PKCS#12
or JKS, read by `asgi_apim.certs.keystores.certificates_in`), checks its host
name unless ``hostname_verification = false`` (logged as a warning at start-up),
and presents ``certificate`` + ``key`` (PEM, the key possibly encrypted) or a
PKCS#12 ``certificate`` holding both, opened with ``key_password``.

Every ``reload_interval`` seconds the files are read again, off the event loop,
and compared by the SHA-256 of their contents. A change builds a new context
under a new generation: the version token the upstream pool compares, so idle
connections made under the old profile are closed and the next request uses the
new one (WSO2 re-initialises its sender). A file that is missing or broken at
start-up stops the gateway; on a reload the last good context keeps serving, the
reason is logged once, and so is the recovery.

HTTPS backends without a profile verify against ``[gateway] ca_bundle`` (itself
reloaded the same way) or, without one, the system's CAs.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import logging
import os
import secrets
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from asgi_apim.certs.keystores import PKCS12_SUFFIXES, certificates_in
from asgi_apim.config import Config, SSLProfileConfig
from asgi_apim.errors import TruststoreError

logger = logging.getLogger("asgi_apim.gateway.ssl_profiles")

SSLContextSource = Callable[[], tuple[ssl.SSLContext | None, object]]


@dataclass(frozen=True)
class _Built:
    context: ssl.SSLContext
    digest: bytes
    generation: int


def server_key(host: str, port: int) -> str:
    """``host:port`` as profiles are keyed: lower case, no brackets, an IP address in its short form."""
    host = host.strip("[]").lower()
    try:
        host = ipaddress.ip_address(host).compressed
    except ValueError:
        pass
    return f"{host}:{port}"


def _read(key: str, path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise TruststoreError(f"{key}: {path}: cannot be read ({exc.strerror or exc})") from None


def _client_pem(
    key: str, cert_data: bytes, key_data: bytes | None, path: Path, password: str | None
) -> tuple[bytes, bytes]:
    """The client chain and its key as one PEM, the key encrypted under a one-time password; and that password."""
    pw = password.encode() if password is not None else None
    try:
        if key_data is None:  # PKCS#12: the certificate, its chain and its key in one file
            private, cert, extra = pkcs12.load_key_and_certificates(cert_data, pw)
            if private is None or cert is None:
                raise TruststoreError(f"{key}: {path}: the PKCS#12 file holds no certificate with its key")
            chain = [cert, *extra]
        else:
            chain = x509.load_pem_x509_certificates(cert_data)
            private = serialization.load_pem_private_key(key_data, pw)
    except TruststoreError:
        raise
    except (ValueError, TypeError) as exc:
        hint = "wrong or missing key_password, or not PEM/PKCS#12"
        raise TruststoreError(f"{key}: {path}: cannot read the client certificate or key ({hint}): {exc}") from None
    one_time = secrets.token_urlsafe(24)
    encrypted = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(one_time.encode()),
    )
    pems = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)
    return pems + encrypted, one_time.encode()


def _load_client_chain(ctx: ssl.SSLContext, body: bytes, password: bytes) -> None:
    """``load_cert_chain`` wants a file: an anonymous in-memory one (memfd) where there is one."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("asgi-apim-client-chain")
        try:
            os.write(fd, body)
            ctx.load_cert_chain(f"/proc/self/fd/{fd}", password=password)
        finally:
            os.close(fd)
        return
    with tempfile.TemporaryDirectory() as d:  # pragma: no cover - platforms without memfd
        path = Path(d) / "chain.pem"
        path.write_bytes(body)
        ctx.load_cert_chain(str(path), password=password)


def build_context(
    key: str,
    *,
    ca: tuple[Path, bytes, str | None] | None,
    client: tuple[Path, bytes, bytes | None, str | None] | None = None,
    hostname_verification: bool = True,
) -> ssl.SSLContext:
    """A client context: TLS 1.2+, the CA certificates given (else the system's), the client chain if any."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca is None:
        ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    else:
        path, data, password = ca
        try:
            certs = certificates_in(path, data, password)
        except TruststoreError as exc:
            raise TruststoreError(f"{key}: {exc}") from None
        cadata = "".join(c.public_bytes(serialization.Encoding.PEM).decode("ascii") for c in certs)
        ctx.load_verify_locations(cadata=cadata)
    ctx.check_hostname = hostname_verification
    ctx.verify_mode = ssl.CERT_REQUIRED
    if client is not None:
        cpath, cert_data, key_data, password = client
        body, one_time = _client_pem(key, cert_data, key_data, cpath, password)
        try:
            _load_client_chain(ctx, body, one_time)
        except ssl.SSLError as exc:
            raise TruststoreError(f"{key}: {cpath}: the key does not match the certificate ({exc.reason})") from None
    return ctx


class SSLProfile:
    """One profile's files and current context. Calling it answers ``(context, generation)``."""

    def __init__(
        self,
        key: str,
        *,
        ca: Path | None,
        ca_password: str | None = None,
        certificate: Path | None = None,
        key_file: Path | None = None,
        key_password: str | None = None,
        hostname_verification: bool = True,
        reload_interval: float = 10.0,
    ) -> None:
        self.key = key
        self.ca, self.ca_password = ca, ca_password
        self.certificate, self.key_file, self.key_password = certificate, key_file, key_password
        self.hostname_verification = hostname_verification
        self.interval = reload_interval
        self._lock = threading.Lock()
        self._failure: str | None = None
        self._failed_digest: bytes | None = None
        self._due = time.monotonic() + reload_interval
        self._checking = False
        files = self._files()
        self._current = _Built(self._build(files), self._digest(files), 1)

    @classmethod
    def from_config(cls, key: str, p: SSLProfileConfig) -> SSLProfile:
        return cls(
            key,
            ca=p.ca,
            ca_password=p.ca_password,
            certificate=p.certificate,
            key_file=p.key,
            key_password=p.key_password,
            hostname_verification=p.hostname_verification,
            reload_interval=p.reload_interval,
        )

    @property
    def generation(self) -> int:
        return self._current.generation

    def __call__(self) -> tuple[ssl.SSLContext | None, object]:
        current = self._current
        if not self._checking and self.due():
            self._check_soon()
        return current.context, current.generation

    def _check_soon(self) -> None:
        """A reload is due and nothing runs `SSLProfiles.run`: check in a worker thread, without waiting."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._checking = True
        loop.run_in_executor(None, self.check).add_done_callback(self._checked)

    def _checked(self, future: asyncio.Future[bool]) -> None:
        self._checking = False
        if not future.cancelled() and future.exception() is not None:
            logger.error("SSL profile %s check failed", self.key, exc_info=future.exception())

    @property
    def next_check(self) -> float:
        return self._due

    def due(self) -> bool:
        return self.interval > 0 and time.monotonic() >= self._due

    def _files(self) -> list[tuple[str, Path, bytes]]:
        named = [("ca", self.ca), ("certificate", self.certificate), ("key", self.key_file)]
        return [(name, path, _read(f"{self.key}.{name}", path)) for name, path in named if path is not None]

    @staticmethod
    def _digest(files: Sequence[tuple[str, Path, bytes]]) -> bytes:
        h = hashlib.sha256()
        for name, path, data in files:
            for part in (name.encode(), str(path).encode(), data):
                h.update(len(part).to_bytes(8, "big"))
                h.update(part)
        return h.digest()

    def _build(self, files: Sequence[tuple[str, Path, bytes]]) -> ssl.SSLContext:
        data = {name: (path, content) for name, path, content in files}
        ca = (data["ca"][0], data["ca"][1], self.ca_password) if "ca" in data else None
        client = None
        if "certificate" in data:
            cpath, cert = data["certificate"]
            key_data = data["key"][1] if "key" in data else None
            if key_data is None and cpath.suffix.lower() not in PKCS12_SUFFIXES:
                raise TruststoreError(f"{self.key}.key: a PEM certificate needs its key")
            client = (cpath, cert, key_data, self.key_password)
        return build_context(self.key, ca=ca, client=client, hostname_verification=self.hostname_verification)

    def check(self) -> bool:
        """Re-read the files (blocking); build and swap in a new context if they changed. True when swapped."""
        with self._lock:
            self._due = time.monotonic() + self.interval
            current = self._current
            try:
                files = self._files()
                digest = self._digest(files)
                if digest == current.digest:
                    self._recovered()
                    return False
                if digest == self._failed_digest:
                    return False
                try:
                    context = self._build(files)
                except (TruststoreError, ssl.SSLError) as exc:
                    self._failed_digest = digest
                    raise TruststoreError(str(exc)) from None
            except TruststoreError as exc:
                self._failed(str(exc))
                return False
            self._current = _Built(context, digest, current.generation + 1)
            self._recovered()
            logger.info("SSL profile %s reloaded: generation %d", self.key, self._current.generation)
            return True

    def _failed(self, reason: str) -> None:
        if reason != self._failure:
            self._failure = reason
            logger.warning(
                "SSL profile %s reload failed, generation %d keeps serving: %s",
                self.key,
                self._current.generation,
                reason,
            )

    def _recovered(self) -> None:
        self._failed_digest = None
        if self._failure is not None:
            self._failure = None
            logger.info("SSL profile %s files readable again, generation %d serving", self.key, self.generation)


class SSLProfiles:
    """Every profile of a configuration, by ``host:port``, and the default for other HTTPS backends."""

    def __init__(self, config: Config) -> None:
        self.profiles: list[SSLProfile] = []
        self._by_server: dict[str, SSLProfile] = {}
        for i, p in enumerate(config.ssl_profiles):
            profile = SSLProfile.from_config(f"ssl_profiles[{i}]", p)
            self.profiles.append(profile)
            for server in p.servers:
                host, _, port = server.rpartition(":")
                self._by_server[server_key(host, int(port))] = profile
            if not p.hostname_verification:
                logger.warning(
                    "ssl_profiles[%d]: hostname verification is off for %s: any certificate the CA issued"
                    " is accepted for these backends",
                    i,
                    ", ".join(p.servers),
                )
        tls = config.gateway_tls
        self.default: SSLContextSource
        if tls.ca_bundle is not None:
            bundle = SSLProfile(
                "gateway.ca_bundle",
                ca=tls.ca_bundle,
                ca_password=tls.ca_bundle_password,
                reload_interval=tls.reload_interval,
            )
            self.profiles.append(bundle)
            self.default = bundle
        else:
            system = build_context("system", ca=None)
            self.default = lambda: (system, 0)

    def context_for(self, host: str, port: int) -> SSLContextSource:
        """The ``ssl_context`` callable for an `asgi_apim.gateway.upstream.UpstreamPool` to ``host:port``."""
        return self._by_server.get(server_key(host, port), self.default)

    def check(self) -> bool:
        """Check every profile now (blocking); True when any changed."""
        return any([p.check() for p in self.profiles])

    async def run(self) -> None:
        """Check each profile every ``reload_interval`` seconds, in a worker thread, until cancelled."""
        reloading = [p for p in self.profiles if p.interval > 0]
        if not reloading:
            return
        while True:
            await asyncio.sleep(max(0.01, min(p.next_check for p in reloading) - time.monotonic()))
            for p in reloading:
                if p.due():
                    try:
                        await asyncio.to_thread(p.check)
                    except Exception:  # never stop reloading the other profiles
                        logger.exception("SSL profile %s check failed", p.key)
