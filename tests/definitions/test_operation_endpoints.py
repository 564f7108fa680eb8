"""An operation's own ``x-wso2-production-endpoints`` / ``x-wso2-sandbox-endpoints`` become its
resource's ``backend`` / ``sandbox_backend``; the refusals are in test_refusals.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asgi_apim.config import load_config
from asgi_apim.definitions import load_definition
from asgi_apim.errors import ConfigError
from asgi_apim.gateway.endpoints import EndpointGroup
from asgi_apim.gateway_config import BackendConfig, SuspensionConfig
from tests.definitions.conftest import write_setup
from tests.definitions.test_refusals import edited

ORDERS = {"urls": ["http://127.0.0.1:7001/orders", "http://127.0.0.1:7002/orders"], "type": "failover"}
API_SECURITY = {"type": "basic", "username": "svc", "password": "$secret{petstore_backend}"}


def resource(table: dict[str, Any], path: str, method: str) -> dict[str, Any]:
    found: dict[str, Any] = next(r for r in table["resources"] if r["path"] == path and r["methods"] == [method])
    return found


def mapped(tmp_path: Path, doc: dict[str, Any]) -> dict[str, Any]:
    path = tmp_path / "api.yaml"
    path.write_text(yaml.safe_dump(doc))
    return load_definition(path, lambda value, key: value)


def with_operations(d: dict[str, Any]) -> None:
    d["x-wso2-endpoints"].append({"orders": ORDERS})
    d["x-wso2-endpoints"].append({"secured": {"urls": ["http://127.0.0.1:7003"], "securityConfig": dict(API_SECURITY)}})
    pets = d["paths"]["/pets"]
    pets["get"]["x-wso2-production-endpoints"] = {"urls": ["http://127.0.0.1:7000/list"]}
    pets["get"]["x-wso2-sandbox-endpoints"] = {"urls": ["http://127.0.0.1:7000/a", "http://127.0.0.1:7000/b"]}
    pets["post"]["x-wso2-production-endpoints"] = "#/x-wso2-endpoints/orders"
    d["paths"]["/pets/findByStatus"]["get"]["x-wso2-production-endpoints"] = "#/x-wso2-endpoints/petstoreProduction"
    d["paths"]["/pets/{petId}"]["get"]["x-wso2-sandbox-endpoints"] = {"urls": ["http://127.0.0.1:7004"], "type": "http"}
    d["paths"]["/pets/{petId}"]["delete"]["x-wso2-production-endpoints"] = "#/x-wso2-endpoints/secured"


def test_inline_and_referenced_operation_endpoints_map_to_the_resource(tmp_path: Path) -> None:
    table = mapped(tmp_path, edited(with_operations))
    listing = resource(table, "/pets", "GET")
    assert listing["backend"] == "http://127.0.0.1:7000/list"
    assert listing["sandbox_backend"] == {
        "type": "load_balance",
        "urls": ["http://127.0.0.1:7000/a", "http://127.0.0.1:7000/b"],
    }
    assert resource(table, "/pets", "POST")["backend"] == ORDERS  # a reference to x-wso2-endpoints
    found = resource(table, "/pets/findByStatus", "GET")  # the API's own endpoints: nothing of its own
    assert "backend" not in found and "sandbox_backend" not in found
    public = resource(table, "/pets/{petId}", "GET")  # a public operation keeps its endpoints too
    assert public["sandbox_backend"] == "http://127.0.0.1:7004" and "backend" not in public and public["public"]
    # the API's securityConfig, repeated by another endpoint: accepted (one credential per API)
    assert resource(table, "/pets/{petId}", "DELETE")["backend"] == "http://127.0.0.1:7003"
    assert table["backend_security"]["username"] == "svc"


def test_the_configuration_reads_them_into_the_resources(tmp_path: Path) -> None:
    (tmp_path / "api.yaml").write_text(yaml.safe_dump(edited(with_operations)))
    api = load_config(write_setup(tmp_path, '[[apis]]\ndefinition = "api.yaml"\n')).apis[0]
    by = {(r.path, r.methods): r for r in api.resources}
    post = by[("/pets", ("POST",))]
    assert post.backend == BackendConfig(urls=tuple(ORDERS["urls"]), type="failover") and post.sandbox_backend is None
    assert by[("/pets", ("GET",))].sandbox_backend == BackendConfig(
        urls=("http://127.0.0.1:7000/a", "http://127.0.0.1:7000/b"), type="load_balance"
    )
    assert by[("/pets/findByStatus", ("GET",))].backend is None


def test_operation_endpoints_need_the_api_s(tmp_path: Path) -> None:
    def change(d: dict[str, Any]) -> None:
        del d["x-wso2-production-endpoints"], d["x-wso2-sandbox-endpoints"]
        d["paths"]["/pets"]["get"]["x-wso2-production-endpoints"] = {"urls": ["http://127.0.0.1:7000"]}

    (tmp_path / "api.yaml").write_text(yaml.safe_dump(edited(change)))
    with pytest.raises(ConfigError) as info:
        load_config(write_setup(tmp_path, '[[apis]]\ndefinition = "api.yaml"\n'))
    message = str(info.value)
    assert "resources[0].backend: needs a backend on the API too" in message and "api.yaml" in message
    # a TOML backend beside the definition is the API's
    (tmp_path / "deployment.toml").unlink()
    toml = '[[apis]]\ndefinition = "api.yaml"\nbackend = "http://127.0.0.1:7100"\n'
    api = load_config(write_setup(tmp_path, toml)).apis[0]
    assert api.backend is not None and api.resources[0].backend == BackendConfig(urls=("http://127.0.0.1:7000",))


urls = st.one_of(
    st.text(max_size=24),
    st.builds(
        lambda scheme, host, port, path: f"{scheme}://{host}{port}{path}",
        st.sampled_from(["http", "https", "ftp", "HTTP"]),
        st.text(max_size=8),
        st.one_of(st.just(""), st.integers(-5, 70000).map(lambda p: f":{p}")),
        st.text(max_size=8),
    ),
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(urls, min_size=1, max_size=3), st.sampled_from([None, "http", "failover", "load_balance"]))
def test_an_operation_s_endpoints_are_a_group_the_gateway_builds_or_refused_with_a_pointer(
    tmp_path: Path, given_urls: list[str], kind: str | None
) -> None:
    value: dict[str, Any] = {"urls": given_urls} | ({"type": kind} if kind else {})
    doc = edited(lambda d: d["paths"]["/pets"]["post"].update({"x-wso2-production-endpoints": value}))
    (tmp_path / "api.yaml").write_text(yaml.safe_dump(doc))
    config = tmp_path / "deployment.toml"
    if not config.exists():  # once per test: the examples share it
        write_setup(tmp_path, '[[apis]]\ndefinition = "api.yaml"\n')
    try:
        api = load_config(config).apis[0]
    except ConfigError as exc:
        assert str(exc).startswith(f"{tmp_path / 'api.yaml'}#/paths/~1pets/post/x-wso2-production-endpoints")
        assert "\n" not in str(exc)
        return
    post = next(r for r in api.resources if r.methods == ("POST",))
    assert post.backend is not None and list(post.backend.urls) == given_urls
    group = EndpointGroup(post.backend, SuspensionConfig())
    assert all(e.address.host and e.address.scheme in ("http", "https") for e in group.endpoints)
