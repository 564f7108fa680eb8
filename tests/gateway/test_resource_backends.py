"""A resource's own ``backend`` and ``sandbox_backend``: parsed with the API's rules, ignored by
`protect()`, and in the gateway the endpoint group of the requests the resource matches."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from asgi_apim import protect
from asgi_apim.config import load_config
from asgi_apim.errors import ConfigError
from asgi_apim.gateway.app import gateway
from asgi_apim.gateway.proxy import GatewayProxy
from asgi_apim.gateway_config import BackendConfig
from tests.gateway.servers import uvicorn_server
from tests.gateway.test_proxy import Echo, call, config, principal

API = '[[apis]]\nname = "a"\ncontext = "/a"\n{backend}[apis.security]\napplication = ["basic"]\n'


def resources(backend: str, *resources: str) -> str:
    return API.format(backend=backend) + "".join(f"[[apis.resources]]\n{r}" for r in resources)


def test_resource_backends_are_parsed_like_the_api_s(tmp_path: Path) -> None:
    body = resources(
        'backend = "http://127.0.0.1:9/main"\n',
        'path = "/orders"\nbackend = "http://127.0.0.1:8/orders"\n',
        'path = "/items"\nbackend = { type = "failover", urls = ["http://a:1", "https://b/x"] }\n'
        'sandbox_backend = { type = "load_balance", urls = ["http://s:2", "http://s:3"] }\n',
        'path = "/plain"\n',
    )
    api = config(tmp_path, body).api("a")
    orders, items, plain = api.resources
    assert orders.backend == BackendConfig(urls=("http://127.0.0.1:8/orders",)) and orders.sandbox_backend is None
    assert items.backend == BackendConfig(urls=("http://a:1", "https://b/x"), type="failover")
    assert items.sandbox_backend == BackendConfig(urls=("http://s:2", "http://s:3"), type="load_balance")
    assert plain.backend is None and plain.sandbox_backend is None


@pytest.mark.parametrize(
    ("backend", "resource", "key", "message"),
    [
        ('backend = "http://x"\n', 'backend = "ftp://x"\n', "apis[0].resources[0].backend", "http:// or https://"),
        ('backend = "http://x"\n', "backend = 3\n", "apis[0].resources[0].backend", "a URL or a table"),
        (
            'backend = "http://x"\n',
            'backend = { type = "random", urls = ["http://x"] }\n',
            "apis[0].resources[0].backend.type",
            "must be one of",
        ),
        (
            'backend = "http://x"\n',
            'sandbox_backend = { type = "failover", urls = ["http://x", "http://u:p@y"] }\n',
            "apis[0].resources[0].sandbox_backend.urls[1]",
            "without user",
        ),
        (
            'backend = "http://x"\n',
            '[apis.resources.backend_security]\ntype = "basic"\nusername = "u"\npassword = "p"\n',
            "apis[0].resources[0].backend_security",
            "a resource cannot have its own",
        ),
        ("", 'backend = "http://x"\n', "apis[0].resources[0].backend", "needs a backend on the API too"),
        ("", 'sandbox_backend = "http://x"\n', "apis[0].resources[0].sandbox_backend", "needs a backend on the API"),
        ('backend = "http://x"\n', "[apis.resources.timeouts]\nread = 1\n", "apis[0].resources[0].timeouts", "unknown"),
    ],
)
def test_bad_resource_backends_name_their_key(
    tmp_path: Path, backend: str, resource: str, key: str, message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        config(tmp_path, resources(backend, 'path = "/r"\n' + resource))
    assert info.value.key == key
    assert message in str(info.value) and "\n" not in str(info.value)


async def test_protect_ignores_resource_backends(tmp_path: Path) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"the app"})

    (tmp_path / "users.htpasswd").write_text("")
    body = resources(
        'backend = "http://127.0.0.1:1"\n', 'path = "/open"\npublic = true\nbackend = "http://127.0.0.1:1"\n'
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=protect(app, config(tmp_path, body)))) as c:
        r = await c.get("http://app.test/a/open")
    assert r.status_code == 200 and r.text == "the app"


def routed(main: int, other: int, sandbox: int) -> str:
    return resources(
        f'backend = "http://127.0.0.1:{main}/main"\nsandbox_backend = "http://127.0.0.1:{sandbox}/sand"\n'
        "[apis.suspension]\ninitial = 60\n",
        f'path = "/orders/{{id}}"\nmethods = ["POST"]\nbackend = "http://127.0.0.1:{other}/orders-svc"\n',
        'path = "/items"\nmethods = ["GET"]\nbackend = { type = "failover", urls = '
        f'["http://127.0.0.1:1", "http://127.0.0.1:{other}/items"] }}\n'
        f'sandbox_backend = "http://127.0.0.1:{sandbox}/items-sand"\n',
        f'path = "/same"\nbackend = "http://127.0.0.1:{main}/main"\n',
        f'path = "/sand-only"\nsandbox_backend = "http://127.0.0.1:{other}/own-sand"\n',
    )


async def test_a_resource_with_its_own_backend_is_routed_there_the_others_to_the_api_s(tmp_path: Path) -> None:
    main, other, sand = Echo("main"), Echo("other"), Echo("sandbox")
    async with uvicorn_server(main) as m, uvicorn_server(other) as o, uvicorn_server(sand) as s:
        proxy = GatewayProxy(config(tmp_path, routed(m.port, o.port, s.port)))
        sandbox = principal(claims={"keytype": "SANDBOX"})

        async def seen(method: str, path: str, user: object = None) -> tuple[str, str]:
            r = await call(proxy, method, path, user)  # type: ignore[arg-type]
            assert r.status_code == 200, r.text
            return r.json()["name"], r.json()["path"]

        assert await seen("POST", "/a/orders/7?x=1") == ("other", "/orders-svc/orders/7")  # its backend's path
        assert await seen("GET", "/a/orders/7") == ("main", "/main/orders/7")  # POST only: GET is the API's
        assert await seen("GET", "/a/pets/1") == ("main", "/main/pets/1")  # no resource at all
        assert await seen("GET", "/a/items") == ("other", "/items/items")  # failover past a refused endpoint
        head = await call(proxy, "HEAD", "/a/items")  # HEAD goes where GET goes, as the router says
        assert head.status_code == 200 and other.seen[-1]["path"] == "/items/items"
        assert await seen("GET", "/a/items", sandbox) == ("sandbox", "/items-sand/items")
        assert await seen("POST", "/a/orders/7", sandbox) == ("sandbox", "/sand/orders/7")  # no own sandbox
        assert await seen("GET", "/a/sand-only", sandbox) == ("other", "/own-sand/sand-only")
        assert await seen("GET", "/a/sand-only") == ("main", "/main/sand-only")
        target = proxy.targets[0]
        items = next(g for g in target.resources if g.label == "GET /items")
        assert items.production is not None and items.production.state()[0]["state"] == "suspended"
        assert target.production.state()[0]["state"] == "active"  # the API's group has its own state
        assert [e["failures"] for e in target.production.state()] == [0]
        await proxy.aclose()


async def test_resources_naming_the_same_endpoints_share_one_group(tmp_path: Path) -> None:
    proxy = GatewayProxy(config(tmp_path, routed(9, 8, 7)))
    target = proxy.targets[0]
    same = next(r for r in target.api.resources if r.path == "/same")
    assert target.by_resource[id(same)][0] is target.production
    plain = GatewayProxy(config(tmp_path, API.format(backend='backend = "http://127.0.0.1:9"\n'))).targets[0]
    assert plain.route is None and not plain.by_resource  # an API without resource backends asks no router


async def test_readiness_lists_the_resource_groups(tmp_path: Path) -> None:
    (tmp_path / "users.htpasswd").write_text("")
    app = gateway(config(tmp_path, routed(9, 8, 7)))
    r = await call(app, "GET", "/health/ready")
    assert r.status_code == 200, r.text
    doc = r.json()["apis"]["a"]
    assert set(doc["resources"]) == {"POST /orders/{id}", "GET /items", "* /same", "* /sand-only"}
    items = doc["resources"]["GET /items"]
    assert items["type"] == "failover" and items["ready"] is True and len(items["production"]) == 2
    assert len(items["sandbox"]) == 1
    assert "production" not in doc["resources"]["* /sand-only"]
    assert "127.0.0.1" not in r.text


async def test_a_public_path_and_a_websocket_go_to_their_resource_s_backend(tmp_path: Path) -> None:
    from websockets.asyncio.client import connect

    from asgi_apim.gateway.websocket import install

    async def backend(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await receive()
        await send({"type": "websocket.send", "text": scope["raw_path"].decode()})
        await send({"type": "websocket.close", "code": 1000})

    main, other = Echo("main"), Echo("other")
    async with uvicorn_server(main) as m, uvicorn_server(other) as o, uvicorn_server(backend) as ws_backend:
        body = resources(
            f'backend = "http://127.0.0.1:{m.port}/main"\n',
            f'path = "/open"\nbackend = "http://127.0.0.1:{o.port}/other"\n',
            f'path = "/live"\nbackend = "http://127.0.0.1:{ws_backend.port}/stream"\n',
        )
        path = tmp_path / "deployment.toml"
        (tmp_path / "users.htpasswd").write_text("")
        path.write_text(
            f'public_paths = ["/a/open"]\n[encryption]\nkey = "{"cd" * 32}"\n'
            '[basic_auth]\nusers_file = "users.htpasswd"\n' + body
        )
        proxy = install(GatewayProxy(load_config(path)))
        r = await call(proxy, "GET", "/a/open")
        assert (r.json()["name"], r.json()["path"]) == ("other", "/other/open")
        async with uvicorn_server(proxy) as gw:
            async with connect(f"ws://127.0.0.1:{gw.port}/a/live") as ws:
                await ws.send("path?")
                assert await asyncio.wait_for(ws.recv(), 5) == "/stream/live"
        await proxy.aclose()
