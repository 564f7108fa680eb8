"""``[[apis]]``: one API's keys, read into a frozen `ApiConfig` (with its resources, its security and
its certificates), from TOML or from the OpenAPI document its ``definition`` names (`load_definition`).
`asgi_apim.config` reads the rest of the file and calls `parse_api` for each API."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asgi_apim._schema import Table
from asgi_apim.definitions import load_definition
from asgi_apim.edge_config import CorsConfig, parse_callables, parse_contexts, parse_cors, parse_transports
from asgi_apim.errors import ConfigError
from asgi_apim.gateway_config import (
    BackendConfig,
    BackendSecurityConfig,
    GatewayApiConfig,
    parse_gateway,
    parse_resource_backends,
)

logger = logging.getLogger("asgi_apim.config")

MUTUAL_SSL_MODES = ("mandatory", "optional", "disabled")
APPLICATION_SCHEMES = ("oauth2", "api_key", "basic")
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


@dataclass(frozen=True)
class SecurityConfig:
    mutual_ssl: str = "disabled"
    application: tuple[str, ...] = ("oauth2",)
    application_mandatory: bool = True
    # where this API's (or resource's) credentials are read; None: the global [api_keys] / Authorization,
    # "" (API keys): not read from that place at all
    api_key_header: str | None = None
    api_key_query: str | None = None
    auth_header: str | None = None

    @property
    def located(self) -> bool:
        """Whether a credential is read from somewhere else than the global places."""
        return self.api_key_header is not None or self.api_key_query is not None or self.auth_header is not None


@dataclass(frozen=True)
class CertificateRegistration:
    alias: str
    certificate: Path
    tier: str = "Unlimited"
    api: str = ""


@dataclass(frozen=True)
class ResourceConfig:
    path: str
    methods: tuple[str, ...] = ()
    scopes: tuple[str, ...] = ()
    tier: str | None = None
    security: SecurityConfig | None = None
    public: bool = False
    interceptors: tuple[str, ...] | None = None  # None: the API's
    response_interceptors: tuple[str, ...] | None = None
    backend: BackendConfig | None = None  # gateway mode: this resource's own; None: the API's
    sandbox_backend: BackendConfig | None = None


@dataclass(frozen=True)
class ApiConfig:
    name: str
    context: str
    backend: BackendConfig | None = None  # gateway mode: see asgi_apim.gateway_config
    tier: str = "Unlimited"
    security: SecurityConfig = field(default_factory=SecurityConfig)
    certificates: tuple[CertificateRegistration, ...] = ()
    resources: tuple[ResourceConfig, ...] = ()
    backend_security: BackendSecurityConfig | None = None
    # None: only registered certificates (exact, or issued by a registered CA) pass, as in WSO2;
    # a tier name: any certificate the truststore validates also passes, at that tier
    truststore_tier: str | None = None
    # True: the credential that authenticated a request also reaches the app or backend
    forward_credentials: bool = False
    gateway: GatewayApiConfig = field(default_factory=GatewayApiConfig)  # every gateway key, backend included
    version: str | None = None
    unversioned_context: str | None = None  # with a version: the context without it
    default_version: bool = False  # also serve unversioned_context (WSO2's default version)
    transports: tuple[str, ...] = ("http", "https")
    cors: CorsConfig | None = None
    interceptors: tuple[str, ...] = ()  # "module:function", async request interceptors
    response_interceptors: tuple[str, ...] = ()
    definition: Path | None = None  # the OpenAPI document it was read from, if any

    @property
    def contexts(self) -> tuple[str, ...]:
        """The path prefixes the API owns: its (versioned) context, and the default version's."""
        if self.default_version and self.unversioned_context is not None:
            return (self.context, self.unversioned_context)
        return (self.context,)


def _optional_name(t: Table, name: str) -> str | None:
    """None for a key left out; `ConfigError` for one given as an empty string (it would read as left out)."""
    value = t.str(name)
    if value == "":
        raise ConfigError(t._k(name), "is empty: name one, or leave the key out")
    return value


def _location(t: Table, name: str, header: bool) -> str | None:
    """A credential's own header or query parameter name; "" (API keys): not read there."""
    value = t.str(name)
    if value and header:
        value = t.header_name(name, value).lower()
    return value


def _security(t: Table) -> SecurityConfig:
    mutual = t.str("mutual_ssl", "disabled", choices=MUTUAL_SSL_MODES)
    sec = SecurityConfig(
        mutual_ssl=mutual,
        application=t.strs("application", ("oauth2",) if mutual == "disabled" else (), choices=APPLICATION_SCHEMES),
        application_mandatory=t.bool("application_mandatory", mutual != "mandatory"),
        api_key_header=_location(t, "api_key_header", True),
        api_key_query=_location(t, "api_key_query", False),
        auth_header=_location(t, "auth_header", True),
    )
    if sec.auth_header == "":
        raise ConfigError(f"{t.key}.auth_header", "is empty: name a header, or leave the key out")
    if sec.api_key_header == "" and sec.api_key_query == "":
        raise ConfigError(f"{t.key}.api_key_query", "and api_key_header are both empty: no API key could be read")
    t.done()
    if mutual != "mandatory" and not sec.application:
        raise ConfigError(
            f"{t.key}.application", "lists no scheme and mutual_ssl is not mandatory: nothing would be checked"
        )
    if sec.application_mandatory and not sec.application:
        raise ConfigError(f"{t.key}.application", "application_mandatory is true but no scheme is listed")
    return sec


SCOPED_SCHEMES = ("oauth2", "api_key")  # basic credentials carry no scopes


def _check_scopes_reachable(r: Table, resource: ResourceConfig, api_security: SecurityConfig) -> None:
    """A scoped resource that only basic credentials could open would refuse every request (403)."""
    security = resource.security or api_security
    certificate_alone = security.mutual_ssl != "disabled" and not security.application_mandatory
    if resource.scopes and not certificate_alone and not set(security.application) & set(SCOPED_SCHEMES):
        raise ConfigError(
            f"{r.key}.scopes",
            "no scheme of this resource carries scopes (basic credentials have none), so every request"
            " would be refused: add oauth2 or api_key to its application, or remove the scopes",
        )


Resolve = Callable[[Any, str], Any]  # (raw value, key) -> the value: $env{}, $secret{}, ciphertexts


def _unresolved(value: Any, key: str) -> Any:
    return value


def _with_definition(t: Table, resolve: Resolve) -> Table:
    """The API table ``t`` over the OpenAPI document its ``definition`` names: each key of ``t`` replaces
    the definition's (logged), and the result is read as if it had been written in TOML."""
    path = t.path("definition", required=True)
    mapped = load_definition(path, resolve)
    merged = dict(mapped)
    for key, value in t.raw.items():
        if key == "definition":
            continue
        if key in mapped:
            logger.info("%s.%s overrides what %s gives", t.key, key, path.name)
        merged[key] = value
    return Table(merged, t.key, t.base)


def parse_api(t: Table, forward_credentials: bool = False, resolve: Resolve | None = None) -> ApiConfig:
    definition = t.path("definition")
    if definition is None:
        return _read_api(t, forward_credentials, None)
    merged = _with_definition(t, resolve or _unresolved)
    try:
        return _read_api(merged, forward_credentials, definition)
    except ConfigError as exc:  # a value the definition gave (not a TOML key beside it): say where it came from
        own = exc.key[len(t.key) + 1 :].split(".")[0].split("[")[0] if exc.key.startswith(t.key + ".") else ""
        if not own or own in t.raw:
            raise
        message = str(exc)[len(exc.key) + 2 :]
        raise ConfigError(exc.key, f"{message} (given by {definition})") from None


def _read_api(t: Table, forward_credentials: bool, definition: Path | None) -> ApiConfig:
    name = t.str("name", required=True)
    contexts = parse_contexts(t)
    context = contexts.context
    gateway = parse_gateway(t)
    tier = t.str("tier", "Unlimited", required=True)
    truststore_tier = _optional_name(t, "truststore_tier")
    security = _security(t.table("security"))
    certificates = []
    for c in t.tables("certificates"):
        certificates.append(
            CertificateRegistration(
                alias=c.str("alias", required=True),
                certificate=c.path("certificate", required=True),
                tier=c.str("tier", "Unlimited", required=True),
                api=name,
            )
        )
        c.done()
    aliases = [c.alias for c in certificates]
    if len(set(aliases)) != len(aliases):
        raise ConfigError(f"{t.key}.certificates", "aliases must be unique within an API")
    resources = []
    for r in t.tables("resources"):
        path = r.path_template("path")
        backend, sandbox_backend = parse_resource_backends(r)
        if gateway.backend is None and (backend or sandbox_backend):
            raise ConfigError(
                r._k("backend" if backend else "sandbox_backend"),
                "needs a backend on the API too (it serves the requests no resource of its own routes)",
            )
        resources.append(
            ResourceConfig(
                path=path,
                methods=tuple(m.upper() for m in r.strs("methods")),
                scopes=r.strs("scopes"),
                tier=_optional_name(r, "tier"),
                security=_security(r.table("security")) if r.has("security") else None,
                public=r.bool("public", False),
                interceptors=parse_callables(r, "interceptors") if r.value("interceptors") is not None else None,
                response_interceptors=(
                    parse_callables(r, "response_interceptors")
                    if r.value("response_interceptors") is not None
                    else None
                ),
                backend=backend,
                sandbox_backend=sandbox_backend,
            )
        )
        for m in resources[-1].methods:
            if m not in HTTP_METHODS:
                raise ConfigError(f"{r.key}.methods", f"{m!r} is not an HTTP method")
        if resources[-1].public and resources[-1].security is not None:
            raise ConfigError(
                f"{r.key}.security", "is set on a public resource, which checks nothing: one or the other"
            )
        _check_scopes_reachable(r, resources[-1], security)
        r.done()
    forward_credentials = t.bool("forward_credentials", forward_credentials)
    transports = parse_transports(t)
    cors = parse_cors(t)
    interceptors = parse_callables(t, "interceptors")
    response_interceptors = parse_callables(t, "response_interceptors")
    t.done()
    return ApiConfig(
        name=name,
        context=context,
        backend=gateway.backend,
        tier=tier,
        security=security,
        certificates=tuple(certificates),
        resources=tuple(resources),
        backend_security=gateway.backend_security,
        truststore_tier=truststore_tier,
        forward_credentials=forward_credentials,
        gateway=gateway,
        version=contexts.version,
        unversioned_context=contexts.unversioned,
        default_version=contexts.default_version,
        transports=transports,
        cors=cors,
        interceptors=interceptors,
        response_interceptors=response_interceptors,
        definition=definition,
    )
