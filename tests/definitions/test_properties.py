"""Properties: the security mapping keeps OpenAPI's meaning exactly or refuses; any edit of a
definition is read or refused with the file and a pointer, never another error."""

from __future__ import annotations

import copy
import itertools
import json
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asgi_apim._schema import Table
from asgi_apim.config import parse_config
from asgi_apim.definitions import load_definition
from asgi_apim.definitions.document import Document
from asgi_apim.definitions.extensions import API_EXTENSIONS
from asgi_apim.definitions.security import Extensions, route_security, schemes
from asgi_apim.edge_config import parse_contexts
from asgi_apim.errors import ConfigError
from tests.definitions.conftest import HERE

SCHEMES = {
    "oauth": {
        "type": "oauth2",
        "flows": {"implicit": {"authorizationUrl": "https://i/a", "scopes": {"a": "", "b": ""}}},
    },
    "bearer": {"type": "http", "scheme": "bearer"},
    "key": {"type": "apiKey", "in": "header", "name": "X-Key"},
    "qkey": {"type": "apiKey", "in": "query", "name": "key"},
    "basic": {"type": "http", "scheme": "basic"},
    "mtls": {"type": "mutualTLS"},
}
KIND = {"oauth": "oauth2", "bearer": "oauth2", "key": "api_key", "qkey": "api_key", "basic": "basic", "mtls": "cert"}
PATH = Path("/defs/api.yaml")

requirement = st.dictionaries(
    st.sampled_from(sorted(SCHEMES)), st.lists(st.sampled_from(["a", "b"]), max_size=2, unique=True), max_size=3
)


def openapi_accepts(reqs: list[dict[str, list[str]]], presented: set[str]) -> bool:
    return not reqs or any({KIND[name] for name in req} <= presented for req in reqs)


def wso2_accepts(table: dict[str, Any], presented: set[str]) -> bool:
    if table.get("public"):
        return True
    cert = "cert" in presented
    app = bool(set(table["application"]) & presented)
    mode, mandatory = table["mutual_ssl"], table["application_mandatory"]
    if mode == "disabled":
        return app
    if mode == "mandatory":
        return cert and (app or not mandatory)
    return app if mandatory else (cert or app)


@settings(max_examples=400, deadline=None)
@given(st.lists(requirement, max_size=4))
def test_requirements_mean_the_same_in_wso2s_model_or_are_refused(reqs: list[dict[str, list[str]]]) -> None:
    doc = Document(PATH, {"openapi": "3.1.0", "components": {"securitySchemes": SCHEMES}})
    try:
        table, scopes = route_security(doc, schemes(doc), reqs, "/security", Extensions())
    except ConfigError as exc:
        assert str(exc).startswith(f"{PATH}#/security"), str(exc)
        return
    assert table is not None
    for presented in itertools.chain.from_iterable(
        itertools.combinations(["cert", "oauth2", "api_key", "basic"], n) for n in range(5)
    ):
        # WSO2 takes one application credential per request: never more than one with a certificate
        if len(set(presented) - {"cert"}) > 1:
            continue
        assert openapi_accepts(reqs, set(presented)) == wso2_accepts(table, set(presented)), (reqs, table, presented)
    wanted = {s for req in reqs for name, listed in req.items() if KIND[name] != "cert" for s in listed}
    assert set(scopes) == wanted
    if not table.get("public"):  # WSO2's configuration accepts what the mapping gives
        api = {"name": "a", "context": "/a", "security": dict(table)}
        parse_config({"encryption": {"key": "ab" * 32}, "apis": [api]}, base=PATH.parent)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=20), st.one_of(st.none(), st.text(max_size=8)), st.booleans())
def test_contexts_are_read_or_refused_naming_the_key(context: str, version: str | None, default: bool) -> None:
    raw: dict[str, Any] = {"context": context, "default_version": default}
    if version is not None:
        raw["version"] = version
    try:
        got = parse_contexts(Table(raw, "apis[0]", Path()))
    except ConfigError as exc:
        assert str(exc).startswith("apis[0]."), str(exc)
        return
    assert got.context.startswith("/")
    if version is not None:
        assert version in got.context
        assert got.unversioned is not None and got.unversioned != got.context
    assert got.default_version == default


DOCUMENTS = {
    "petstore.yaml": yaml.safe_load((HERE / "petstore.yaml").read_text()),
    "pizzashack.json": yaml.safe_load((HERE / "pizzashack.json").read_text()),
    "vault.yaml": yaml.safe_load((HERE / "vault.yaml").read_text()),
}


def _nodes(doc: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path]
    if isinstance(doc, dict):
        for k, v in doc.items():
            found += _nodes(v, (*path, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            found += _nodes(v, (*path, i))
    return found


NODES = [(name, p) for name, doc in DOCUMENTS.items() for p in _nodes(doc) if p]
values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.text(max_size=12),
    st.lists(st.text(max_size=5), max_size=2),
    st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.sampled_from(NODES),
    st.one_of(st.just("delete"), values),
    st.one_of(st.none(), st.sampled_from(sorted(API_EXTENSIONS))),
)
def test_any_edit_of_a_definition_is_read_or_refused_with_a_pointer(
    tmp_path: Path, node: tuple[str, tuple[Any, ...]], value: Any, extension: str | None
) -> None:
    name, where = node
    doc = copy.deepcopy(DOCUMENTS[name])
    parent = doc
    for part in where[:-1]:
        parent = parent[part]
    if value == "delete":
        del parent[where[-1]]
    elif extension is not None and isinstance(parent, dict):
        parent[extension] = value  # an extension, with any value, anywhere
    else:
        parent[where[-1]] = value
    path = tmp_path / f"edited-{name}"
    path.write_text(json.dumps(doc) if name.endswith(".json") else yaml.safe_dump(doc))
    try:
        table = load_definition(path, lambda v, k: v)
    except ConfigError as exc:
        assert str(exc).startswith(f"{path}#/") and "\n" not in str(exc), str(exc)
        return
    assert table["context"].startswith("/")
