"""The edge stages on their own: interceptors (order, early answers, resource overrides, failures),
per-API CORS dispatch and HTTPS-only transports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from asgi_apim.config import parse_config
from asgi_apim.edge import APICORSMiddleware, InterceptorMiddleware, TransportMiddleware
from asgi_apim.routing import Router
from tests.asgi import call, call_scope, make_scope


def router(*apis: dict[str, Any]) -> Router:
    cfg = parse_config({"encryption": {"key": "ab" * 32}, "apis": list(apis)}, base=Path("."))
    return Router.from_config(cfg)


async def echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    headers = [(b"x-seen", b",".join(v for k, v in scope["headers"] if k == b"x-tag") or b"-"), (b"x-secret", b"s")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"app"})


H = "tests.edge.hooks"


async def test_request_interceptors_in_order_and_a_resource_of_its_own() -> None:
    r = router(
        {
            "name": "a",
            "context": "/a",
            "interceptors": [f"{H}:tag", f"{H}:tag_again", f"{H}:instance"],
            "response_interceptors": [f"{H}:teapot"],
            "resources": [
                {"path": "/quiet", "interceptors": [], "response_interceptors": []},
                {"path": "/answer", "methods": ["POST"], "interceptors": [f"{H}:answer"]},
            ],
        },
        {"name": "b", "context": "/b"},
    )
    stack = InterceptorMiddleware(echo, router=r)
    assert stack
    both = await call(stack, "GET", "/a/x")
    assert both.status == 418 and both.headers["x-seen"] == "first,second" and "x-secret" not in both.headers
    quiet = await call(stack, "GET", "/a/quiet")
    assert quiet.status == 200 and quiet.headers["x-seen"] == "-"
    answered = await call(stack, "POST", "/a/answer")
    assert answered.status == 202 and answered.body == b"answered for a"  # response interceptors: the app's responses
    assert (await call(stack, "GET", "/b/x")).headers["x-seen"] == "-"
    assert not InterceptorMiddleware(echo, router=router({"name": "b", "context": "/b"}))


async def test_an_answer_that_is_not_a_response_is_a_500() -> None:
    stack = InterceptorMiddleware(echo, router=router({"name": "a", "context": "/a", "interceptors": [f"{H}:wrong"]}))
    r = await call(stack, "GET", "/a/x")
    assert r.status == 500 and r.json()["code"] == 101500


async def test_websockets_and_lifespan_pass_the_interceptors() -> None:
    seen = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    stack = InterceptorMiddleware(app, router=router({"name": "a", "context": "/a", "interceptors": [f"{H}:answer"]}))
    await stack({"type": "websocket", "path": "/a/x", "headers": []}, None, None)  # type: ignore[arg-type]
    await stack({"type": "lifespan"}, None, None)  # type: ignore[arg-type]
    assert seen == ["websocket", "lifespan"]


async def test_cors_per_api_and_nothing_for_the_others() -> None:
    cors = {"allow_origins": ["https://x.example"], "allow_methods": ["GET"]}
    stack = APICORSMiddleware(
        echo, router=router({"name": "a", "context": "/a", "cors": cors}, {"name": "b", "context": "/b"})
    )
    origin = [("origin", "https://x.example")]
    assert (await call(stack, "GET", "/a/1", origin)).headers["access-control-allow-origin"] == "https://x.example"
    assert "access-control-allow-origin" not in (await call(stack, "GET", "/b/1", origin)).headers
    preflight = await call(stack, "OPTIONS", "/a/1", [*origin, ("access-control-request-method", "GET")])
    assert preflight.status == 200 and preflight.body == b"OK"
    disallowed = await call(stack, "OPTIONS", "/a/1", [*origin, ("access-control-request-method", "DELETE")])
    assert disallowed.status == 400  # Starlette's answer to a method the API does not allow
    assert stack.apis.get("/b/1") is None and stack.apis.get("/elsewhere") is None


async def test_https_only_refuses_plain_http_and_ws() -> None:
    stack = TransportMiddleware(
        echo, router=router({"name": "a", "context": "/a", "transports": ["https"]}, {"name": "b", "context": "/b"})
    )
    plain = await call(stack, "GET", "/a/x")
    assert plain.status == 403 and plain.json()["code"] == 900906 and "HTTPS only" in plain.json()["detail"]
    assert (await call(stack, "GET", "/a/x", scheme="https")).status == 200
    assert (await call(stack, "GET", "/b/x")).status == 200
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = make_scope(path="/a/ws", type="websocket", scheme="ws")
    await stack(scope, None, send)  # type: ignore[arg-type]
    assert sent and sent[0]["type"] == "websocket.close"
    r = await call_scope(stack, make_scope(path="/a/x", scheme="https"))
    assert r.body == b"app"
