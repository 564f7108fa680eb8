"""The admin API: the registry's operations as JSON endpoints, under their own credentials.

Off by default; ``[registry.admin] enabled = true`` mounts it at ``path``
(``/admin``) in front of the stack with `mount`. It never accepts the API
callers' credentials: a request passes with a client certificate whose SHA-256
fingerprint is in ``client_certificates`` (read from the TLS connection, the
ASGI TLS extension; never from a proxy header), or with HTTP basic credentials
matching ``username``/``password`` (write the password encrypted with
``asgi-apim encrypt``) or an entry of ``users_file`` (htpasswd, bcrypt; read
at start-up). Anything else: 401 problem+json.

=========  ===============================  =====================================
method     path (under ``path``)            does
=========  ===============================  =====================================
GET        /certificates[?api=NAME]         list (configuration and registry)
POST       /certificates                    add ``{"api", "alias", "tier", "certificate": PEM}``: 201
GET        /certificates/{api}/{alias}      one registration
PATCH      /certificates/{api}/{alias}      change the tier ``{"tier"}``
DELETE     /certificates/{api}/{alias}      remove: 204
=========  ===============================  =====================================

Refusals are problem+json: 400 (unknown API or tier, not a certificate, a
private key, bad JSON), 404, 409 (duplicate alias or certificate), 503 (the
database cannot be reached). Database work runs in a worker thread.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import secrets
from collections.abc import Callable
from typing import Any, ClassVar

import anyio.to_thread
import bcrypt
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, Router
from starlette.types import ASGIApp, Receive, Scope, Send

from asgi_apim.auth.basic import HtpasswdError, parse_htpasswd
from asgi_apim.certs.formats import pem_chain_to_der
from asgi_apim.config import Config, RegistryAdminConfig
from asgi_apim.errors import (
    BadRequest,
    CertificateFileError,
    CertificateHeaderError,
    ConfigError,
    InvalidCredentials,
    MissingCredentials,
    NotFound,
    RegistryError,
    RegistryNotFound,
    RegistryUnavailable,
    RegistryUsageError,
    RequestError,
    reject,
)
from asgi_apim.registry.feed import as_json
from asgi_apim.registry.operations import Listed, Registry

logger = logging.getLogger("asgi_apim.registry.admin")

MAX_BODY = 128 * 1024


class Conflict(RequestError):
    status: ClassVar[int] = 409
    title: ClassVar[str] = "Conflict"


class Unavailable(RequestError):
    status: ClassVar[int] = 503
    title: ClassVar[str] = "Registry Unavailable"


def _problem(exc: RegistryError) -> RequestError:
    if isinstance(exc, RegistryUsageError | CertificateFileError):
        return BadRequest(str(exc))
    if isinstance(exc, RegistryNotFound):
        return NotFound(str(exc))
    if isinstance(exc, RegistryUnavailable):
        return Unavailable("the certificate registry's database cannot be reached")
    return Conflict(str(exc))


def _users(admin: RegistryAdminConfig) -> dict[str, bytes]:
    if admin.users_file is None:
        return {}
    try:
        return parse_htpasswd(admin.users_file.read_text(), str(admin.users_file))
    except (OSError, UnicodeDecodeError, HtpasswdError) as exc:
        raise ConfigError("registry.admin.users_file", str(exc)) from None


class AdminCredentials:
    """The admin API's own credentials check (pure ASGI, around the admin routes)."""

    realm = "asgi-apim admin"

    def __init__(self, app: ASGIApp, admin: RegistryAdminConfig) -> None:
        self.app = app
        self.fingerprints = frozenset(admin.client_certificates)
        self.username = admin.username
        self.password = admin.password.encode() if admin.password is not None else None
        self.users = _users(admin)
        self.basic = self.username is not None or bool(self.users)
        self._dummy = bcrypt.hashpw(secrets.token_bytes(16), bcrypt.gensalt(rounds=10))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await reject(dict(scope), send, NotFound("the admin API answers HTTP only"))
            return
        try:
            who = await self._authenticate(scope)
        except RequestError as exc:
            await reject(dict(scope), send, exc)
            return
        scope = {**scope, "user": who}
        await self.app(scope, receive, send)

    def _challenge(self) -> dict[str, str]:
        return {"www-authenticate": f'Basic realm="{self.realm}"'} if self.basic else {}

    def _certificate(self, scope: Scope) -> str | None:
        tls = (scope.get("extensions") or {}).get("tls") or {}
        chain = tls.get("client_cert_chain")
        if not chain or not self.fingerprints:
            return None
        try:
            ders = pem_chain_to_der(tuple(chain))
        except CertificateHeaderError:
            return None
        fingerprint = hashlib.sha256(ders[0]).hexdigest() if ders else None
        return fingerprint if fingerprint in self.fingerprints else None

    async def _authenticate(self, scope: Scope) -> str:
        fingerprint = self._certificate(scope)
        if fingerprint is not None:
            return f"certificate:{fingerprint[:16]}"
        header = next((v for k, v in scope["headers"] if k == b"authorization"), None)
        if header is None or not self.basic:
            raise MissingCredentials("the admin API needs its own credentials", headers=self._challenge())
        scheme, _, encoded = header.partition(b" ")
        try:
            user, sep, password = base64.b64decode(encoded.strip(), validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            user, sep, password = "", "", ""
        if scheme.lower() != b"basic" or not sep or len(password) > 1024:
            raise InvalidCredentials("invalid admin credentials", headers=self._challenge())
        if await self._check(user, password.encode()):
            return user
        logger.warning("admin API: refused credentials for user %r", user)
        raise InvalidCredentials("invalid admin credentials", headers=self._challenge())

    async def _check(self, user: str, password: bytes) -> bool:
        if self.username is not None and self.password is not None and user == self.username:
            return hmac.compare_digest(password, self.password)
        hashed = self.users.get(user)
        ok = await anyio.to_thread.run_sync(bcrypt.checkpw, password, hashed or self._dummy)
        return ok and hashed is not None


def _listed(item: Listed) -> dict[str, Any]:
    return {**as_json(item.registration), "source": item.source}


class AdminAPI:
    """The routes over one `Registry`; every database call runs in a worker thread."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.router = Router(
            routes=[
                Route("/certificates", self.list, methods=["GET"]),
                Route("/certificates", self.add, methods=["POST"]),
                Route("/certificates/{api}/{alias}", self.one, methods=["GET"]),
                Route("/certificates/{api}/{alias}", self.update, methods=["PATCH"]),
                Route("/certificates/{api}/{alias}", self.remove, methods=["DELETE"]),
            ],
            default=self._not_found,
        )

    async def _not_found(self, scope: Scope, receive: Receive, send: Send) -> None:
        await reject(dict(scope), send, NotFound("the admin API has no such endpoint"))

    async def _run(self, request: Request, call: Callable[..., Any], *args: Any) -> Any:
        try:
            return await anyio.to_thread.run_sync(call, *args)
        except RegistryError as exc:
            if isinstance(exc, RegistryUnavailable):
                logger.warning("admin API: %s", exc)
            raise _problem(exc) from None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.router(scope, receive, send)
        except RequestError as exc:
            await reject(dict(scope), send, exc)

    async def _body(self, request: Request, *fields: str) -> dict[str, str]:
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
            raise BadRequest(f"the body must be a JSON object of at most {MAX_BODY // 1024} KiB")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY:
                raise BadRequest(f"the body must be a JSON object of at most {MAX_BODY // 1024} KiB")
        try:
            doc = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise BadRequest("the body is not JSON") from None
        if not isinstance(doc, dict):
            raise BadRequest("the body must be a JSON object")
        missing = [f for f in fields if not isinstance(doc.get(f), str)]
        if missing:
            raise BadRequest(f"the body needs string field(s): {', '.join(missing)}")
        return {f: doc[f] for f in fields}

    async def list(self, request: Request) -> Response:
        items = await self._run(request, self.registry.listing, request.query_params.get("api"))
        return JSONResponse([_listed(i) for i in items])

    async def one(self, request: Request) -> Response:
        api, alias = request.path_params["api"], request.path_params["alias"]
        items = await self._run(request, self.registry.listing, api)
        found = [_listed(i) for i in items if i.registration.alias == alias]
        if not found:
            raise NotFound(f"API {api!r} has no certificate registered with alias {alias!r}")
        return JSONResponse(found[0])

    async def add(self, request: Request) -> Response:
        doc = await self._body(request, "api", "alias", "tier", "certificate")
        reg = await self._run(
            request,
            self.registry.add,
            doc["api"],
            doc["alias"],
            doc["tier"],
            doc["certificate"].encode("utf-8"),
            "the certificate",
        )
        logger.info("admin API: %s registered %r for API %r", request.user, doc["alias"], doc["api"])
        return JSONResponse(as_json(reg), status_code=201)

    async def update(self, request: Request) -> Response:
        api, alias = request.path_params["api"], request.path_params["alias"]
        doc = await self._body(request, "tier")
        await self._run(request, self.registry.update, api, alias, doc["tier"])
        logger.info("admin API: %s set %r of API %r to tier %s", request.user, alias, api, doc["tier"])
        return JSONResponse({"api": api, "alias": alias, "tier": doc["tier"]})

    async def remove(self, request: Request) -> Response:
        api, alias = request.path_params["api"], request.path_params["alias"]
        await self._run(request, self.registry.remove, api, alias)
        logger.info("admin API: %s removed %r from API %r", request.user, alias, api)
        return Response(status_code=204)


class AdminMount:
    """Sends ``prefix`` and what is under it to the admin API, everything else (lifespan too) to ``app``."""

    def __init__(self, app: ASGIApp, admin: ASGIApp, prefix: str) -> None:
        self.app = app
        self.admin = admin
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            path: str = scope["path"]
            if path == self.prefix or path.startswith(self.prefix + "/"):
                await self.admin({**scope, "root_path": scope.get("root_path", "") + self.prefix}, receive, send)
                return
        await self.app(scope, receive, send)


def admin_app(config: Config, registry: Registry | None = None) -> ASGIApp:
    """The admin API of ``config`` (routes behind its credentials), not mounted."""
    return AdminCredentials(AdminAPI(registry or Registry(config)), config.registry.admin)


def mount(app: ASGIApp, config: Config) -> ASGIApp:
    """``app`` with the admin API in front of it at ``[registry.admin] path``; ``app`` itself when it is off."""
    if not config.registry.admin.enabled:
        return app
    logger.info("admin API mounted at %s", config.registry.admin.path)
    return AdminMount(app, admin_app(config), config.registry.admin.path)
