"""An OpenAPI document with WSO2's extensions -> the keys of one ``[[apis]]`` table.

`load_definition` answers a plain dict shaped as the TOML table would be (``name``, ``context``,
``version``, ``security``, ``resources``, ``backend``, ``cors`` ...); `asgi_apim.config` lays the
TOML keys written beside ``definition`` over it and reads the result as it reads any API, into the
same frozen `ApiConfig`. An operation's own endpoints become its resource's ``backend`` and
``sandbox_backend``. Every refusal names the file and the JSON pointer.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from asgi_apim.definitions.document import Document, pointer, read_document
from asgi_apim.definitions.extensions import (
    API_EXTENSIONS,
    OPERATION_EXTENSIONS,
    Resolve,
    callables,
    check_known,
    cors,
    endpoint,
    transports,
)
from asgi_apim.definitions.security import Extensions, route_security, schemes

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
_PARAM = re.compile(r"\{([^}]*)\}")
_NOT_NAME = re.compile(r"[^A-Za-z0-9_]")


def _context(doc: Document) -> str:
    """``x-wso2-basePath``, else Swagger's ``basePath``, else the path of the first server URL; a trailing
    ``/<info.version>`` becomes ``/{version}``, so the version is not appended a second time."""
    data = doc.data
    base = data.get("x-wso2-basePath")
    where = "/x-wso2-basePath"
    if base is None and doc.swagger:
        base, where = data.get("basePath"), "/basePath"
    if base is None and data.get("servers"):
        base, where = urlsplit(str(data["servers"][0].get("url", ""))).path or None, "/servers/0/url"
    if not isinstance(base, str) or not base.startswith("/"):
        raise doc.error(where, "gives no context: set x-wso2-basePath (such as /petstore/v1)")
    version = str(data["info"]["version"])
    if "{version}" not in base and base.rstrip("/").endswith("/" + version):
        base = base.rstrip("/")[: -len(version)] + "{version}"
    return base


def _template(doc: Document, path: str, where: str) -> str:
    """An OpenAPI path template as Starlette's: parameter names made identifiers."""
    if not path.startswith("/"):
        raise doc.error(where, "must start with /")

    def name(match: re.Match[str]) -> str:
        cleaned = _NOT_NAME.sub("_", match.group(1)) or "param"
        return "{" + ("p_" + cleaned if cleaned[0].isdigit() else cleaned) + "}"

    return _PARAM.sub(name, path)


def _bool(doc: Document, node: Mapping[str, Any], key: str, where: str) -> bool:
    value = node.get(key, False)
    if not isinstance(value, bool):
        raise doc.error(f"{where}/{key}", "must be true or false")
    return value


def _tier(doc: Document, node: Mapping[str, Any], where: str) -> str | None:
    tier = node.get("x-wso2-throttling-tier")
    if tier is not None and (not isinstance(tier, str) or not tier):
        raise doc.error(f"{where}/x-wso2-throttling-tier", "must be a tier name")
    return tier


def _endpoints(doc: Document, table: dict[str, Any], resolve: Resolve) -> None:
    """The API's production and sandbox endpoints, and their one backend credential."""
    found: dict[str, Any] = {}
    for ext, key in (("x-wso2-production-endpoints", "backend"), ("x-wso2-sandbox-endpoints", "sandbox_backend")):
        if ext in doc.data:
            backend, security = endpoint(doc, doc.data[ext], f"/{ext}", resolve)
            table[key] = backend
            if security is not None:
                if "backend_security" in table and table["backend_security"] != security:
                    raise doc.error(f"/{ext}", "has a securityConfig other than the production endpoints'")
                table["backend_security"] = security
            found[ext] = doc.data[ext]
    if "sandbox_backend" in table and "backend" not in table:
        raise doc.error("/x-wso2-sandbox-endpoints", "needs x-wso2-production-endpoints too")


def _operation_endpoints(
    doc: Document, op: Mapping[str, Any], where: str, table: Mapping[str, Any], resolve: Resolve
) -> dict[str, Any]:
    """An operation's own production and sandbox endpoints, as its resource's ``backend`` and
    ``sandbox_backend`` (each absent: the API's). Their ``securityConfig`` must be the API's or none:
    the gateway presents one backend credential per API, to each of its backends."""
    keys: dict[str, Any] = {}
    for ext, key in (("x-wso2-production-endpoints", "backend"), ("x-wso2-sandbox-endpoints", "sandbox_backend")):
        if ext not in op or op[ext] == doc.data.get(ext):
            continue
        backend, security = endpoint(doc, op[ext], f"{where}/{ext}", resolve)
        if security is not None and security != table.get("backend_security"):
            raise doc.error(
                f"{where}/{ext}",
                "has a securityConfig other than the API endpoints': one backend credential per API is supported",
            )
        keys[key] = backend
    return keys


def _operations(doc: Document) -> list[tuple[str, str, Mapping[str, Any], str]]:
    ops = []
    for raw_path, item in (doc.data.get("paths") or {}).items():
        if raw_path.startswith("x-"):
            continue
        item, where = doc.resolve(item, pointer("paths", raw_path))
        check_known(doc, item, where, frozenset())
        path = _template(doc, raw_path, where)
        for method in METHODS:
            if method in item:
                if method == "trace":
                    raise doc.error(f"{where}/trace", "TRACE cannot be a resource (it is never routed to an API)")
                ops.append((path, method, item[method], f"{where}/{method}"))
    return ops


def load_definition(path: Path, resolve: Resolve) -> dict[str, Any]:
    """The ``[[apis]]`` keys the definition at ``path`` gives. Raises `ConfigError` naming the file
    and the JSON pointer of anything invalid, unknown, contradictory or inexpressible."""
    doc = read_document(path)
    data = doc.data
    check_known(doc, data, "", API_EXTENSIONS)
    table: dict[str, Any] = {
        "name": str(data["info"]["title"]),
        "context": _context(doc),
        "version": str(data["info"]["version"]),
    }
    tier = _tier(doc, data, "")
    if tier is not None:
        table["tier"] = tier
    _endpoints(doc, table, resolve)
    if "x-wso2-transports" in data:
        table["transports"] = transports(doc, data["x-wso2-transports"], "/x-wso2-transports")
    if "x-wso2-cors" in data:
        table_cors = cors(doc, data["x-wso2-cors"], "/x-wso2-cors")
        if table_cors is not None:
            table["cors"] = table_cors
    for ext, key in (
        ("x-wso2-request-interceptor", "interceptors"),
        ("x-wso2-response-interceptor", "response_interceptors"),
    ):
        if ext in data:
            table[key] = callables(doc, data[ext], f"/{ext}")
    known = schemes(doc)
    api_ext = Extensions().over(data, "")
    global_reqs = data.get("security")
    # the API's own security (its scopes apply through each operation that inherits the requirements)
    api_security, _ = route_security(doc, known, global_reqs, "/security", api_ext)
    api_public = _bool(doc, data, "x-wso2-disable-security", "")
    if api_security is not None and not api_security.get("public"):
        table["security"] = api_security
    resources = []
    for route_path, method, op, where in _operations(doc):
        check_known(doc, op, where, OPERATION_EXTENSIONS)
        resource: dict[str, Any] = {"path": route_path, "methods": [method.upper()]}
        resource.update(_operation_endpoints(doc, op, where, table, resolve))
        op_tier = _tier(doc, op, where)
        if op_tier is not None:
            resource["tier"] = op_tier
        for ext, key in (
            ("x-wso2-request-interceptor", "interceptors"),
            ("x-wso2-response-interceptor", "response_interceptors"),
        ):
            if ext in op:
                resource[key] = callables(doc, op[ext], f"{where}/{ext}")
        if api_public or _bool(doc, op, "x-wso2-disable-security", where):
            resource["public"] = True
            resources.append(resource)
            continue
        # the more specific level decides the application schemes: an operation's own security requirements
        # over the API's x-wso2-application-security, an operation's own extension over the global requirements
        extensions = api_ext.over(op, where)
        reqs, reqs_at = (op["security"], f"{where}/security") if "security" in op else (global_reqs, "/security")
        if "security" in op and "x-wso2-application-security" not in op:
            extensions = replace(extensions, application=None)
        elif "x-wso2-application-security" in op and "security" not in op:
            reqs = None
        security, scopes = route_security(doc, known, reqs, reqs_at, extensions)
        if security is not None and security.get("public"):
            resource["public"] = True
        elif security is not None and security != api_security:
            resource["security"] = security
        if scopes and not resource.get("public"):
            resource["scopes"] = scopes
        resources.append(resource)
    if resources:
        table["resources"] = resources
    if api_public and not resources:
        raise doc.error("/x-wso2-disable-security", "is true but the document has no operation to make public")
    return table
