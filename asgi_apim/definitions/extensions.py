"""WSO2's ``x-wso2-*`` extensions that are not security: endpoints, CORS, transports, interceptors,
each mapped to the keys an ``[[apis]]`` table would hold."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from asgi_apim._schema import backend_url_problem
from asgi_apim.definitions.document import Document, printable

Resolve = Callable[[Any, str], Any]  # (raw value, key) -> the value: $env{}, $secret{}, ciphertexts

API_EXTENSIONS = frozenset(
    {
        "x-wso2-basePath",
        "x-wso2-production-endpoints",
        "x-wso2-sandbox-endpoints",
        "x-wso2-endpoints",
        "x-wso2-throttling-tier",
        "x-wso2-disable-security",
        "x-wso2-application-security",
        "x-wso2-mutual-ssl",
        "x-wso2-auth-header",
        "x-wso2-transports",
        "x-wso2-cors",
        "x-wso2-request-interceptor",
        "x-wso2-response-interceptor",
    }
)
OPERATION_EXTENSIONS = frozenset(
    {
        "x-wso2-production-endpoints",
        "x-wso2-sandbox-endpoints",
        "x-wso2-throttling-tier",
        "x-wso2-disable-security",
        "x-wso2-application-security",
        "x-wso2-mutual-ssl",
        "x-wso2-auth-header",
        "x-wso2-request-interceptor",
        "x-wso2-response-interceptor",
    }
)
_ENDPOINT_KEYS = frozenset({"urls", "type", "securityConfig"})
_REF = "#/x-wso2-endpoints/"
# x-wso2-cors as the Microgateway writes it, and as WSO2 API Manager exports it
_CORS_KEYS = {
    "access-control-allow-origins": "allow_origins",
    "access-control-allow-methods": "allow_methods",
    "access-control-allow-headers": "allow_headers",
    "access-control-allow-credentials": "allow_credentials",
    "access-control-expose-headers": "expose_headers",
    "access-control-max-age": "max_age",
    "accessControlAllowOrigins": "allow_origins",
    "accessControlAllowMethods": "allow_methods",
    "accessControlAllowHeaders": "allow_headers",
    "accessControlAllowCredentials": "allow_credentials",
    "accessControlExposeHeaders": "expose_headers",
    "accessControlMaxAge": "max_age",
}


def check_known(doc: Document, node: Mapping[str, Any], where: str, known: frozenset[str]) -> None:
    """An ``x-wso2-*`` key this gateway does not read stops start-up: it would be silently ignored."""
    for key in node:
        if key.startswith("x-wso2-") and key not in known:
            raise doc.error(f"{where}/{key}", "is not an x-wso2 extension this gateway supports")


def _named_endpoints(doc: Document) -> dict[str, tuple[Any, str]]:
    """``x-wso2-endpoints``: a list of one-entry objects (the Microgateway's form) or one object."""
    raw = doc.data.get("x-wso2-endpoints")
    if raw is None:
        return {}
    entries: list[tuple[str, Any, str]] = []
    if isinstance(raw, Mapping):
        entries = [(k, v, f"/x-wso2-endpoints/{k}") for k, v in raw.items()]
    elif isinstance(raw, list):
        for i, item in enumerate(raw):
            if not isinstance(item, Mapping) or len(item) != 1:
                raise doc.error(f"/x-wso2-endpoints/{i}", "must be an object with one entry: name: {urls, ...}")
            ((k, v),) = item.items()
            entries.append((k, v, f"/x-wso2-endpoints/{i}/{k}"))
    else:
        raise doc.error("/x-wso2-endpoints", "must be a list of named endpoints")
    named: dict[str, tuple[Any, str]] = {}
    for k, v, at in entries:
        if k in named:
            raise doc.error(at, f"names the endpoint {k!r} twice")
        named[k] = (v, at)
    return named


def endpoint(doc: Document, value: Any, where: str, resolve: Resolve) -> tuple[Any, dict[str, Any] | None]:
    """An ``x-wso2-*-endpoints`` value (or a ``#/x-wso2-endpoints/<name>`` reference) as a ``backend``
    value and its ``backend_security`` table (None without ``securityConfig``)."""
    if isinstance(value, str):
        if not value.startswith(_REF):
            raise doc.error(where, f"{value!r} is not a reference {_REF}<name>")
        found = _named_endpoints(doc).get(value[len(_REF) :])
        if found is None:
            raise doc.error(where, f"the reference {value!r} does not resolve")
        value, where = found
    if not isinstance(value, Mapping):
        raise doc.error(where, "must be an object with urls (or a reference #/x-wso2-endpoints/<name>)")
    unknown = sorted(set(value) - _ENDPOINT_KEYS)
    if unknown:
        raise doc.error(f"{where}/{unknown[0]}", "is not a key of an endpoint (urls, type, securityConfig)")
    urls = value.get("urls")
    if not isinstance(urls, list) or not urls or not all(isinstance(u, str) for u in urls):
        raise doc.error(f"{where}/urls", "must list at least one URL")
    for i, url in enumerate(urls):
        problem = backend_url_problem(url)
        if problem is not None:
            raise doc.error(f"{where}/urls/{i}", problem)
    kind = value.get("type", "load_balance" if len(urls) > 1 else "http")
    if kind not in ("http", "load_balance", "failover"):
        raise doc.error(f"{where}/type", f"{kind!r} must be load_balance or failover (or http: one URL)")
    if kind == "http" and len(urls) > 1:
        raise doc.error(f"{where}/type", "is http (one URL) but several are listed: load_balance or failover")
    backend: Any = urls[0] if kind == "http" else {"type": kind, "urls": list(urls)}
    security = None
    if "securityConfig" in value:
        security = _security_config(doc, value["securityConfig"], f"{where}/securityConfig", resolve)
    return backend, security


def _security_config(doc: Document, value: Any, where: str, resolve: Resolve) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise doc.error(where, "must be an object with type, username and password")
    unknown = sorted(set(value) - {"type", "username", "password"})
    if unknown:
        raise doc.error(f"{where}/{unknown[0]}", "is not a key of securityConfig (type, username, password)")
    if str(value.get("type", "basic")).lower() != "basic":
        raise doc.error(f"{where}/type", "only basic backend security is supported")
    for key in ("username", "password"):
        if not isinstance(value.get(key), str) or not value[key]:
            raise doc.error(f"{where}/{key}", "is required")
    # the password is written as in deployment.toml: an asgi-apim encrypt ciphertext or $secret{NAME}
    password = resolve(value["password"], printable(f"{doc.path}#{where}/password"))
    return {"type": "basic", "username": value["username"], "password": password}


def cors(doc: Document, value: Any, where: str) -> dict[str, Any] | None:
    """``x-wso2-cors`` as an ``[apis.cors]`` table (None when it is switched off)."""
    if not isinstance(value, Mapping):
        raise doc.error(where, "must be an object")
    table: dict[str, Any] = {}
    for key, v in value.items():
        if key in ("corsConfigurationEnabled", "enabled"):
            if not isinstance(v, bool):
                raise doc.error(f"{where}/{key}", "must be true or false")
            if not v:
                return None
            continue
        name = _CORS_KEYS.get(key)
        if name is None:
            raise doc.error(f"{where}/{key}", "is not a key of x-wso2-cors")
        if name in table:
            raise doc.error(f"{where}/{key}", f"repeats {name} under another spelling")
        table[name] = v
    return table


def callables(doc: Document, value: Any, where: str) -> list[str]:
    """An interceptor extension: one ``module:function`` or a list of them."""
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not all(isinstance(v, str) and ":" in v for v in values):
        raise doc.error(where, "must be module:function (or a list of them)")
    return list(values)


def transports(doc: Document, value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not value or not all(v in ("http", "https") for v in value):
        raise doc.error(where, "must list http and/or https")
    return list(value)
