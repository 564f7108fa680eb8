"""Backend credentials: fixed ones, and OAuth2 client credentials against a real ASGI token endpoint."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from asgi_apim.errors import BackendError
from asgi_apim.gateway.backend_security import OAuth2ClientCredentials, backend_auth
from asgi_apim.gateway_config import BackendSecurityConfig


async def test_basic_bearer_and_api_key() -> None:
    headers: list[tuple[bytes, bytes]] = []
    auth = backend_auth(BackendSecurityConfig(type="basic", username="svc", password="pw"))
    assert await auth.apply(headers, b"a=1") == (None, b"a=1")
    assert headers == [(b"authorization", b"Basic " + base64.b64encode(b"svc:pw"))]
    assert auth.header_name == b"authorization" and not auth.retry_on_401
    headers = []
    await backend_auth(BackendSecurityConfig(type="bearer", token="t0k")).apply(headers, b"")
    assert headers == [(b"authorization", b"Bearer t0k")]
    headers = []
    auth = backend_auth(BackendSecurityConfig(type="api_key", location="header", name="X-Key", value="v"))
    await auth.apply(headers, b"")
    assert headers == [(b"x-key", b"v")] and auth.header_name == b"x-key"
    auth = backend_auth(BackendSecurityConfig(type="api_key", location="query", name="key", value="a b&c"))
    assert await auth.apply([], b"") == (None, b"key=a%20b%26c")
    assert await auth.apply([], b"x=1") == (None, b"x=1&key=a%20b%26c")
    assert auth.query_name == "key"


class TokenServer:
    """A token endpoint (RFC 6749 4.4) that counts its calls."""

    def __init__(self, answer: Any = None, delay: float = 0.0, status: int = 200) -> None:
        self.calls = 0
        self.forms: list[dict[str, str]] = []
        self.auth: list[str] = []
        self.answer = answer
        self.delay = delay
        self.status = status

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        request = Request(scope, receive)
        self.calls += 1
        self.forms.append(dict(parse_qsl((await request.body()).decode())))
        self.auth.append(request.headers.get("authorization", ""))
        await asyncio.sleep(self.delay)
        answer = self.answer if self.answer is not None else {"access_token": f"tok{self.calls}", "expires_in": 100}
        if isinstance(answer, bytes):
            response: Response = Response(answer, status_code=self.status)
        else:
            response = JSONResponse(answer, status_code=self.status)
        await response(scope, receive, send)


def oauth2(server: TokenServer, clock: Any = None, **kw: Any) -> OAuth2ClientCredentials:
    cfg = BackendSecurityConfig(
        type="oauth2", token_url="http://idp/token", client_id="gw", client_secret="s3cret", scopes=("a", "b"), **kw
    )
    extra = {"clock": clock} if clock else {}
    return OAuth2ClientCredentials(cfg, transport=httpx.ASGITransport(app=server), **extra)


async def test_token_fetched_once_for_concurrent_requests_and_cached() -> None:
    server = TokenServer(delay=0.05)
    auth = oauth2(server)
    tokens = await asyncio.gather(*(auth.token() for _ in range(20)))
    assert set(tokens) == {"tok1"} and server.calls == 1
    assert await auth.token() == "tok1" and server.calls == 1
    assert server.forms[0] == {"grant_type": "client_credentials", "scope": "a b"}
    assert server.auth[0] == "Basic " + base64.b64encode(b"gw:s3cret").decode()
    headers: list[tuple[bytes, bytes]] = []
    used, _ = await auth.apply(headers, b"")
    assert used == "tok1" and headers == [(b"authorization", b"Bearer tok1")]
    await auth.aclose()


async def test_refreshed_shortly_before_expiry_and_after_a_401() -> None:
    now = [0.0]
    server = TokenServer()
    auth = oauth2(server, clock=lambda: now[0])
    assert await auth.token() == "tok1"
    now[0] = 89.0  # expires_in 100: refreshed 10 s early
    assert await auth.token() == "tok1"
    now[0] = 90.5
    assert await auth.token() == "tok2"
    auth.rejected("stale-token")  # not the cached one: nothing to do
    assert await auth.token() == "tok2" and server.calls == 2
    auth.rejected("tok2")
    assert await auth.token() == "tok3"
    await auth.aclose()


@pytest.mark.parametrize(
    ("answer", "status"),
    [
        ({"error": "invalid_client"}, 401),
        ({"access_token": "x", "token_type": "mac"}, 200),
        ({"token_type": "bearer"}, 200),
        (b"not json", 200),
        ({"access_token": "bad\r\ntoken"}, 200),
        (b"x" * 70000, 200),
    ],
)
async def test_a_token_endpoint_failure_is_502_without_the_secret(
    answer: Any, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    auth = oauth2(TokenServer(answer=answer, status=status))
    with pytest.raises(BackendError) as info:
        await auth.token()
    assert (info.value.status, info.value.code) == (502, 101503)
    assert "s3cret" not in caplog.text and "s3cret" not in str(info.value)
    await auth.aclose()


async def test_a_slow_token_endpoint_hits_the_deadline() -> None:
    auth = oauth2(TokenServer(delay=2), token_timeout=0.1)
    with pytest.raises(BackendError):
        await auth.token()
    await auth.aclose()


async def test_expires_in_as_text_and_missing() -> None:
    now = [0.0]
    auth = oauth2(TokenServer(answer={"access_token": "t", "expires_in": "3600"}), clock=lambda: now[0])
    await auth.token()
    now[0] = 3000
    assert auth.fetches == 1 and await auth.token() == "t" and auth.fetches == 1
    await auth.aclose()
    assert json.dumps({"ok": True})
