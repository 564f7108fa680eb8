"""`GatewayProxy` in-process, against real backends served by uvicorn in the test's event loop."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from starlette.types import Receive, Scope, Send

from asgi_apim.certs.pki import issue_client, make_ca
from asgi_apim.config import Config, load_config
from asgi_apim.errors import ConfigError
from asgi_apim.gateway.app import gateway
from asgi_apim.gateway.proxy import GatewayProxy, transport_error
from asgi_apim.gateway.upstream import ConnectFailed, ConnectionClosed, ConnectTimeout, ProtocolError, ReadTimeout
from asgi_apim.identity import Principal
from tests.gateway.servers import uvicorn_server

KEY = "cd" * 32


class Echo:
    """Answers what arrived; ``/slow`` waits; ``/need-token`` wants ``Bearer tok2`` (401 otherwise)."""

    def __init__(self, name: str = "b") -> None:
        self.name = name
        self.seen: list[dict[str, Any]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = b""
        while True:
            m = await receive()
            body += m.get("body", b"")
            if not m.get("more_body"):
                break
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        doc = {"name": self.name, "path": scope["raw_path"].decode(), "query": scope["query_string"].decode()}
        doc |= {"headers": headers, "body": body.decode()}
        self.seen.append(doc)
        status = 200
        if scope["path"].endswith("/slow"):
            await asyncio.sleep(2)
        if scope["path"].endswith("/need-token") and headers.get("authorization") != "Bearer tok2":
            status = 401
        data = json.dumps(doc).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": data})


# what every scheme needs to be built (the proxy asks the authenticators where credentials are read):
# a key manager whose keys are never fetched here, an API-key signing key and an empty users file
SCHEMES = (
    '[api_keys]\nheader = "apikey"\nquery_param = "apikey"\nsigning_key = "apikey.pem"\n'
    '[basic_auth]\nusers_file = "users.htpasswd"\n'
    '[[key_managers]]\nname = "idp"\nissuer = "https://idp.test"\njwks_url = "https://127.0.0.1:9/jwks.json"\n'
)


def config(tmp_path: Path, body: str) -> Config:
    p = tmp_path / "deployment.toml"
    (tmp_path / "users.htpasswd").touch()
    key = ed25519.Ed25519PrivateKey.generate()
    (tmp_path / "apikey.pem").write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    p.write_text(f'[encryption]\nkey = "{KEY}"\n' + SCHEMES + body)
    return load_config(p)


def api(name: str, backend: str, extra: str = "") -> str:
    return f'[[apis]]\nname = "{name}"\ncontext = "/{name}"\nbackend = {backend}\n{extra}'


async def call(app: Any, method: str, url: str, user: Principal | None = None, **kw: Any) -> httpx.Response:
    async def with_user(scope: Scope, receive: Receive, send: Send) -> None:
        if user is not None:
            scope["user"] = user
        await app(scope, receive, send)

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=with_user), base_url="http://gw.test") as c:
        return await c.request(method, url, **kw)


def principal(**kw: Any) -> Principal:
    return Principal(method=kw.pop("method", "oauth2"), subject="alice", **kw)


async def test_sandbox_credentials_go_to_the_sandbox_backend(tmp_path: Path) -> None:
    prod, sand = Echo("prod"), Echo("sandbox")
    async with uvicorn_server(prod) as p, uvicorn_server(sand) as s:
        cfg = config(
            tmp_path, api("a", f'"http://127.0.0.1:{p.port}"', f'sandbox_backend = "http://127.0.0.1:{s.port}"\n')
        )
        cfg_b = config(tmp_path, api("b", f'"http://127.0.0.1:{p.port}"'))
        proxy, only_prod = GatewayProxy(cfg), GatewayProxy(cfg_b)
        sandbox = principal(claims={"keytype": "SANDBOX"})
        assert (await call(proxy, "GET", "/a/x", sandbox)).json()["name"] == "sandbox"
        assert (await call(proxy, "GET", "/a/x", principal(claims={"keytype": "PRODUCTION"}))).json()["name"] == "prod"
        assert (await call(proxy, "GET", "/a/x")).json()["name"] == "prod"
        r = await call(only_prod, "GET", "/b/x", sandbox)
        assert r.status_code == 403 and r.json()["code"] == 900908
        await proxy.aclose()
        await only_prod.aclose()


async def test_client_credentials_dropped_host_preserved_certificate_forwarded(tmp_path: Path) -> None:
    echo = Echo()
    ca = make_ca("t")
    leaf = issue_client(ca, "caller")
    async with uvicorn_server(echo) as b:
        extra = "preserve_host = true\nforward_client_certificate = true\n"
        extra += '[apis.security]\napplication = ["api_key", "oauth2"]\n'
        cfg = config(tmp_path, api("a", f'"http://127.0.0.1:{b.port}/root"', extra))
        proxy = GatewayProxy(cfg)
        user = principal(method="mutual_ssl", certificate=leaf.cert)
        r = await call(
            proxy,
            "GET",
            "/a/x/y?apikey=secret&keep=1",
            user,
            headers={"apikey": "secret", "authorization": "Bearer client", "x-wso2-client-certificate": "forged"},
        )
        doc = r.json()
        assert doc["path"] == "/root/x/y" and doc["query"] == "keep=1"
        assert "apikey" not in doc["headers"] and "authorization" not in doc["headers"]
        assert doc["headers"]["host"] == "gw.test"
        pem = leaf.cert.public_bytes(Encoding.PEM)
        assert doc["headers"]["x-wso2-client-certificate"] == quote(pem.decode(), safe="")
        await proxy.aclose()


async def test_oauth2_backend_token_retried_once_after_a_401(tmp_path: Path) -> None:
    echo = Echo()
    calls = []

    async def token_endpoint(scope: Scope, receive: Receive, send: Send) -> None:
        while (await receive()).get("more_body"):
            pass
        calls.append(1)
        data = json.dumps({"access_token": f"tok{len(calls)}", "expires_in": 600}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": data})

    async with uvicorn_server(echo) as b, uvicorn_server(token_endpoint) as t:
        extra = (
            f'[apis.backend_security]\ntype = "oauth2"\ntoken_url = "http://127.0.0.1:{t.port}/token"\n'
            'client_id = "gw"\nclient_secret = "s"\n'
        )
        proxy = GatewayProxy(config(tmp_path, api("a", f'"http://127.0.0.1:{b.port}"', extra)))
        r = await call(proxy, "POST", "/a/need-token", content=b"small body")
        assert r.status_code == 200 and r.json()["body"] == "small body" and len(calls) == 2
        assert [d["headers"]["authorization"] for d in echo.seen] == ["Bearer tok1", "Bearer tok2"]
        r = await call(proxy, "GET", "/a/need-token")
        assert r.status_code == 200 and len(calls) == 2  # cached
        await proxy.aclose()


async def test_total_timeout_and_failover_past_a_refused_endpoint(tmp_path: Path) -> None:
    echo = Echo("second")
    async with uvicorn_server(echo) as b:
        dead = 1  # nothing listens on port 1 of loopback
        group = f'{{ type = "failover", urls = ["http://127.0.0.1:{dead}", "http://127.0.0.1:{b.port}"] }}'
        body = api("a", group) + api("t", f'"http://127.0.0.1:{b.port}"', "[apis.timeouts]\ntotal = 0.3\n")
        proxy = GatewayProxy(config(tmp_path, body))
        assert (await call(proxy, "GET", "/a/x")).json()["name"] == "second"
        assert (await call(proxy, "GET", "/a/x")).json()["name"] == "second"  # the first is suspended now
        assert proxy.targets[0].production.state()[0]["state"] == "suspended"
        r = await call(proxy, "GET", "/t/slow")
        assert r.status_code == 504 and r.json()["code"] == 101504
        await proxy.aclose()


async def test_health_and_readiness_without_calling_backends(tmp_path: Path) -> None:
    (tmp_path / "users.htpasswd").write_text("")
    body = api("a", '"http://127.0.0.1:1"')
    app = gateway(config(tmp_path, body + '[apis.security]\napplication = ["basic"]\n'))
    r = await call(app, "GET", "/health")
    assert r.status_code == 200 and r.json() == {"status": "UP"}
    r = await call(app, "GET", "/health/ready")
    assert r.status_code == 200 and r.json()["apis"]["a"]["production"][0]["state"] == "active"
    assert (await call(app, "GET", "/a/x")).status_code == 401  # the stack is in front of the proxy


def test_a_configuration_with_no_backend_is_refused(tmp_path: Path) -> None:
    cfg = config(tmp_path, '[[apis]]\nname = "a"\ncontext = "/a"\n[apis.security]\napplication = ["basic"]\n')
    with pytest.raises(ConfigError, match="no API has a backend"):
        gateway(cfg)
    cfg = config(tmp_path, api("h", '"http://x"').replace('"/h"', '"/health"'))
    with pytest.raises(ConfigError, match="health"):
        gateway(cfg)


@pytest.mark.parametrize(
    ("exc", "status", "code"),
    [
        (ConnectFailed("x 10.0.0.1"), 502, 101503),
        (ConnectTimeout("x"), 504, 101508),
        (ReadTimeout("x"), 504, 101504),
        (TimeoutError(), 504, 101504),
        (ConnectionClosed("x"), 502, 101505),
        (ProtocolError("x"), 502, 101506),
    ],
)
def test_transport_errors_map_to_wso2_codes_without_the_cause(exc: Exception, status: int, code: int) -> None:
    err = transport_error(exc)  # type: ignore[arg-type]
    assert (err.status, err.code) == (status, code) and "10.0.0.1" not in err.detail


async def test_the_backend_jwt_reaches_the_backend_and_a_client_s_never(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import NoEncryption, PrivateFormat

    key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "jwt.pem").write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    echo = Echo()
    async with uvicorn_server(echo) as b:
        extra = '[apis.backend_jwt]\nsigning_key = "jwt.pem"\n'
        proxy = GatewayProxy(config(tmp_path, api("a", f'"http://127.0.0.1:{b.port}"', extra)))
        r = await call(proxy, "GET", "/a/x", principal(tier="Gold"), headers={"x-jwt-assertion": "forged"})
        token = r.json()["headers"]["x-jwt-assertion"]
        claims = jwt.decode(token, key.public_key(), algorithms=["ES256"])
        assert claims["sub"] == "alice"
        r = await call(proxy, "GET", "/a/x", headers={"x-jwt-assertion": "forged"})
        assert "x-jwt-assertion" not in r.json()["headers"]  # anonymous: none, and never the client's
        await proxy.aclose()


async def test_websocket_frames_both_ways_and_the_client_s_close_code_reaches_the_backend(tmp_path: Path) -> None:
    from websockets.asyncio.client import connect

    from asgi_apim.gateway.websocket import install

    closed: list[int] = []

    async def backend(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept", "subprotocol": (scope.get("subprotocols") or [None])[0]})
        while True:
            m = await receive()
            if m["type"] == "websocket.disconnect":
                closed.append(m.get("code", 0))
                return
            await send({"type": "websocket.send", "text": "echo:" + (m.get("text") or "")})

    async with uvicorn_server(backend) as b:
        proxy = install(GatewayProxy(config(tmp_path, api("w", f'"http://127.0.0.1:{b.port}/ws"'))))
        async with uvicorn_server(proxy) as gw:
            async with connect(f"ws://127.0.0.1:{gw.port}/w/x", subprotocols=["v1"]) as ws:  # type: ignore[list-item]
                assert ws.subprotocol == "v1"
                await ws.send("hi")
                assert await asyncio.wait_for(ws.recv(), 5) == "echo:hi"
                await ws.close(4003, "bye")
            for _ in range(100):
                if closed:
                    break
                await asyncio.sleep(0.02)
        assert closed == [4003]
        await proxy.aclose()


async def test_a_websocket_backend_that_is_down_refuses_the_handshake(tmp_path: Path) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus

    from asgi_apim.gateway.websocket import install

    body = api("w", '"http://127.0.0.1:1"', "[apis.suspension]\ninitial = 0\n")
    proxy = install(GatewayProxy(config(tmp_path, body)))
    async with uvicorn_server(proxy) as gw:
        with pytest.raises(InvalidStatus) as info:
            async with connect(f"ws://127.0.0.1:{gw.port}/w/x"):
                pass
        assert info.value.response.status_code == 502
        assert json.loads(info.value.response.body)["code"] == 101503


async def test_head_keeps_the_length_without_a_body(tmp_path: Path) -> None:
    async with uvicorn_server(Echo()) as b:
        proxy = GatewayProxy(config(tmp_path, api("a", f'"http://127.0.0.1:{b.port}"')))
        async with uvicorn_server(proxy) as gw:
            async with httpx.AsyncClient() as c:
                get = await c.get(f"http://127.0.0.1:{gw.port}/a/x")
                head = await c.head(f"http://127.0.0.1:{gw.port}/a/x")
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-length"] == get.headers["content-length"] == str(len(get.content))
        assert "date" in head.headers and len(head.headers.get_list("server")) <= 1
        await proxy.aclose()


async def test_an_unforeseen_fault_is_a_502_never_a_500(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    def broken(host: str, port: int) -> Any:
        raise RuntimeError("a fault of ours")

    proxy = GatewayProxy(config(tmp_path, api("a", '"https://127.0.0.1:1"')), ssl_contexts=broken)
    r = await call(proxy, "GET", "/a/x")
    assert r.status_code == 502 and r.json()["code"] == 101503
    assert "fault" not in r.text and "RuntimeError" in caplog.text
