"""What certificate validation found (`CertificateVerdict`): for which APIs a certificate is
accepted (`Acceptance`: alias, tier and how), and why not for the others. Made by
`asgi_apim.certs.validation.CertificateValidator`, kept in the resolver's cache, read per request."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import Any

from cryptography import x509

from asgi_apim.identity import certificate_subject, public_key_sha256

UNPARSEABLE = "unparseable certificate"
EXPIRED = "expired"
NOT_YET_VALID = "not yet valid"
REVOKED = "revoked"
ISSUER_REVOKED = "an issuing CA certificate of its chain is revoked"
NOT_REGISTERED = "certificate is not registered"


EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Acceptance:
    api: str
    alias: str | None
    tier: str
    how: str  # "exact" | "ca" | "truststore"


@dataclass(frozen=True, eq=False, init=False)
class CertificateVerdict:
    """What validation found. ``reason`` is None when the certificate is
    trusted at all (a valid chain or an exact registration); ``acceptances``
    says for which APIs; `reason_for` says why not for one API. ``sha256`` (of
    the leaf's DER), ``subject`` (RFC 4514) and ``spki_sha256`` (the
    throttling key: a renewed certificate with the same key keeps its count)
    are computed on first use.
    ``valid_until`` (epoch seconds) is when the verdict must be recomputed: the
    first expiry in the chains it rests on, the moment a not-yet-valid
    certificate becomes valid, an hour at most; 0 for a verdict not to keep."""

    leaf: x509.Certificate | None
    der: bytes = field(repr=False)
    not_after: float
    acceptances: Mapping[str, Acceptance]
    reason: str | None
    api_reasons: Mapping[str, str] = field(repr=False)
    valid_until: float
    principals: dict[str, Any] = field(
        repr=False, default_factory=dict
    )  # the Principal built for each API, shared by every request of this (cached) verdict

    def __init__(
        self,
        leaf: x509.Certificate | None,
        der: bytes,
        not_after: float,
        acceptances: Mapping[str, Acceptance],
        reason: str | None,
        api_reasons: Mapping[str, str] = EMPTY,
        valid_until: float = 0.0,
    ) -> None:
        # frozen: straight into the instance dict, not a guarded assignment per field (the per-request path)
        attrs = self.__dict__
        attrs["leaf"] = leaf
        attrs["der"] = der
        attrs["not_after"] = not_after
        attrs["acceptances"] = acceptances
        attrs["reason"] = reason
        attrs["api_reasons"] = api_reasons
        attrs["valid_until"] = valid_until
        attrs["principals"] = {}

    @cached_property
    def sha256(self) -> str:
        return hashlib.sha256(self.der).hexdigest() if self.der else ""

    @cached_property
    def subject(self) -> str:
        return certificate_subject(self.leaf)

    @cached_property
    def spki_sha256(self) -> str:
        return public_key_sha256(self.leaf)

    def accepted_for(self, api: str) -> Acceptance | None:
        return self.acceptances.get(api)

    def reason_for(self, api: str) -> str:
        if api in self.acceptances:
            return "accepted"
        return self.api_reasons.get(api) or self.reason or f"certificate is not accepted for API {api!r}"
