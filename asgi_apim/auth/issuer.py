"""The API-key token service: ``GET /apikey`` and the JWKS of its signing key.

Off by default; ``[api_keys.issuer] enabled = true`` mounts it in front of the
stack with `mount` (under ``asgi-apim serve`` and ``asgi-apim gateway`` alike),
as WSO2 API Microgateway's API-key security token service:

=========  ==========================  =================================================================
method     path                        answers
=========  ==========================  =================================================================
GET        ``path`` (``/apikey``)      a signed API key (`asgi_apim.auth.signing`) to a caller
                                       authenticated by HTTP basic (``[basic_auth] users_file``) or by a
                                       client certificate the configuration trusts; ``text/plain``, or
                                       ``{"apikey", "validityTime"}`` to ``Accept: application/json``
GET        ``jwks_path``               the public key, a JWKS (``kid``: its RFC 7638 thumbprint)
=========  ==========================  =================================================================

The key's ``sub`` is the user name, or the certificate's subject (RFC 4514);
it opens the APIs of ``[[api_keys.issuer.apis]]`` (every API that accepts API
keys when none is listed), each at its tier, for ``validity`` seconds. The
query may narrow both: ``?api=NAME`` (repeatable) and ``?validity=SECONDS`` (at
most ``validity``). The certificate is the `CertificateResolver`'s decision
(the TLS connection, or a trusted proxy's header): a certificate it trusts at
all (``reason`` None) is accepted. Refusals are problem+json: 401 (900901/900902,
with ``WWW-Authenticate``), 400 for a bad query, 405 for another method.
"""

from __future__ import annotations

import json
import logging
from typing import ClassVar
from urllib.parse import parse_qsl

import anyio.to_thread
from starlette.types import ASGIApp, Receive, Scope, Send

from asgi_apim.apikeys_config import ApiKeyIssuerConfig
from asgi_apim.auth.apikey import api_key_refusal
from asgi_apim.auth.basic import BasicAuthenticator
from asgi_apim.auth.signing import Grant, Signer
from asgi_apim.certs.resolver import CertificateResolver
from asgi_apim.config import ApiConfig, Config
from asgi_apim.errors import BadRequest, CertificateRejected, ConfigError, MissingCredentials, RequestError, reject

logger = logging.getLogger("asgi_apim.auth.issuer")

_MAX_QUERY = 2048


class MethodNotAllowed(RequestError):
    status: ClassVar[int] = 405
    title: ClassVar[str] = "Method Not Allowed"


def grants_for(config: Config) -> list[Grant]:
    """The APIs the token service's keys open, each with its versions and tier."""
    issuer = config.api_keys.issuer
    if issuer.apis:
        return [Grant(config.api(a.name), a.tier or issuer.tier, a.versions) for a in issuer.apis]
    return [Grant(api, issuer.tier) for api in config.apis if api_key_refusal(api) is None]


class ApiKeyService:
    """The token service in front of ``app``; every other request goes to ``app`` untouched."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        signer: Signer,
        issuer: ApiKeyIssuerConfig,
        grants: list[Grant],
        basic: BasicAuthenticator | None = None,
        resolver: CertificateResolver | None = None,
    ) -> None:
        if not grants:
            raise ConfigError("api_keys.issuer.apis", "no API accepts API keys: the token service would issue none")
        if basic is None and resolver is None:
            raise ConfigError(
                "api_keys.issuer.enabled", "no caller could authenticate (no basic users, no certificates)"
            )
        self.app = app
        self.signer = signer
        self.issuer = issuer
        self.grants = {g.api.name: g for g in grants}
        self.basic = basic
        self.resolver = resolver
        self.paths = (issuer.path, issuer.jwks_path)
        self._jwks = json.dumps(signer.jwks(), separators=(",", ":")).encode()
        self._service = ApiConfig(name="apikey-issuer", context=issuer.path)  # whom basic users are checked for
        challenges = []
        if basic is not None:
            challenges.append(basic.challenge)
        if resolver is not None:
            challenges.append('Mutual realm="asgi-apim"')
        self.challenge = ", ".join(challenges)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        try:
            if scope["method"] not in ("GET", "HEAD"):
                raise MethodNotAllowed("use GET", headers={"allow": "GET, HEAD"})
            if scope["path"] == self.issuer.jwks_path:
                await _answer(scope, send, self._jwks, b"application/json", b"public, max-age=300")
                return
            body, kind = await self._issue(scope)
        except RequestError as exc:
            await reject(scope, send, exc)
            return
        await _answer(scope, send, body, kind, b"no-store")

    async def _issue(self, scope: Scope) -> tuple[bytes, bytes]:
        subject = await self._caller(scope)
        names, validity = self._query(scope)
        grants = [self.grants[n] for n in names] if names else list(self.grants.values())
        claims = self.signer.claims(grants, subject=subject, tier=self.issuer.tier, validity=validity)
        token: str = await anyio.to_thread.run_sync(self.signer.sign, claims)  # RSA signs in milliseconds
        logger.info(
            "API key %s issued to %r for %s, valid %d s",
            claims["jti"],
            subject,
            ", ".join(g.api.name for g in grants),
            validity,
        )
        accept = next((v for k, v in scope["headers"] if k == b"accept"), b"")
        if b"application/json" in accept:
            doc = {"apikey": token, "validityTime": validity}
            return json.dumps(doc, separators=(",", ":")).encode(), b"application/json"
        return token.encode(), b"text/plain; charset=utf-8"

    async def _caller(self, scope: Scope) -> str:
        """Who asks: the basic user (when an ``Authorization: Basic`` is sent), else the trusted
        certificate's subject. Raises the 401 (or a malformed certificate header's 400)."""
        headers = {"www-authenticate": self.challenge}
        basic = self.basic
        if basic is not None:
            credential = basic.credential(scope)
            if credential is not None:
                principal = await basic.authenticate(credential, self._service, scope)
                return principal.subject
        if self.resolver is not None:
            outcome = self.resolver.resolve(scope)
            verdict = outcome.verdict
            if outcome.error is not None:
                raise outcome.error.again()
            if verdict is not None:
                if verdict.reason is None:
                    return verdict.subject
                raise CertificateRejected(f"client certificate refused: {verdict.reason}", headers=headers)
        raise MissingCredentials("authenticate with basic credentials or a client certificate", headers=headers)

    def _query(self, scope: Scope) -> tuple[list[str], int]:
        raw: bytes = scope.get("query_string", b"")
        if len(raw) > _MAX_QUERY:
            raise BadRequest("the query string is too long")
        names: list[str] = []
        validity = self.issuer.validity
        for name, value in parse_qsl(raw.decode("latin-1"), keep_blank_values=True):
            if name == "api":
                if value not in self.grants:
                    raise BadRequest(f"this service issues no keys for API {value!r}")
                if value not in names:
                    names.append(value)
            elif name == "validity":
                if not value.isdigit() or not 0 < int(value) <= self.issuer.validity:
                    raise BadRequest(f"validity must be a whole number of seconds from 1 to {self.issuer.validity}")
                validity = int(value)
            else:
                raise BadRequest(f"unknown query parameter {name!r} (api, validity)")
        return names, validity


async def _answer(scope: Scope, send: Send, body: bytes, kind: bytes, cache: bytes) -> None:
    headers = [(b"content-type", kind), (b"content-length", str(len(body)).encode()), (b"cache-control", cache)]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})


def mount(app: ASGIApp, config: Config, resolver: CertificateResolver | None = None) -> ASGIApp:
    """``app`` with the token service in front of it; ``app`` itself when it is off."""
    issuer = config.api_keys.issuer
    if not issuer.enabled:
        return app
    basic = BasicAuthenticator.from_config(config) if config.basic_auth.users_file is not None else None
    service = ApiKeyService(
        app, signer=Signer.from_config(config), issuer=issuer, grants=grants_for(config), basic=basic, resolver=resolver
    )
    logger.info("API-key token service at %s, its JWKS at %s", issuer.path, issuer.jwks_path)
    return service
