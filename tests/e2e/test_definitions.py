"""API definitions end to end: ``asgi-apim serve`` (the definition secures the wrapped app, its
endpoints ignored) and ``asgi-apim gateway`` (it also routes to the endpoints, a real backend on
loopback), driven by a browser-like client (httpx with ``Origin``) over real sockets."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.definitions.conftest import HERE, PETSTORE, Setup, token, write_setup
from tests.e2e.conftest import PKI, Served, Servers

pytestmark = pytest.mark.e2e

APP = "tests.definitions.app:app"
BACKEND = "tests.e2e.gateway_backend:app"
SHOP = "https://shop.example"

SERVE_APIS = """
[[apis]]
definition = "{here}/petstore.yaml"
default_version = true

[[apis]]
definition = "{here}/vault.yaml"
"""

GATEWAY_APIS = """
[[apis]]
definition = "petstore.yaml"
default_version = true

[[apis]]
definition = "{here}/pizzashack.json"
backend = "http://127.0.0.1:{port}/shack"
"""


@dataclass
class Deployment:
    served: Served
    setup: Setup


@pytest.fixture(scope="module")
def serve(module_servers: Servers) -> Iterator[Deployment]:
    from asgi_apim.config import load_config

    path = write_setup(module_servers.tmp, SERVE_APIS)
    yield Deployment(module_servers.serve(APP, path), Setup(path, load_config(path)))


def test_preflight_from_a_browser_is_answered_before_authentication(serve: Deployment) -> None:
    with httpx.Client(base_url=serve.served.url, headers={"origin": SHOP}, timeout=10) as browser:
        preflight = browser.options(
            "/petstore/1.0.0/pets",
            headers={"access-control-request-method": "POST", "access-control-request-headers": "authorization"},
        )
        actual = browser.get("/petstore/pets", headers={"authorization": f"Bearer {token()}"})
        refused = browser.get("/petstore/1.0.0/pets")
        foreign = browser.get(
            "/petstore/1.0.0/pets", headers={"origin": "https://evil.example", "authorization": f"Bearer {token()}"}
        )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == SHOP
    assert preflight.headers["access-control-allow-credentials"] == "true"
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert "authorization" in preflight.headers["access-control-allow-headers"]
    assert actual.status_code == 200 and actual.headers["access-control-allow-origin"] == SHOP
    user = actual.json()
    assert (user["api"], user["version"], user["method"]) == (PETSTORE, "1.0.0", "oauth2")
    assert user["headers"]["x-intercepted"] == "alice@1.0.0" and actual.headers["x-intercepted"] == "response"
    assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == SHOP
    assert refused.headers["content-type"] == "application/problem+json"
    assert foreign.status_code == 200 and not any(h.startswith("access-control-") for h in foreign.headers)


def test_an_interceptor_refuses_and_the_endpoints_are_ignored(serve: Deployment) -> None:
    with httpx.Client(base_url=serve.served.url, timeout=10) as c:
        refused = c.delete("/petstore/1.0.0/pets/1", headers={"authorization": f"Bearer {token('write:pets')}"})
        key = c.get("/petstore/1.0.0/pets", headers={"X-Pet-Key": serve.setup.api_key(PETSTORE)})
        plain = c.get("/vault/v2/secrets", headers={"authorization": f"Bearer {token()}"})
    assert refused.status_code == 409 and refused.json() == {"refused": True, "subject": "alice"}
    assert key.status_code == 200 and key.json()["path"] == "/petstore/1.0.0/pets"  # the app answered, no backend
    assert plain.status_code == 403 and plain.json()["code"] == 900906


def test_https_only_api_over_tls(module_servers: Servers, module_pki: PKI) -> None:
    (module_servers.tmp / "tls").mkdir()
    path = write_setup(module_servers.tmp / "tls", SERVE_APIS)
    served = module_servers.serve(APP, path, tls_pki=module_pki)
    trust = ssl.create_default_context(cafile=str(module_pki.path("ca.pem")))
    with httpx.Client(base_url=served.url, verify=trust, timeout=10) as c:
        r = c.get("/vault/v2/secrets", headers={"authorization": f"Bearer {token()}"})
    assert r.status_code == 200 and r.json()["version"] == "v2" and r.json()["method"] == "oauth2"


@pytest.fixture(scope="module")
def gateway(module_servers: Servers) -> Iterator[tuple[Served, Setup, Served]]:
    from asgi_apim.config import load_config

    backend = module_servers.uvicorn(BACKEND, env={"BACKEND_NAME": "pets", "BACKEND_BASIC": "svc:backend-secret"})
    shack = module_servers.uvicorn(BACKEND, env={"BACKEND_NAME": "shack"})
    tmp = module_servers.tmp / "gateway"
    tmp.mkdir()
    text = (
        (HERE / "petstore.yaml")
        .read_text()
        .replace("http://127.0.0.1:9/petstore", f"http://127.0.0.1:{backend.port}/petstore")
    )
    (tmp / "petstore.yaml").write_text(text)
    path = write_setup(tmp, GATEWAY_APIS.replace("{port}", str(shack.port)))
    yield module_servers.gateway(path), Setup(path, load_config(path)), backend


def _headers(doc: dict) -> dict[str, str]:  # type: ignore[type-arg]
    return {k: v for k, v in doc["headers"]}


def test_the_gateway_routes_a_definition_to_its_endpoint(gateway: tuple[Served, Setup, Served]) -> None:
    served, setup, _ = gateway
    with httpx.Client(base_url=served.url, headers={"origin": SHOP}, timeout=10) as c:
        versioned = c.post(
            "/petstore/1.0.0/pets/echo?x=1", headers={"X-Pet-Key": setup.api_key(PETSTORE)}, content=b"abc"
        )
        default = c.post("/petstore/pets/echo", headers={"authorization": f"Bearer {token()}"})
        refused = c.post("/petstore/1.0.0/pets/echo")
        preflight = c.options("/petstore/1.0.0/pets", headers={"access-control-request-method": "POST"})
    assert versioned.status_code == 200, versioned.text
    doc = versioned.json()
    assert doc["name"] == "pets" and doc["raw_path"] == "/petstore/pets/echo" and doc["query"] == "x=1"
    sent = _headers(doc)
    assert sent["x-intercepted"] == "key-holder@1.0.0"  # the request interceptor, before the backend
    assert "x-pet-key" not in sent  # the client's credential stops at the gateway
    assert sent["authorization"].startswith("Basic ")  # the endpoint's securityConfig (the backend checks it)
    assert versioned.headers["x-intercepted"] == "response"
    assert versioned.headers["access-control-allow-origin"] == SHOP
    assert default.status_code == 200 and default.json()["raw_path"] == "/petstore/pets/echo"
    assert refused.status_code == 401
    assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == SHOP


def test_a_toml_backend_overrides_the_definitions_endpoints(gateway: tuple[Served, Setup, Served]) -> None:
    served, setup, _ = gateway
    with httpx.Client(base_url=served.url, timeout=10) as c:
        r = c.get("/pizzashack/1.0.0/order/7", headers={"X-Pizza-Key": setup.api_key("PizzaShackAPI")})
        menu = c.get("/pizzashack/1.0.0/menu")
    assert r.status_code == 200 and r.json()["name"] == "shack" and r.json()["raw_path"] == "/shack/order/7"
    assert menu.status_code == 200 and menu.json()["raw_path"] == "/shack/menu"
