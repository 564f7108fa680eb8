"""The per-API keys read before and around the security stage: version, CORS, transports, interceptors.

`asgi_apim.config` calls these for each ``[[apis]]`` table; like `asgi_apim.gateway_config`,
everything reads one `Table`, so a bad value is one `ConfigError` naming the key.

==============================  ==================  =================================================
key                             default             meaning
==============================  ==================  =================================================
``version``                     (none)              the context becomes ``/context/version`` (or fills ``{version}``)
``default_version``             false               also serve the unversioned context (WSO2's default version)
``transports``                  ["http", "https"]   ``["https"]``: a plain-HTTP request is refused (403)
``[apis.cors]``                 (none)              CORS for this API (see `CorsConfig`)
``interceptors``                []                  ``"module:function"``: async request interceptors, in order
``response_interceptors``       []                  the same, called on the response start
==============================  ==================  =================================================
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from asgi_apim._schema import Table, plain_path
from asgi_apim.errors import ConfigError

TRANSPORTS = ("http", "https")
CORS_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "*")
# WSO2 API Manager's defaults for an API's CORS configuration
WSO2_CORS_METHODS = ("GET", "PUT", "POST", "DELETE", "PATCH", "OPTIONS")
WSO2_CORS_HEADERS = ("authorization", "Access-Control-Allow-Origin", "Content-Type", "SOAPAction", "apikey")
_ORIGIN = re.compile(r"^https?://[A-Za-z0-9.\-\[\]:]+$")
_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")
_CALLABLE = re.compile(
    r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$"
)
VERSION_FIELD = "{version}"


@dataclass(frozen=True)
class CorsConfig:
    """``[apis.cors]`` (or ``x-wso2-cors``): Starlette's `CORSMiddleware` arguments for one API."""

    allow_origins: tuple[str, ...]
    allow_methods: tuple[str, ...] = WSO2_CORS_METHODS
    allow_headers: tuple[str, ...] = WSO2_CORS_HEADERS
    allow_credentials: bool = False
    expose_headers: tuple[str, ...] = ()
    max_age: int = 600


@dataclass(frozen=True)
class Contexts:
    """An API's context with its version applied, the context without it, and whether that is served too."""

    context: str
    version: str | None
    unversioned: str | None
    default_version: bool = False


def _prefix(key: str, value: str) -> str:
    if not plain_path(value):
        raise ConfigError(
            key,
            f"{value!r} must be an absolute path such as /pets (no query, template, space or dot-segment:"
            " it could never be matched)",
        )
    return value.rstrip("/") or "/"


def parse_contexts(t: Table) -> Contexts:
    """``context``, ``version`` and ``default_version``: the context becomes ``/context/version``
    unless it holds ``{version}``, which the version fills."""
    raw: str = t.str("context", required=True)
    version = t.str("version")
    default = t.bool("default_version", False)
    if version is not None and (not version or "/" in version or not plain_path("/" + version)):
        raise ConfigError(t._k("version"), f"{version!r} must be one path segment such as 1.0.0 or v2")
    if version is None:
        if VERSION_FIELD in raw:
            raise ConfigError(t._k("context"), "holds {version} but the API has no version")
        if default:
            raise ConfigError(t._k("default_version"), "needs a version")
        return Contexts(_prefix(t._k("context"), raw), None, None)
    if VERSION_FIELD in raw:
        if raw.count(VERSION_FIELD) != 1:
            raise ConfigError(t._k("context"), "holds {version} more than once")
        full = raw.replace(VERSION_FIELD, version)
        base = raw.replace("/" + VERSION_FIELD, "") or "/"
    else:
        full = raw.rstrip("/") + "/" + version
        base = raw
    context = _prefix(t._k("context"), full)
    return Contexts(context, version, _prefix(t._k("context"), base), default)


def parse_transports(t: Table) -> tuple[str, ...]:
    transports = t.strs("transports", TRANSPORTS, choices=TRANSPORTS)
    if not transports:
        raise ConfigError(t._k("transports"), "lists no transport: nothing could reach the API")
    return tuple(dict.fromkeys(transports))


def parse_callables(t: Table, name: str) -> tuple[str, ...]:
    values = t.strs(name)
    for i, v in enumerate(values):
        if not _CALLABLE.match(v):
            raise ConfigError(f"{t._k(name)}[{i}]", f"{v!r} is not module:function (such as myapp.hooks:add_header)")
    return values


def parse_cors(t: Table) -> CorsConfig | None:
    if not t.has("cors"):
        return None
    c = t.table("cors")
    origins = c.strs("allow_origins")
    if not origins:
        raise ConfigError(f"{c.key}.allow_origins", "must list at least one origin (or '*')")
    for i, o in enumerate(origins):
        if o != "*" and not _ORIGIN.match(o.rstrip("/")):
            raise ConfigError(f"{c.key}.allow_origins[{i}]", f"{o!r} is not an origin such as https://app.example")
    methods = tuple(m.upper() for m in c.strs("allow_methods", WSO2_CORS_METHODS))
    for m in methods:
        if m not in CORS_METHODS:
            raise ConfigError(f"{c.key}.allow_methods", f"{m!r} is not an HTTP method")
    headers = c.strs("allow_headers", WSO2_CORS_HEADERS)
    expose = c.strs("expose_headers")
    for key, names in (("allow_headers", headers), ("expose_headers", expose)):
        for h in names:
            if h != "*" and not _TOKEN.fullmatch(h):
                raise ConfigError(f"{c.key}.{key}", f"{h!r} is not a header name")
    cors = CorsConfig(
        allow_origins=tuple(o.rstrip("/") for o in origins),
        allow_methods=methods,
        allow_headers=headers,
        allow_credentials=c.bool("allow_credentials", False),
        expose_headers=expose,
        max_age=c.integer("max_age", 600, maximum=86400),
    )
    c.done()
    return cors
