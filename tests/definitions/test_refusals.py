"""Definitions that cannot be used stop start-up with one line naming the file and the JSON pointer."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from asgi_apim.config import load_config
from asgi_apim.definitions import load_definition
from asgi_apim.errors import ConfigError
from tests.definitions.conftest import HERE, write_setup


def petstore() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((HERE / "petstore.yaml").read_text())
    return loaded


def refusal(tmp_path: Path, doc: dict[str, Any], suffix: str = ".yaml") -> str:
    path = tmp_path / f"api{suffix}"
    path.write_text(json.dumps(doc) if suffix == ".json" else yaml.safe_dump(doc))
    with pytest.raises(ConfigError) as caught:
        load_definition(path, lambda value, key: value)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{path}#/")
    return message[len(str(path)) :]


def edited(change: Any) -> dict[str, Any]:
    doc = copy.deepcopy(petstore())
    change(doc)
    return doc


CASES = [
    (
        "unknown API extension",
        lambda d: d.update({"x-wso2-response-cache": {"enabled": True}}),
        "#/x-wso2-response-cache: is not an x-wso2 extension",
    ),
    (
        "unknown operation extension",
        lambda d: d["paths"]["/pets"]["get"].update({"x-wso2-basePath": "/x"}),
        "#/paths/~1pets/get/x-wso2-basePath: is not an x-wso2 extension",
    ),
    (
        "unresolved endpoint",
        lambda d: d.update({"x-wso2-production-endpoints": "#/x-wso2-endpoints/nope"}),
        "#/x-wso2-production-endpoints: the reference '#/x-wso2-endpoints/nope' does not resolve",
    ),
    (
        "endpoint key",
        lambda d: d["x-wso2-sandbox-endpoints"].update({"timeout": 3}),
        "#/x-wso2-sandbox-endpoints/timeout: is not a key of an endpoint",
    ),
    (
        "endpoint type",
        lambda d: d["x-wso2-sandbox-endpoints"].update({"type": "round_robin"}),
        "#/x-wso2-sandbox-endpoints/type:",
    ),
    (
        "two schemes together",
        lambda d: d["paths"]["/pets"]["get"].update({"security": [{"petstore_auth": [], "basic": []}]}),
        "#/paths/~1pets/get/security/0: requires basic and petstore_auth together",
    ),
    (
        "every one of two scopes",
        lambda d: d["paths"]["/pets"]["get"].update({"security": [{"petstore_auth": ["read:pets", "write:pets"]}]}),
        "#/paths/~1pets/get/security/0/petstore_auth: requires every one of the scopes",
    ),
    (
        "scopes of one scheme only",
        lambda d: d["paths"]["/pets"]["get"].update({"security": [{"petstore_auth": ["read:pets"]}, {"pet_key": []}]}),
        "#/paths/~1pets/get/security: asks different scopes",
    ),
    (
        "optional authentication",
        lambda d: d.update({"security": [{"petstore_auth": []}, {}]}),
        "#/security/1: an empty requirement beside others",
    ),
    (
        "unknown scheme",
        lambda d: d.update({"security": [{"nobody": []}]}),
        "#/security/0/nobody: names no security scheme",
    ),
    (
        "cookie key",
        lambda d: d["components"]["securitySchemes"]["pet_key"].update({"in": "cookie"}),
        "#/components/securitySchemes/pet_key/in: API keys in 'cookie'",
    ),
    (
        "two key headers",
        lambda d: (
            d["components"]["securitySchemes"].update(
                {"other_key": {"type": "apiKey", "in": "header", "name": "X-Other"}}
            )
            or d.update({"security": [{"pet_key": []}, {"other_key": []}]})
        ),
        "#/security: accepts API keys in more than one header",
    ),
    (
        "contradictory application security",
        lambda d: d.update({"x-wso2-application-security": {"security-types": ["basic_auth"]}}),
        "#/x-wso2-application-security: names basic but the security requirements (/security) name oauth2, api_key",
    ),
    (
        "application security key",
        lambda d: d.update({"x-wso2-application-security": {"types": ["oauth2"]}}),
        "#/x-wso2-application-security/types: is not a key",
    ),
    (
        "optional without mutual SSL",
        lambda d: d.update(
            {"x-wso2-application-security": {"security-types": ["oauth2", "api_key"], "optional": True}}
        ),
        "#/x-wso2-application-security: optional: true needs x-wso2-mutual-ssl",
    ),
    (
        "mutual SSL value",
        lambda d: d.update({"x-wso2-mutual-ssl": "required"}),
        "#/x-wso2-mutual-ssl: must be one of mandatory, optional",
    ),
    (
        "cors key",
        lambda d: d["x-wso2-cors"].update({"allowOrigins": ["*"]}),
        "#/x-wso2-cors/allowOrigins: is not a key of x-wso2-cors",
    ),
    (
        "cors spelled twice",
        lambda d: d["x-wso2-cors"].update({"accessControlAllowOrigins": ["*"]}),
        "#/x-wso2-cors/accessControlAllowOrigins: repeats allow_origins",
    ),
    (
        "transports",
        lambda d: d.update({"x-wso2-transports": ["ftp"]}),
        "#/x-wso2-transports: must list http and/or https",
    ),
    (
        "operation endpoints with another backend credential",
        lambda d: d["paths"]["/pets"]["get"].update(
            {
                "x-wso2-production-endpoints": {
                    "urls": ["http://127.0.0.1:1"],
                    "securityConfig": {"type": "basic", "username": "other", "password": "x"},
                }
            }
        ),
        "#/paths/~1pets/get/x-wso2-production-endpoints: has a securityConfig other than the API endpoints'",
    ),
    (
        "operation endpoints reference",
        lambda d: d["paths"]["/pets"]["get"].update({"x-wso2-sandbox-endpoints": "#/x-wso2-endpoints/nope"}),
        "#/paths/~1pets/get/x-wso2-sandbox-endpoints: the reference '#/x-wso2-endpoints/nope' does not resolve",
    ),
    (
        "operation endpoints type",
        lambda d: d["paths"]["/pets"]["get"].update(
            {"x-wso2-production-endpoints": {"urls": ["http://127.0.0.1:1"], "type": "round_robin"}}
        ),
        "#/paths/~1pets/get/x-wso2-production-endpoints/type: 'round_robin' must be load_balance or failover",
    ),
    (
        "operation endpoint URL",
        lambda d: d["paths"]["/pets"]["get"].update({"x-wso2-production-endpoints": {"urls": ["ftp://127.0.0.1"]}}),
        "#/paths/~1pets/get/x-wso2-production-endpoints/urls/0: must be an http:// or https:// URL",
    ),
    (
        "API endpoint port",
        lambda d: d["x-wso2-sandbox-endpoints"].update({"urls": ["http://127.0.0.1:99999"]}),
        "#/x-wso2-sandbox-endpoints/urls/0: has a port that is not a number",
    ),
    (
        "operation endpoints without urls",
        lambda d: d["paths"]["/pets"]["get"].update({"x-wso2-production-endpoints": {"type": "failover"}}),
        "#/paths/~1pets/get/x-wso2-production-endpoints/urls: must list at least one URL",
    ),
    (
        "disable-security type",
        lambda d: d["paths"]["/pets"]["get"].update({"x-wso2-disable-security": "yes"}),
        "#/paths/~1pets/get/x-wso2-disable-security: must be true or false",
    ),
    ("no context", lambda d: d.pop("x-wso2-basePath"), "#/x-wso2-basePath: gives no context"),
    (
        "mixed mutual modes",
        lambda d: (
            d["components"]["securitySchemes"].update({"mtls": {"type": "mutualTLS"}})
            or d.update({"openapi": "3.1.0", "security": [{"mtls": [], "petstore_auth": []}, {"pet_key": []}]})
        ),
        "#/security: mixes a client certificate",
    ),
    (
        "invalid document",
        lambda d: d["paths"]["/pets"]["get"].update({"responses": "none"}),
        "#/paths/~1pets/get/responses: invalid OpenAPI document",
    ),
    (
        "key header name",
        lambda d: d["components"]["securitySchemes"]["pet_key"].update({"name": "X Pet"}),
        "#/components/securitySchemes/pet_key/name: must be a header name",
    ),
    (
        "auth header",
        lambda d: d["paths"]["/pets"]["get"].update({"x-wso2-auth-header": "X Auth"}),
        "#/paths/~1pets/get/x-wso2-auth-header: must be a header name",
    ),
    (
        "trace",
        lambda d: d["paths"]["/pets"].update({"trace": {"responses": {"200": {"description": "x"}}}}),
        "#/paths/~1pets/trace: TRACE cannot be a resource",
    ),
    ("no version", lambda d: d.pop("openapi"), "#/: names no openapi"),
]


@pytest.mark.parametrize(("change", "expected"), [(c, e) for _, c, e in CASES], ids=[n for n, _, _ in CASES])
def test_refused_with_the_file_and_the_pointer(tmp_path: Path, change: Any, expected: str) -> None:
    message = refusal(tmp_path, edited(change))
    assert message.startswith(expected), message


def test_a_document_that_is_not_yaml_or_json(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text("{ not json")
    with pytest.raises(ConfigError, match=r"broken\.json#/: is neither valid JSON nor YAML"):
        load_definition(path, lambda value, key: value)


def test_a_missing_file_names_the_key(tmp_path: Path) -> None:
    apis = '[[apis]]\ndefinition = "nowhere.yaml"\n'
    with pytest.raises(ConfigError, match="nowhere.yaml: cannot read the definition"):
        load_config(write_setup(tmp_path, apis))


def test_the_backend_password_is_resolved_and_an_unknown_secret_named(tmp_path: Path) -> None:
    doc = edited(
        lambda d: d["x-wso2-endpoints"][0]["petstoreProduction"]["securityConfig"].update({"password": "$secret{nope}"})
    )
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError) as caught:
        load_config(write_setup(tmp_path, '[[apis]]\ndefinition = "p.yaml"\n'))
    assert str(caught.value).startswith(
        f"{tmp_path / 'p.yaml'}#/x-wso2-endpoints/0/petstoreProduction/securityConfig/password:"
    )
    assert "$secret{nope}" in str(caught.value)


def test_an_encrypted_backend_password_is_decrypted(tmp_path: Path) -> None:
    from asgi_apim.secrets.envelope import DataKey

    ciphertext = DataKey(bytes.fromhex("cd" * 32)).encrypt("the-backend-password")
    doc = edited(
        lambda d: d["x-wso2-endpoints"][0]["petstoreProduction"]["securityConfig"].update({"password": ciphertext})
    )
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(doc))
    cfg = load_config(write_setup(tmp_path, '[[apis]]\ndefinition = "p.yaml"\n'))
    assert cfg.apis[0].backend_security is not None
    assert cfg.apis[0].backend_security.password == "the-backend-password"
    assert "the-backend-password" not in repr(cfg.apis[0])


def test_a_toml_value_the_definition_makes_invalid_is_named_by_its_key(tmp_path: Path) -> None:
    apis = '[[apis]]\ndefinition = "{here}/petstore.yaml"\ntier = "Platinum"\n'
    with pytest.raises(ConfigError, match=r"apis\[Swagger Petstore\]\.tier: unknown tier 'Platinum'"):
        load_config(write_setup(tmp_path, apis))


def test_a_value_the_definition_gives_that_the_configuration_refuses_names_the_file(tmp_path: Path) -> None:
    doc = edited(lambda d: d["x-wso2-cors"].update({"access-control-max-age": "soon"}))
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError) as caught:
        load_config(write_setup(tmp_path, '[[apis]]\ndefinition = "p.yaml"\n'))
    message = str(caught.value)
    assert message.startswith("apis[0].cors.max_age: "), message
    assert message.endswith(f"(given by {tmp_path / 'p.yaml'})")
