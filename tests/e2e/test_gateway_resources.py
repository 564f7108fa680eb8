"""Per-operation endpoints end to end: a real ``asgi-apim gateway`` serving an OpenAPI definition
whose operations name endpoints of their own (inline, or a failover group referenced from
``x-wso2-endpoints``), and a TOML API whose resource has a backend of its own, in front of two real
backends (uvicorn processes) on loopback."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import jwt
import pytest

from tests.definitions.conftest import ISSUER, SECRET, write_setup
from tests.e2e.conftest import Served, Servers, free_port

pytestmark = pytest.mark.e2e

BACKEND = "tests.e2e.gateway_backend:app"

DEFINITION = """
openapi: 3.0.3
info:
  title: Shop
  version: "1.0"
x-wso2-basePath: /shop/{{version}}
x-wso2-production-endpoints:
  urls: ["http://127.0.0.1:{main}/main"]
x-wso2-sandbox-endpoints:
  urls: ["http://127.0.0.1:{main}/main-sandbox"]
x-wso2-endpoints:
  - ordersFailover:
      type: failover
      urls: ["http://127.0.0.1:{dead}/gone", "http://127.0.0.1:{orders}/orders-svc"]
components:
  securitySchemes:
    idp:
      type: oauth2
      flows:
        implicit:
          authorizationUrl: https://idp.example/authorize
          scopes: {{}}
security:
  - idp: []
paths:
  /items/{{item}}:
    parameters:
      - {{name: item, in: path, required: true, schema: {{type: string}}}}
    get:
      responses:
        "200":
          description: an item, from the API's endpoints
  /orders/{{order}}:
    parameters:
      - {{name: order, in: path, required: true, schema: {{type: string}}}}
    get:
      x-wso2-production-endpoints: "#/x-wso2-endpoints/ordersFailover"
      x-wso2-sandbox-endpoints:
        urls: ["http://127.0.0.1:{orders}/orders-sandbox"]
      responses:
        "200":
          description: an order, from the orders service
    post:
      responses:
        "201":
          description: no endpoints of its own, the API's
"""

APIS = """
[[apis]]
definition = "shop.yaml"
[apis.suspension]
initial = 60

[[apis]]
name = "catalog"
context = "/catalog"
backend = "http://127.0.0.1:{main}/cat"
[apis.security]
application = ["oauth2"]
[[apis.resources]]
path = "/prices/{{{{sku}}}}"  # formatted here, then by write_setup
methods = ["GET"]
backend = "http://127.0.0.1:{orders}/pricing/v2"
"""


@dataclass
class Shop:
    gateway: Served
    main: Served
    orders: Served

    def get(self, path: str, keytype: str = "PRODUCTION", method: str = "GET") -> httpx.Response:
        claims = {"iss": ISSUER, "sub": "alice", "exp": int(time.time()) + 300, "keytype": keytype}
        token = jwt.encode(claims, SECRET, algorithm="HS256")
        return httpx.request(method, self.gateway.url + path, headers={"authorization": f"Bearer {token}"}, timeout=10)


@pytest.fixture(scope="module")
def shop(module_servers: Servers) -> Iterator[Shop]:
    main = module_servers.uvicorn(BACKEND, env={"BACKEND_NAME": "main"})
    orders = module_servers.uvicorn(BACKEND, env={"BACKEND_NAME": "orders"})
    tmp = module_servers.tmp / "resources"
    tmp.mkdir()
    (tmp / "shop.yaml").write_text(DEFINITION.format(main=main.port, orders=orders.port, dead=free_port()))
    path = write_setup(tmp, APIS.format(main=main.port, orders=orders.port))
    yield Shop(module_servers.gateway(path), main, orders)


def seen(r: httpx.Response) -> tuple[str, str]:
    assert r.status_code == 200, r.text
    return r.json()["name"], r.json()["raw_path"]


def test_an_operation_with_its_own_endpoints_reaches_them_the_others_the_api_s(shop: Shop) -> None:
    # the failover group's first endpoint refuses: the request goes on to the second, the orders service
    assert seen(shop.get("/shop/1.0/orders/42?x=1")) == ("orders", "/orders-svc/orders/42")
    assert seen(shop.get("/shop/1.0/orders/42", method="POST")) == ("main", "/main/orders/42")
    assert seen(shop.get("/shop/1.0/items/7")) == ("main", "/main/items/7")
    ready = httpx.get(shop.gateway.url + "/health/ready", timeout=10).json()["apis"]["Shop"]
    orders = ready["resources"]["GET /orders/{order}"]
    assert orders["type"] == "failover" and orders["ready"] is True
    assert [e["state"] for e in orders["production"]] == ["suspended", "active"]
    assert [e["state"] for e in ready["production"]] == ["active"]  # the API's endpoints keep their own state
    # suspended: the next request goes straight to the second endpoint
    assert seen(shop.get("/shop/1.0/orders/43")) == ("orders", "/orders-svc/orders/43")


def test_sandbox_credentials_go_to_the_operation_s_sandbox_endpoints(shop: Shop) -> None:
    assert seen(shop.get("/shop/1.0/orders/42", "SANDBOX")) == ("orders", "/orders-sandbox/orders/42")
    assert seen(shop.get("/shop/1.0/items/7", "SANDBOX")) == ("main", "/main-sandbox/items/7")


def test_a_toml_resource_backend(shop: Shop) -> None:
    assert seen(shop.get("/catalog/prices/abc")) == ("orders", "/pricing/v2/prices/abc")
    assert seen(shop.get("/catalog/prices/abc", method="POST")) == ("main", "/cat/prices/abc")  # GET only
    assert seen(shop.get("/catalog/books")) == ("main", "/cat/books")
