"""OpenAPI security (``securitySchemes``, ``security`` requirements) and WSO2's security extensions
mapped to the ``[apis.security]`` table of WSO2's model.

OpenAPI's requirements are a list (any one suffices) of objects (every scheme of one is needed).
WSO2's model per route is mutual SSL (mandatory, optional, disabled) beside one list of
application schemes (any one suffices), mandatory or not, and resource scopes (any one suffices):

=====================================================  ==========================================
requirements (M: mutualTLS, A, B: application schemes)  WSO2
=====================================================  ==========================================
``[{A}, {B}]``                                        disabled; application [A, B]
``[{M}]``                                             mandatory; no application credential
``[{M, A}, {M, B}]``                                  mandatory; application [A, B], mandatory
``[{M}, {A}, {B}]``                                   optional; application [A, B], not mandatory
``[]``, ``[{}]``                                      public
=====================================================  ==========================================

Anything else (two application schemes in one object, ``{}`` beside others, ``[{M, A}, {B}]``,
several scopes in one object, different scopes per scheme) cannot be said in WSO2's model and
is refused, naming the file and the JSON pointer, rather than approximated.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from asgi_apim.definitions.document import Document

PUBLIC: dict[str, Any] = {"public": True}
_APP_TYPES = {"oauth2": "oauth2", "api_key": "api_key", "basic_auth": "basic"}  # x-wso2-application-security
_MUTUAL = ("mandatory", "optional")
_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")  # RFC 9110: a header name


@dataclass(frozen=True)
class Scheme:
    kind: str  # mutual_ssl | oauth2 | api_key | basic
    location: str | None = None  # api_key: header | query
    name: str | None = None  # api_key: the header or parameter name


def schemes(doc: Document) -> dict[str, Scheme]:
    """The document's security schemes by name, as WSO2 kinds."""
    data = doc.data
    raw, where = (
        (data.get("securityDefinitions") or {}, "/securityDefinitions")
        if doc.swagger
        else ((data.get("components") or {}).get("securitySchemes") or {}, "/components/securitySchemes")
    )
    found: dict[str, Scheme] = {}
    for name, value in raw.items():
        scheme, at = doc.resolve(value, f"{where}/{name}")
        if not isinstance(scheme, Mapping):
            raise doc.error(at, "must be a security scheme object")
        kind = scheme.get("type")
        if kind == "apiKey":
            if scheme.get("in") not in ("header", "query"):
                raise doc.error(f"{at}/in", f"API keys in {scheme.get('in')!r} are not supported (header or query)")
            key_name = scheme.get("name")
            if not isinstance(key_name, str) or not (
                _TOKEN.fullmatch(key_name) if scheme["in"] == "header" else key_name
            ):
                raise doc.error(f"{at}/name", f"must be a {scheme['in']} name")
            found[name] = Scheme("api_key", scheme["in"], key_name)
        elif kind == "basic" or (kind == "http" and str(scheme.get("scheme", "")).lower() == "basic"):
            found[name] = Scheme("basic")
        elif kind == "http" and str(scheme.get("scheme", "")).lower() == "bearer":
            found[name] = Scheme("oauth2")
        elif kind in ("oauth2", "openIdConnect"):
            found[name] = Scheme("oauth2")
        elif kind == "mutualTLS":
            found[name] = Scheme("mutual_ssl")
        else:
            detail = f"http {scheme.get('scheme')!r}" if kind == "http" else repr(kind)
            raise doc.error(at, f"the security scheme type {detail} is not supported")
    return found


@dataclass(frozen=True)
class Extensions:
    """WSO2's security extensions in force at one level (API, or operation over API)."""

    application: Mapping[str, Any] | None = None
    application_at: str = ""
    mutual_ssl: str | None = None
    mutual_at: str = ""
    auth_header: str | None = None
    auth_at: str = "/x-wso2-auth-header"

    def over(self, node: Mapping[str, Any], where: str) -> Extensions:
        """These extensions with those of ``node`` (an operation) in their place."""
        app = node.get("x-wso2-application-security")
        mutual = node.get("x-wso2-mutual-ssl")
        header = node.get("x-wso2-auth-header")
        return Extensions(
            application=app if app is not None else self.application,
            application_at=f"{where}/x-wso2-application-security" if app is not None else self.application_at,
            mutual_ssl=mutual if mutual is not None else self.mutual_ssl,
            mutual_at=f"{where}/x-wso2-mutual-ssl" if mutual is not None else self.mutual_at,
            auth_header=header if header is not None else self.auth_header,
            auth_at=f"{where}/x-wso2-auth-header" if header is not None else self.auth_at,
        )


def _requirements(doc: Document, known: dict[str, Scheme], reqs: Any, where: str) -> tuple[dict[str, Any], list[str]]:
    """The security table and the scopes of OpenAPI requirements ``reqs`` (at ``where``)."""
    if not reqs or all(r == {} for r in reqs):
        return dict(PUBLIC), []
    groups: list[tuple[bool, tuple[str, str] | None, tuple[str, ...]]] = []
    for i, req in enumerate(reqs):
        if not req:
            raise doc.error(
                f"{where}/{i}",
                "an empty requirement beside others makes authentication optional, which WSO2's model"
                " cannot express (make the operation public with x-wso2-disable-security, or remove {})",
            )
        mtls, apps = False, []
        scopes: tuple[str, ...] = ()
        for name, wanted in req.items():
            scheme = known.get(name)
            if scheme is None:
                raise doc.error(f"{where}/{i}/{name}", f"names no security scheme {name!r} of the document")
            if scheme.kind == "mutual_ssl":
                if wanted:
                    raise doc.error(f"{where}/{i}/{name}", "a mutualTLS requirement cannot list roles")
                mtls = True
                continue
            apps.append((scheme.kind, name))
            scopes = tuple(wanted)
            if len(scopes) > 1:
                raise doc.error(
                    f"{where}/{i}/{name}",
                    f"requires every one of the scopes {', '.join(scopes)}; WSO2's resource scopes are any one of"
                    " them: list each in a requirement of its own",
                )
        if len(apps) > 1:
            raise doc.error(
                f"{where}/{i}",
                f"requires {apps[0][1]} and {apps[1][1]} together; WSO2 takes one application credential per"
                " request: list them as alternatives",
            )
        groups.append((mtls, apps[0] if apps else None, scopes))
    cert_only = [g for g in groups if g[0] and g[1] is None]
    cert_and = [g for g in groups if g[0] and g[1] is not None]
    app_only = [g for g in groups if not g[0]]
    if app_only and not cert_only and not cert_and:
        table: dict[str, Any] = {"mutual_ssl": "disabled", "application_mandatory": True}
    elif cert_only and not cert_and and not app_only:
        table = {"mutual_ssl": "mandatory", "application_mandatory": False}
    elif cert_and and not cert_only and not app_only:
        table = {"mutual_ssl": "mandatory", "application_mandatory": True}
    elif cert_only and app_only and not cert_and:
        table = {"mutual_ssl": "optional", "application_mandatory": False}
    else:
        raise doc.error(
            where,
            "mixes a client certificate required with an application credential and alternatives without it,"
            " which WSO2's mutual SSL modes cannot express",
        )
    apps_used = [g for g in groups if g[1] is not None]
    by_kind: dict[str, set[tuple[str, ...]]] = {}
    for _, app, scopes in apps_used:
        assert app is not None
        by_kind.setdefault(app[0], set()).add(scopes)
    alternatives = {frozenset(v) for v in by_kind.values()}
    flat = {s for _, _, scopes in apps_used for s in scopes}
    if len(alternatives) > 1 or (flat and any(not scopes for _, _, scopes in apps_used)):
        raise doc.error(
            where,
            "asks different scopes of different schemes (or scopes of some only); WSO2's resource scopes apply"
            " to every scheme of the resource",
        )
    table["application"] = list(dict.fromkeys(app[0] for _, app, _ in apps_used if app is not None))
    _locations(doc, known, [app[1] for _, app, _ in apps_used if app is not None], where, table)
    return table, sorted(flat)


def _locations(doc: Document, known: dict[str, Scheme], names: list[str], where: str, table: dict[str, Any]) -> None:
    """The API key's own header and query parameter, from the apiKey schemes the route uses."""
    located = [known[n] for n in dict.fromkeys(names) if known[n].kind == "api_key"]
    if not located:
        return
    headers = {s.name for s in located if s.location == "header"}
    queries = {s.name for s in located if s.location == "query"}
    if len(headers) > 1 or len(queries) > 1:
        raise doc.error(where, "accepts API keys in more than one header (or query parameter); WSO2 reads one of each")
    table["api_key_header"] = next(iter(headers), "")
    table["api_key_query"] = next(iter(queries), "")


def route_security(
    doc: Document, known: dict[str, Scheme], reqs: Any, reqs_at: str, ext: Extensions
) -> tuple[dict[str, Any] | None, list[str]]:
    """The security table (None: the configuration's default, oauth2) and scopes of one route."""
    table: dict[str, Any] | None = None
    scopes: list[str] = []
    if reqs is not None:
        table, scopes = _requirements(doc, known, reqs, reqs_at)
        if table.get("public"):
            return table, []
    if ext.application is not None:
        app, at = ext.application, ext.application_at
        if not isinstance(app, Mapping):
            raise doc.error(at, "must be an object with security-types and optional")
        unknown = sorted(set(app) - {"security-types", "optional"})
        if unknown:
            raise doc.error(f"{at}/{unknown[0]}", "is not a key of x-wso2-application-security")
        types = app.get("security-types", ["oauth2"])
        if not isinstance(types, list) or not all(isinstance(t, str) and t in _APP_TYPES for t in types):
            raise doc.error(f"{at}/security-types", f"must list some of {', '.join(_APP_TYPES)}")
        optional = app.get("optional", False)
        if not isinstance(optional, bool):
            raise doc.error(f"{at}/optional", "must be true or false")
        kinds = list(dict.fromkeys(_APP_TYPES[t] for t in types))
        if table is not None and table["application"] and set(table["application"]) != set(kinds):
            raise doc.error(
                at,
                f"names {', '.join(kinds)} but the security requirements ({reqs_at}) name"
                f" {', '.join(table['application'])}",
            )
        table = dict(table or {"mutual_ssl": "disabled"})
        table["application"] = kinds
        table["application_mandatory"] = not optional
    if ext.mutual_ssl is not None:
        if ext.mutual_ssl not in _MUTUAL:
            raise doc.error(ext.mutual_at, f"must be one of {', '.join(_MUTUAL)}")
        if table is not None and table["mutual_ssl"] not in ("disabled", ext.mutual_ssl):
            raise doc.error(
                ext.mutual_at, f"says {ext.mutual_ssl} but the security requirements say {table['mutual_ssl']}"
            )
        table = dict(table or {"application": ["oauth2"]})
        if table.get("mutual_ssl", "disabled") == "disabled" and ext.application is None:
            table["application_mandatory"] = bool(table["application"])  # WSO2: both, unless the application's optional
        table["mutual_ssl"] = ext.mutual_ssl
    if table is not None and not table.get("application_mandatory", True) and table["mutual_ssl"] == "disabled":
        raise doc.error(ext.application_at, "optional: true needs x-wso2-mutual-ssl (the certificate instead)")
    if ext.auth_header is not None:
        if not isinstance(ext.auth_header, str) or not _TOKEN.fullmatch(ext.auth_header):
            raise doc.error(ext.auth_at, "must be a header name")
        table = dict(table or {})
        table["auth_header"] = ext.auth_header
    return table, scopes
