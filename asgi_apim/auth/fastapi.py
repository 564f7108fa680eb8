"""FastAPI helpers: read the principal, require scopes, document security in OpenAPI.

``current_principal`` and ``require_scopes`` are dependencies over what the
asgi-apim stack left in ``scope["user"]``; they answer 401 (900902) and 403
(900910) as ``HTTPException`` subclasses, rendered as problem+json once
`install_problem_handler` (or `install_openapi`) has run, and as FastAPI's
plain JSON otherwise. As in WSO2, a caller admitted by mutual SSL alone is not
subject to scopes.

`install_openapi` adds ``components.securitySchemes`` (``mutualTLS``,
``bearerAuth``, ``basicAuth``, ``apiKey``/``apiKeyQuery``) and, for every
operation under an API's context, the security requirements its
``[apis.security]`` (or its resource's) imposes, so ``/docs`` shows how each
API is secured. Only this module imports FastAPI.
"""

import os
from collections.abc import Callable
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import Response

from asgi_apim.auth.base import DEFAULT_REALM, schemes_in_use
from asgi_apim.config import SCOPED_SCHEMES, Config, SecurityConfig, load_config
from asgi_apim.errors import MissingCredentials, RequestError, ScopeMismatch, problem_body
from asgi_apim.identity import Principal
from asgi_apim.routing import Router

_APP_SCHEMES = {"oauth2": ("bearerAuth",), "basic": ("basicAuth",), "api_key": ("apiKey", "apiKeyQuery")}
_SCOPED = frozenset(SCOPED_SCHEMES)
_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


class APIMHTTPException(HTTPException):
    """An asgi-apim `RequestError` raised from a FastAPI dependency."""

    def __init__(self, error: RequestError) -> None:
        super().__init__(status_code=error.status, detail=error.detail, headers=error.headers or None)
        self.error = error


def current_principal(request: Request) -> Principal:
    """The authenticated caller, or 401 (code 900902)."""
    user = request.scope.get("user")
    if isinstance(user, Principal):
        return user
    raise APIMHTTPException(
        MissingCredentials(
            "this resource needs an authenticated caller",
            headers={"www-authenticate": f'Bearer realm="{DEFAULT_REALM}"'},
        )
    )


def require_scopes(*scopes: str) -> Callable[..., Principal]:
    """A dependency that passes when the caller holds every scope in ``scopes`` (403, code 900910, otherwise)."""
    needed = frozenset(scopes)

    def dependency(principal: Principal = Depends(current_principal)) -> Principal:
        if set(principal.methods or (principal.method,)) == {"mutual_ssl"}:
            return principal
        missing = needed.difference(principal.scopes)
        if missing:
            raise APIMHTTPException(ScopeMismatch(f"missing scope(s): {', '.join(sorted(missing))}"))
        return principal

    dependency.__name__ = f"require_scopes({', '.join(scopes)})"
    return dependency


async def _problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, APIMHTTPException)
    return Response(
        problem_body(exc.error, request.url.path),
        status_code=exc.status_code,
        headers=exc.headers,
        media_type="application/problem+json",
    )


def install_problem_handler(app: FastAPI) -> None:
    """Render `APIMHTTPException` as RFC 9457 problem+json with WSO2's code."""
    app.add_exception_handler(APIMHTTPException, _problem)


def _config(config: Config | str | os.PathLike[str]) -> Config:
    return config if isinstance(config, Config) else load_config(config)


def _securities(config: Config) -> list[SecurityConfig]:
    found = []
    for api in config.apis:
        found.append(api.security)
        found.extend(r.security for r in api.resources if r.security is not None)
    return found


def security_schemes(config: Config | str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """OpenAPI ``components.securitySchemes`` for the schemes the configuration uses."""
    config = _config(config)
    used = schemes_in_use(config)
    schemes: dict[str, dict[str, Any]] = {}
    if any(s.mutual_ssl != "disabled" for s in _securities(config)):
        schemes["mutualTLS"] = {
            "type": "mutualTLS",
            "description": "Client certificate, on the TLS connection or in the "
            f"{config.mutual_ssl.certificate_header} header of a trusted proxy.",
        }
    if "oauth2" in used:
        issuers = ", ".join(km.issuer for km in config.key_managers)
        schemes["bearerAuth"] = {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": f"OAuth2 access token from: {issuers}.",
        }
    if "basic" in used:
        schemes["basicAuth"] = {"type": "http", "scheme": "basic"}
    if "api_key" in used:
        schemes["apiKey"] = {
            "type": "apiKey",
            "in": "header",
            "name": config.api_keys.header,
            "description": "asgi-apim apikey issue",
        }
        if config.api_keys.query_param:
            schemes["apiKeyQuery"] = {"type": "apiKey", "in": "query", "name": config.api_keys.query_param}
    for security in _securities(config):  # an API's or resource's own credential places
        for name, scheme in _located_schemes(security).items():
            schemes[name] = scheme
    return schemes


def _located_schemes(security: SecurityConfig) -> dict[str, dict[str, Any]]:
    """The schemes of the places ``security`` reads its credentials from, where they are its own."""
    found: dict[str, dict[str, Any]] = {}
    if "api_key" in security.application:
        if security.api_key_header:
            found[f"apiKey.{security.api_key_header}"] = {
                "type": "apiKey",
                "in": "header",
                "name": security.api_key_header,
            }
        if security.api_key_query:
            found[f"apiKeyQuery.{security.api_key_query}"] = {
                "type": "apiKey",
                "in": "query",
                "name": security.api_key_query,
            }
    if "oauth2" in security.application and security.auth_header:
        found[f"bearerAuth.{security.auth_header}"] = {
            "type": "apiKey",
            "in": "header",
            "name": security.auth_header,
            "description": "OAuth2 access token, as Bearer <token>.",
        }
    return found


def _scheme_names(security: SecurityConfig, scheme: str) -> tuple[str, ...]:
    """The OpenAPI scheme names of one application scheme of ``security``."""
    if scheme == "api_key" and (security.api_key_header is not None or security.api_key_query is not None):
        header = security.api_key_header
        query = security.api_key_query
        return (
            *(("apiKey",) if header is None else (f"apiKey.{header}",) if header else ()),
            *(("apiKeyQuery",) if query is None else (f"apiKeyQuery.{query}",) if query else ()),
        )
    if scheme == "oauth2" and security.auth_header:
        return (f"bearerAuth.{security.auth_header}",)
    return _APP_SCHEMES[scheme]


def security_requirements(
    security: SecurityConfig, scopes: tuple[str, ...] = (), available: frozenset[str] | None = None
) -> list[dict[str, list[str]]]:
    """OpenAPI security requirements (alternatives) for one ``[apis.security]``.

    On a resource with ``scopes``, only the schemes whose credential can carry them are
    listed, with the scopes: an OAuth2 token, and an API key issued with ``--scope``
    (OpenAPI 3.1 lets a non-OAuth2 requirement name the roles it needs). Basic credentials
    carry none and could never pass, so they are left out. Where the certificate decides
    alone (``mutual_ssl`` without ``application_mandatory``), scopes do not apply to it, as
    in WSO2, and ``mutualTLS`` stays a requirement of its own.
    """
    app: list[dict[str, list[str]]] = []
    listed = [s for s in security.application if s in _SCOPED] if scopes else security.application
    for scheme in listed or security.application:  # none can: refused by load_config, never documented as open
        for name in _scheme_names(security, scheme):
            if available is None or name in available:
                app.append({name: list(scopes)})
    if security.mutual_ssl == "mandatory":
        return [{"mutualTLS": [], **r} for r in app] if security.application_mandatory else [{"mutualTLS": []}]
    if security.mutual_ssl == "optional" and not security.application_mandatory:
        return [{"mutualTLS": []}, *app]
    return app


def apply_security(schema: dict[str, Any], config: Config) -> dict[str, Any]:
    """Add schemes and per-operation requirements to an OpenAPI document, in place."""
    schemes = security_schemes(config)
    if schemes:
        schema.setdefault("components", {}).setdefault("securitySchemes", {}).update(schemes)
    router = Router.from_config(config)
    available = frozenset(schemes)
    for path, item in schema.get("paths", {}).items():
        for method, operation in item.items():
            if method not in _METHODS or not isinstance(operation, dict):
                continue
            route = router.match(method.upper(), path)
            if route.public and route.api is not None:
                operation["security"] = []
            if route.api is None or route.public:
                continue
            resource = route.resource
            security = (
                resource.security if resource is not None and resource.security is not None else route.api.security
            )
            operation["security"] = security_requirements(security, resource.scopes if resource else (), available)
    return schema


def install_openapi(app: FastAPI, config: Config | str | os.PathLike[str], *, problem_handler: bool = True) -> None:
    """Make ``app.openapi()`` (and so ``/docs``) show how each API is secured."""
    config = _config(config)
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None or not getattr(app, "_asgi_apim_security", False):
            schema = apply_security(original(), config)
            app.openapi_schema = schema
            app._asgi_apim_security = True  # type: ignore[attr-defined]  # FastAPI's own extension point: an attribute of the app
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's own extension point: an attribute of the app
    if problem_handler:
        install_problem_handler(app)
