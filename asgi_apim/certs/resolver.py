"""The client certificate of a request: found, believed or not, and validated.

One path for both sources. A certificate comes from the TLS connection (the
ASGI TLS extension, ``scope["extensions"]["tls"]["client_cert_chain"]``) or
from the proxy's header (``[mutual_ssl] certificate_header``), which is read
only when the socket peer is a trusted proxy. Either way the DER chain goes to
the same `CertificateValidator`; verdicts are cached by the raw header bytes or
the PEM chain, bounded, dropped with each new truststore generation, and never
kept past the first expiry in the validated chain (`CertificateVerdict.valid_until`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

from starlette.types import Scope

from asgi_apim._keys import PEER
from asgi_apim.certs.formats import parse_certificate_header, pem_chain_to_der
from asgi_apim.certs.trust import TrustedProxies, peer_host
from asgi_apim.certs.truststore import TrustMaterial, TrustReloader
from asgi_apim.certs.validation import CertificateValidator
from asgi_apim.certs.verdict import CertificateVerdict
from asgi_apim.config import MutualSSLConfig
from asgi_apim.errors import CertificateHeaderError, CertificateRejected, MissingCredentials, RequestError
from asgi_apim.identity import CertificatePrincipal, Principal

logger = logging.getLogger("asgi_apim.certs")

_CACHE_SIZE = 10_000
_MAX_TTL = 3600.0
_REJECT_TTL = 60.0
_WARN_EVERY = 60.0
# Where the values of a certificate header differ from client to client: past the PEM marker,
# the leaf's length, serial number and issuer. A server makes a new bytes object for every
# header value, so a dict keyed by the whole value hashes all of it (~1 KB) on every request;
# a hint keyed by this slice is hashed in a tenth of the time and compared whole on a hit.
_HINT = slice(32, 128)


class CertificateOutcome(NamedTuple):
    """What the certificate stage found. ``verdict`` is None when no certificate
    was presented or the presentation itself was faulty (then ``error`` says why).
    Immutable and cheap to make (a tuple: one per new certificate on the request path)."""

    source: str | None = None  # "tls" | "header"
    verdict: CertificateVerdict | None = None
    error: RequestError | None = None

    @property
    def present(self) -> bool:
        return self.verdict is not None or self.error is not None


ABSENT = CertificateOutcome()
_outcome = tuple.__new__  # a CertificateOutcome from its three fields, without NamedTuple's __new__ (a Python call)
_NO_CLAIMS: Mapping[str, Any] = MappingProxyType({})  # shared by every request of a cached verdict: read-only
_CHALLENGE = 'Mutual realm="asgi-apim"'

# What `CertificateResolver.lookup_for` builds: the caller of a request as mutual SSL alone
# admits it to one API, or None (no certificate, or one refused: `certificate_error` says why).
Lookup = Callable[[Any], "Principal | None"]


def certificate_principal(outcome: CertificateOutcome, api: str, version: str | None = None) -> Principal | None:
    """The caller as mutual SSL knows it, if the certificate is accepted for ``api`` (of ``version``)."""
    verdict = outcome.verdict
    if verdict is None:
        return None
    principal = verdict.principals.get(api)
    if principal is None:
        accepted = verdict.acceptances.get(api)
        if accepted is None:
            return None
        principal = verdict.principals[api] = CertificatePrincipal(
            verdict, api, accepted.tier, accepted.alias, _NO_CLAIMS, version
        )
    return principal


def certificate_error(outcome: CertificateOutcome, api: str) -> RequestError:
    """Why a request's certificate does not let it into ``api``: a new error, to raise (a cached
    outcome's own error is a value, never raised: `RequestError.again`)."""
    if outcome.error is not None:
        return outcome.error.again()
    if outcome.verdict is None:
        return MissingCredentials("a client certificate is required", headers={"www-authenticate": _CHALLENGE})
    return CertificateRejected(outcome.verdict.reason_for(api), headers={"www-authenticate": _CHALLENGE})


def _expires(verdict: CertificateVerdict, now: float) -> float:
    """How long an outcome with this verdict is kept: an hour if it accepts, a minute if not, never past the verdict."""
    expires = now + (_MAX_TTL if verdict.acceptances else _REJECT_TTL)
    return verdict.valid_until if verdict.valid_until < expires else expires


_SECURE = frozenset({"https", "wss"})


class Once:
    """A warning given once per process (``given`` says whether it was)."""

    def __init__(self, message: str) -> None:
        self.message = message
        self.given = False

    def __call__(self) -> None:
        if not self.given:
            self.given = True
            logger.warning(self.message)


# the server serves TLS but never fills in the ASGI TLS extension: a client certificate never reaches us
NO_TLS_EXTENSION = Once(
    "a request arrived over TLS without the ASGI TLS extension: this server never passes the client"
    " certificate to the app, so mutual SSL can only refuse. Run the app with `asgi-apim serve`, or"
    " `uvicorn APP --http asgi_apim.server.protocols:HTTPProtocol --ws asgi_apim.server.protocols:WSProtocol"
    " ...`, or `gunicorn -k asgi_apim.server.worker:UvicornWorker ...`, or behind a TLS-terminating proxy"
    " that forwards the certificate header from an address in [mutual_ssl] trusted_proxies (docs/servers.md)"
)


def _tls_slot(scope: Scope) -> bool:
    """Whether the server filled in the ASGI TLS extension (with or without a client certificate)."""
    return bool((scope.get("extensions") or {}).get("tls"))


def _chain(scope: Scope) -> Any:
    """The client's PEM chain from the ASGI TLS extension, if the server filled it in."""
    tls = (scope.get("extensions") or {}).get("tls")
    return tls.get("client_cert_chain") if tls else None


def certificate_header_name(mutual_ssl: MutualSSLConfig) -> bytes:
    """The trusted proxy's certificate header (``[mutual_ssl] certificate_header``) as ASGI scopes
    name it: lower-cased bytes. What the resolver reads, and what the gateway never forwards."""
    return mutual_ssl.certificate_header.lower().encode("latin-1")


class CertificateResolver:
    """Built once per stack; `resolve(scope)` is the per-request call (sync, no I/O)."""

    def __init__(self, trust: TrustReloader, mutual_ssl: MutualSSLConfig) -> None:
        self.trust = trust
        self.header = certificate_header_name(mutual_ssl)
        self.header_format = mutual_ssl.header_format
        self.trusted = TrustedProxies(mutual_ssl.trusted_proxies)
        self._trusted_hosts = self.trusted.known
        self.client_validation = mutual_ssl.enable_client_validation
        self.chain_validation = mutual_ssl.enable_certificate_chain_validation
        self._generation = -1
        self._validator: CertificateValidator | None = None
        self._cache: dict[Any, tuple[CertificateOutcome, float]] = {}
        # raw[_HINT] -> (raw, outcome, expires): the header values seen before, found by a short slice
        self._hints: dict[bytes, tuple[bytes, CertificateOutcome, float]] = {}
        self._last_warning = 0.0
        self.hits = 0  # requests answered from the cache of header values (metrics)
        self.validations = 0  # certificates (chains) validated: the uncached requests (metrics)
        self._prepared: tuple[int, CertificateValidator] | None = None
        trust.prepare(self._prepare)

    def _prepare(self, material: TrustMaterial) -> None:
        """The validator of a new generation, built in the reloader's thread (`TrustReloader.prepare`)."""
        self._prepared = (material.generation, CertificateValidator(material, chain_validation=self.chain_validation))

    @property
    def validator(self) -> CertificateValidator:
        material = self.trust.current
        if material.generation != self._generation or self._validator is None:
            prepared = self._prepared
            if prepared is not None and prepared[0] == material.generation:
                self._validator = prepared[1]
            else:
                self._validator = CertificateValidator(material, chain_validation=self.chain_validation)
            self._prepared = None
            self._generation = material.generation
            self._cache = {}
            self._hints = {}
        return self._validator

    def lookup_for(self, api: str, version: str | None = None, *, strip: bool = False) -> Lookup:
        """The certificate decision for requests on ``api``, as one call: `resolve` (looked up on
        every request, so a subclass's or a wrapper's rule holds) and the caller it accepts;
        with ``strip``, an accepted request's certificate header is taken out (`strip`)."""

        def lookup(scope: Any) -> Principal | None:
            outcome = self.resolve(scope)
            verdict = outcome.verdict
            if verdict is None:
                return None
            principal = verdict.principals.get(api) or certificate_principal(outcome, api, version)
            if strip and principal is not None:
                self.strip(scope, outcome)
            return principal

        return lookup

    def strip(self, scope: Scope, outcome: CertificateOutcome | None = None) -> None:
        """Remove the certificate header from the request before the app sees it (the other
        headers, their order and their bytes unchanged). ``outcome``: what `resolve` found for
        this request; a certificate taken from the header means the header came exactly once
        (twice from a trusted proxy is refused), so where a proxy appends it, last, it is cut off
        without a scan."""
        header = self.header
        headers = scope["headers"]
        if outcome is not None and outcome.source == "header" and type(headers) is list and headers[-1][0] == header:
            scope["headers"] = headers[:-1]
        else:
            scope["headers"] = [h for h in headers if h[0] != header]

    def resolve(self, scope: Scope) -> CertificateOutcome:
        """The client certificate of a request and its verdict: the one entry of the certificate
        decision, for every request that needs a certificate (cached or not, HTTP or WebSocket)."""
        raw: bytes | None = None
        header = self.header
        for name, value in scope["headers"]:
            if name == header:
                if raw is not None:
                    if not self._from_trusted_proxy(scope):
                        break  # never believed from this peer, once or twice: ignored below, like any header of its
                    return CertificateOutcome(
                        "header", error=CertificateHeaderError("the client certificate header appears more than once")
                    )
                raw = value
        if raw is not None:
            peer = scope.get(PEER) or scope.get("client")
            host = peer[0] if peer else None
            trusted = self._trusted_hosts.get(host)  # type: ignore[arg-type]  # TrustedProxies' memo; None: no key
            if trusted is None:
                trusted = host in self.trusted
            if trusted:
                if self.client_validation:
                    refused = self._check_relay(_chain(scope))
                    if refused is not None:
                        return refused
                # the common request: a header seen before, same truststore
                hint = self._hints.get(raw[_HINT])
                if (
                    hint is not None
                    and hint[0] == raw
                    and hint[2] > time.time()
                    and self.trust.generation == self._generation
                ):
                    self.hits += 1
                    return hint[1]
                hit = self._cache.get(raw)
                if hit is not None and hit[1] > time.time() and self.trust.generation == self._generation:
                    self.hits += 1
                    self._hint(raw, hit[0], hit[1])  # another value with the same slice had the hint
                    return hit[0]
                return self._lookup_header(raw)
            self._untrusted(scope)
        chain = _chain(scope)
        if chain:
            if self.client_validation and raw is None and self._from_trusted_proxy(scope):
                return (
                    ABSENT  # the relay model: a trusted proxy's TLS certificate is the proxy's own, never its client's
                )
            return self._lookup(tuple(chain), "tls")
        if raw is None and not NO_TLS_EXTENSION.given and scope.get("scheme") in _SECURE and not _tls_slot(scope):
            NO_TLS_EXTENSION()
        return ABSENT

    def _from_trusted_proxy(self, scope: Scope) -> bool:
        peer = scope.get(PEER) or scope.get("client")
        return peer is not None and peer[0] in self.trusted

    def clear(self) -> None:
        """Forget every cached outcome (the next request of each certificate is validated again)."""
        self._cache.clear()
        self._hints.clear()

    def _check_relay(self, chain: Any) -> CertificateOutcome | None:
        if not chain:
            return CertificateOutcome(
                "header", error=CertificateRejected("the proxy presented no TLS client certificate")
            )
        proxy = self._lookup(tuple(chain), "tls")
        if proxy.verdict is None or proxy.verdict.reason is not None:
            return CertificateOutcome(
                "header", error=CertificateRejected("the proxy's TLS client certificate is not trusted")
            )
        return None

    def _lookup(self, key: Any, source: str) -> CertificateOutcome:
        validator = self.validator
        hit = self._cache.get(key)
        now = time.time()
        if hit is not None and hit[1] > now:
            self.hits += 1
            return hit[0]
        if source == "header":
            return self._lookup_header(key)
        try:
            ders = pem_chain_to_der(key)
        except CertificateHeaderError as exc:
            return self._refused(key, source, exc, now)
        if not ders:
            return ABSENT
        verdict = validator.validate(ders, cache=False)  # cached here, by the PEM chain
        self.validations += 1
        outcome = CertificateOutcome(source, verdict=verdict)
        self._store(key, outcome, _expires(verdict, now))
        return outcome

    def _lookup_header(self, raw: bytes) -> CertificateOutcome:
        """A header value found in neither cache of the current generation (`resolve` has just
        looked, `_lookup` too): parsed, validated, kept in both (the uncached request's path)."""
        validator = self._validator
        if validator is None or self.trust.generation != self._generation:
            validator = self.validator  # a new generation: its caches start empty
        now = time.time()
        try:
            ders = parse_certificate_header(raw, self.header_format)
        except CertificateHeaderError as exc:
            return self._refused(raw, "header", exc, now)
        if not ders:
            return ABSENT
        verdict = validator.validate(ders, cache=False)  # cached here, by the raw value
        self.validations += 1
        outcome = _outcome(CertificateOutcome, ("header", verdict, None))
        expires = _expires(verdict, now)
        self._store(raw, outcome, expires)
        self._hint(raw, outcome, expires)
        return outcome

    def _refused(self, key: Any, source: str, error: CertificateHeaderError, now: float) -> CertificateOutcome:
        outcome = CertificateOutcome(source, error=error)
        self._store(key, outcome, now + _REJECT_TTL)
        return outcome

    def _store(self, key: Any, outcome: CertificateOutcome, expires: float) -> None:
        if len(self._cache) >= _CACHE_SIZE:
            # Drop the oldest tenth: insertion order approximates age.
            for old in list(self._cache)[: _CACHE_SIZE // 10]:
                del self._cache[old]
        self._cache[key] = (outcome, expires)

    def _hint(self, raw: bytes, outcome: CertificateOutcome, expires: float) -> None:
        hints = self._hints
        if len(hints) >= _CACHE_SIZE:
            hints.clear()
        hints[raw[_HINT]] = (raw, outcome, expires)

    def _untrusted(self, scope: Scope) -> None:
        now = time.monotonic()
        if now - self._last_warning >= _WARN_EVERY:
            self._last_warning = now
            logger.warning(
                "client certificate header %r from untrusted peer %s ignored (not in trusted_proxies)",
                self.header.decode("latin-1"),
                peer_host(scope),
            )
