"""Who made the request: the `Principal` that goes into ``scope["user"]``.

Follows Starlette's `AuthenticationMiddleware` convention: ``scope["user"]`` is
a `BaseUser` and ``scope["auth"]`` an `AuthCredentials` carrying the scopes, so
``request.user.is_authenticated``, ``request.auth.scopes`` and
``starlette.authentication.requires`` work unchanged: an authenticated caller's
``request.auth.scopes`` are ``"authenticated"`` followed by its token's scopes.
"""

from __future__ import annotations

import hashlib
from collections.abc import MutableMapping
from dataclasses import dataclass, field, fields
from functools import cached_property
from typing import Any

from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from starlette.authentication import AuthCredentials, BaseUser, UnauthenticatedUser

METHODS = ("mutual_ssl", "oauth2", "api_key", "basic")


@dataclass(frozen=True, eq=False)
class Principal(BaseUser):
    """An authenticated caller.

    ``method`` is the scheme that decided (``mutual_ssl``, ``oauth2``,
    ``api_key``, ``basic``); ``methods`` every scheme that succeeded, in order
    (both, when mutual SSL and an application credential are mandatory).
    ``throttle_key`` is what rate limits count this caller by. ``tier`` is the caller's
    (subscription) tier; ``application_tier``, when a token names its application's tier
    (WSO2's ``application.tier``), is counted too, by ``application_key`` (the application
    and its user), across every API.
    """

    method: str
    subject: str
    api: str | None = None
    tier: str | None = None
    alias: str | None = None
    scopes: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()
    certificate: Any = None  # cryptography.x509.Certificate for mutual_ssl callers
    claims: dict[str, Any] = field(default_factory=dict)
    throttle_key: str = ""
    application_tier: str | None = None
    application_key: str = ""
    version: str | None = None  # the version of the API called (`[[apis]] version`), if it has one

    @property
    def is_authenticated(self) -> bool:
        return True

    @cached_property
    def credentials(self) -> AuthCredentials:
        """``scope["auth"]``: "authenticated" first, as Starlette's own examples do (so
        ``@requires("authenticated")`` works), then the scopes. Built once per principal
        (a cached principal serves many requests; after the first, a plain attribute read),
        its ``scopes`` a tuple that none of them can change."""
        credentials = AuthCredentials()
        credentials.scopes = ("authenticated", *self.scopes)  # type: ignore[assignment]  # a read-only tuple where Starlette types a list
        return credentials

    def derive(self, **changes: Any) -> Principal:
        """A new `Principal` like this one but for ``changes`` (field names): the one way to
        make a changed copy, so that a field added to `Principal` is carried by every copy."""
        values = {f.name: getattr(self, f.name) for f in fields(Principal)}
        values.update(changes)
        return Principal(**values)

    @property
    def key_type(self) -> str:
        """WSO2's key type of the credential: ``SANDBOX`` when its ``keytype`` claim says so
        (a JWT access token or an API key), else ``PRODUCTION``."""
        claims = self.claims
        value = claims.get("keytype") if isinstance(claims, dict) else None
        return "SANDBOX" if isinstance(value, str) and value.upper() == "SANDBOX" else "PRODUCTION"

    @property
    def display_name(self) -> str:
        return self.subject

    @property
    def identity(self) -> str:
        return self.subject

    def as_dict(self) -> dict[str, Any]:
        return {
            "authenticated": True,
            "method": self.method,
            "methods": list(self.methods or (self.method,)),
            "subject": self.subject,
            "alias": self.alias,
            "tier": self.tier,
            "scopes": list(self.scopes),
            "api": self.api,
            "version": self.version,
        }


_CERTIFICATE_CREDENTIALS = AuthCredentials()
_CERTIFICATE_CREDENTIALS.scopes = ("authenticated",)  # type: ignore[assignment]  # a read-only tuple where Starlette types a list


def certificate_subject(cert: Any) -> str:
    """A certificate's subject, RFC 4514 ("" without a certificate)."""
    return cert.subject.rfc4514_string() if cert is not None else ""


def public_key_sha256(cert: Any) -> str:
    """SHA-256 (hex) of a certificate's SubjectPublicKeyInfo: what a certificate caller is counted
    by, so that a renewed certificate with the same key keeps its count ("" without one)."""
    if cert is None:
        return ""
    return hashlib.sha256(cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)).hexdigest()


class CertificatePrincipal(Principal):
    """A mutual-SSL caller, built per (accepted certificate, API) and shared by every request
    of that verdict. Its ``subject`` (RFC 4514, ~25 µs) and ``throttle_key`` (SHA-256 of
    the public key, ~20 µs) are worked out from the certificate the first time someone reads
    them (the app, throttling, a log line), not on the way in. It holds the certificate, not
    the verdict, whose ``principals`` hold it: no reference cycle, so a verdict dropped from
    the caches is freed at once, not by the garbage collector."""

    def __init__(
        self, verdict: Any, api: str, tier: str, alias: str | None, claims: Any, version: str | None = None
    ) -> None:
        # the frozen dataclass's fields, straight into the instance dict; subject and throttle_key stay lazy
        attrs = self.__dict__
        attrs["method"] = "mutual_ssl"
        attrs["api"] = api
        attrs["tier"] = tier
        attrs["alias"] = alias
        attrs["scopes"] = ()
        attrs["methods"] = ("mutual_ssl",)
        attrs["certificate"] = verdict.leaf
        attrs["claims"] = claims
        attrs["version"] = version
        attrs["credentials"] = _CERTIFICATE_CREDENTIALS  # no scopes: one read-only AuthCredentials for all

    @cached_property
    def subject(self) -> str:
        return certificate_subject(self.certificate)

    @cached_property
    def throttle_key(self) -> str:
        return f"cert:{public_key_sha256(self.certificate)}"


ANONYMOUS = UnauthenticatedUser()
NO_CREDENTIALS = AuthCredentials()


def anonymous_dict(api: str | None = None) -> dict[str, Any]:
    return {
        "authenticated": False,
        "method": None,
        "methods": [],
        "subject": None,
        "alias": None,
        "tier": None,
        "scopes": [],
        "api": api,
        "version": None,
    }


def set_identity(scope: MutableMapping[str, Any], principal: Principal | None) -> None:
    """Write ``scope["user"]`` and ``scope["auth"]`` as Starlette does."""
    if principal is None:
        scope["user"] = ANONYMOUS
        scope["auth"] = NO_CREDENTIALS
    else:
        scope["user"] = principal
        scope["auth"] = principal.credentials
