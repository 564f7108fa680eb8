"""The upstream client against a real uvicorn backend: bodies both ways, framing, pooling."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from asgi_apim.gateway.upstream import (
    ConnectFailed,
    Origin,
    PoolTimeout,
    RequestBodyError,
    UpstreamPool,
)
from tests.gateway.servers import chunks, get, uvicorn_server


async def echo(request: Request) -> JSONResponse:
    body = await request.body()
    return JSONResponse(
        {
            "method": request.method,
            "path": request.url.path,
            "query": request.url.query,
            "length": len(body),
            "sha256": hashlib.sha256(body).hexdigest(),
            "content_length": request.headers.get("content-length"),
            "transfer_encoding": request.headers.get("transfer-encoding"),
            "host": request.headers.get("host"),
            "x_test": request.headers.getlist("x-test"),
        }
    )


async def streamed(request: Request) -> StreamingResponse:
    async def parts() -> AsyncIterator[bytes]:
        for i in range(5):
            yield f"part {i};".encode()

    return StreamingResponse(parts(), media_type="text/plain")


async def drip(request: Request) -> StreamingResponse:
    async def parts() -> AsyncIterator[bytes]:
        for i in range(3):
            yield f"drop {i};".encode()
            await asyncio.sleep(0.1)

    return StreamingResponse(parts(), media_type="text/plain")


async def nothing(request: Request) -> Response:
    return Response(status_code=int(request.path_params["status"]))


async def sized(request: Request) -> PlainTextResponse:
    return PlainTextResponse("x" * 100)


async def slow(request: Request) -> PlainTextResponse:
    await asyncio.sleep(float(request.query_params.get("s", "0.3")))
    return PlainTextResponse("late")


APP = Starlette(
    routes=[
        Route("/echo/{rest:path}", echo, methods=["GET", "POST", "PUT", "DELETE", "PATCH"]),
        Route("/stream", streamed),
        Route("/drip", drip),
        Route("/status/{status}", nothing),
        Route("/sized", sized, methods=["GET", "HEAD"]),
        Route("/slow", slow),
    ]
)


async def test_get_passes_method_target_and_headers_as_given() -> None:
    async with uvicorn_server(APP) as srv:
        pool = srv.pool()
        headers = [(b"host", b"api.example"), (b"x-test", b"one"), (b"x-test", b"two")]
        resp = await pool.request(get(b"/echo/a%2Fb/c?x=1&y=%20", headers=headers))
        assert resp.status == 200
        data = await resp.read()
        await pool.aclose()
    import json

    got = json.loads(data)
    assert got["path"] == "/echo/a/b/c"  # starlette decodes; the raw bytes went as given
    assert got["query"] == "x=1&y=%20"
    assert got["host"] == "api.example"
    assert got["x_test"] == ["one", "two"]
    assert got["length"] == 0 and got["content_length"] is None and got["transfer_encoding"] is None


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
async def test_request_body_with_length_or_chunked(declared: bool) -> None:
    parts = [b"a" * 1000, b"", b"b" * 70000, b"c"]
    total = b"".join(parts)
    async with uvicorn_server(APP) as srv:
        pool = srv.pool()
        headers = [(b"host", b"x"), (b"content-length", b"999"), (b"transfer-encoding", b"gzip")]  # replaced
        resp = await pool.request(
            get(
                b"/echo/", "POST", headers=headers, body=chunks(*parts), content_length=len(total) if declared else None
            )
        )
        got = (await resp.read()).decode()
        await pool.aclose()
    assert hashlib.sha256(total).hexdigest() in got
    if declared:
        assert f'"content_length":"{len(total)}"' in got and '"transfer_encoding":null' in got
    else:
        assert '"transfer_encoding":"chunked"' in got and '"content_length":null' in got


async def test_empty_body_with_zero_length_sends_content_length_zero() -> None:
    async with uvicorn_server(APP) as srv:
        pool = srv.pool()
        resp = await pool.request(get(b"/echo/", "POST", content_length=0))
        assert '"content_length":"0"' in (await resp.read()).decode()
        await pool.aclose()


async def test_body_longer_or_shorter_than_its_length_is_refused_and_the_connection_dropped() -> None:
    async with uvicorn_server(APP) as srv:
        pool = srv.pool()
        with pytest.raises(RequestBodyError):
            await pool.request(get(b"/echo/", "POST", body=chunks(b"abc", b"def"), content_length=4))
        with pytest.raises(RequestBodyError):
            await pool.request(get(b"/echo/", "POST", body=chunks(b"abc"), content_length=4))
        resp = await pool.request(get(b"/echo/"))
        assert resp.status == 200
        await resp.aclose()
        await pool.aclose()
    assert srv.connections == 3


async def test_chunked_response_is_dechunked() -> None:
    async with uvicorn_server(APP) as srv:
        pool = srv.pool()
        resp = await pool.request(get(b"/stream"))
        assert (b"transfer-encoding", b"chunked") in resp.headers
        assert await resp.read() == b"".join(f"part {i};".encode() for i in range(5))
        resp = await pool.request(get(b"/stream"))
        await resp.read()
        await pool.aclose()
    assert srv.connections == 1


@pytest.mark.parametrize("status", [204, 304])
async def test_no_body_statuses_keep_the_connection(status: int) -> None:
    async with uvicorn_server(APP) as srv:
        pool = srv.pool()
        for _ in range(3):
            resp = await pool.request(get(f"/status/{status}".encode()))
            assert resp.status == status
            assert await resp.read() == b""
        await pool.aclose()
    assert srv.connections == 1


async def test_head_has_no_body_although_its_content_length_says_so() -> None:
    async with uvicorn_server(APP) as srv:
        pool = srv.pool()
        resp = await pool.request(get(b"/sized", "HEAD"))
        assert resp.status == 200 and (b"content-length", b"100") in resp.headers
        assert await resp.read() == b""
        resp = await pool.request(get(b"/sized"))
        assert await resp.read() == b"x" * 100
        resp = await pool.request(get(b"/sized", "HEAD"))
        assert await resp.read() == b""
        await pool.aclose()
    assert srv.connections == 1


async def test_sequential_requests_reuse_one_connection() -> None:
    async with uvicorn_server(APP) as srv:
        pool = srv.pool()
        for i in range(20):
            resp = await pool.request(get(f"/echo/{i}".encode()))
            await resp.read()
        await pool.aclose()
    assert srv.connections == 1 and pool.connections_made == 1


async def test_concurrency_is_bounded_by_max_connections() -> None:
    async with uvicorn_server(APP) as srv:
        pool = srv.pool(max_connections=3)

        async def one() -> bytes:
            resp = await pool.request(get(b"/slow?s=0.05"))
            return await resp.read()

        results = await asyncio.gather(*(one() for _ in range(12)))
        await pool.aclose()
    assert results == [b"late"] * 12
    assert srv.connections == 3


async def test_waiting_for_a_busy_pool_times_out() -> None:
    async with uvicorn_server(APP) as srv:
        pool = srv.pool(max_connections=1, connect_timeout=0.2)
        held = await pool.request(get(b"/drip"))  # its body unread: the connection stays busy
        with pytest.raises(PoolTimeout):
            await pool.request(get(b"/echo/"))
        await held.aclose()  # not read to its end: closed, which frees the slot
        resp = await pool.request(get(b"/echo/"))
        assert resp.status == 200
        await resp.aclose()
        await pool.aclose()
    assert srv.connections == 2


async def test_a_connection_given_back_goes_to_a_waiter() -> None:
    async with uvicorn_server(APP) as srv:
        pool = srv.pool(max_connections=1)
        first = await pool.request(get(b"/drip"))
        second = asyncio.ensure_future(pool.request(get(b"/echo/")))
        await asyncio.sleep(0.05)
        assert not second.done()
        await first.read()  # read to its end: handed to the waiter
        resp = await second
        await resp.read()
        await pool.aclose()
    assert srv.connections == 1


async def test_a_waiter_cancelled_as_it_is_handed_a_connection_passes_it_on() -> None:
    async with uvicorn_server(APP) as srv:
        pool = srv.pool(max_connections=1, connect_timeout=1.0)
        first = await pool.request(get(b"/drip"))
        waiting = asyncio.ensure_future(pool.request(get(b"/echo/")))
        await asyncio.sleep(0.05)
        await first.read()  # hands the connection to the waiter ...
        waiting.cancel()  # ... which gives up before it runs again
        with pytest.raises(asyncio.CancelledError):
            await waiting
        resp = await pool.request(get(b"/echo/"))  # the connection was given back, not lost
        assert resp.status == 200
        await resp.read()
        await pool.aclose()
    assert srv.connections == 1


async def test_a_cancelled_request_gives_its_connection_slot_back() -> None:
    async with uvicorn_server(APP) as srv:
        pool = srv.pool(max_connections=1, connect_timeout=0.5)
        for _ in range(3):
            task = asyncio.ensure_future(pool.request(get(b"/slow?s=1")))
            await asyncio.sleep(0.1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        resp = await pool.request(get(b"/echo/"))
        assert resp.status == 200
        await resp.read()
        await pool.aclose()


async def test_closing_the_pool_fails_its_waiters() -> None:
    async with uvicorn_server(APP) as srv:
        pool = srv.pool(max_connections=1)
        first = await pool.request(get(b"/drip"))
        waiting = asyncio.ensure_future(pool.request(get(b"/echo/")))
        await asyncio.sleep(0.05)
        await pool.aclose()
        with pytest.raises(ConnectFailed, match="closed"):
            await waiting
        await first.aclose()


async def test_keepalive_expiry_opens_a_new_connection() -> None:
    async with uvicorn_server(APP) as srv:
        pool = srv.pool(keepalive_expiry=0.1)
        await (await pool.request(get(b"/echo/"))).read()
        await (await pool.request(get(b"/echo/"))).read()
        await asyncio.sleep(0.2)
        await (await pool.request(get(b"/echo/"))).read()
        await pool.aclose()
    assert srv.connections == 2


async def test_idle_connections_are_closed_once_expired_without_a_request() -> None:
    async with uvicorn_server(APP) as srv:
        pool = srv.pool(keepalive_expiry=0.1)
        responses = [await pool.request(get(b"/drip")) for _ in range(2)]
        for resp in responses:
            await resp.read()
        assert pool.idle_connections == 2
        await asyncio.sleep(0.3)
        assert pool.idle_connections == 0
        await (await pool.request(get(b"/echo/"))).read()
        await pool.aclose()
    assert srv.connections == 3


async def test_a_response_closed_unread_closes_its_connection() -> None:
    async with uvicorn_server(APP) as srv:
        pool = srv.pool()
        resp = await pool.request(get(b"/drip"))
        await resp.aclose()
        await resp.aclose()  # twice is harmless
        await (await pool.request(get(b"/echo/"))).read()
        await pool.aclose()
    assert srv.connections == 2


async def test_an_abandoned_stream_never_breaks_the_next_request() -> None:
    async with uvicorn_server(APP) as srv:
        pool = srv.pool()
        resp = await pool.request(get(b"/drip"))
        stream = resp.stream()
        async for _ in stream:
            break
        await resp.aclose()
        second = await pool.request(get(b"/echo/"))
        await stream.aclose()  # the generator's cleanup must not touch a connection it gave up
        assert (await second.read()).startswith(b"{")
        await pool.aclose()


async def test_refused_connection() -> None:
    async with uvicorn_server(APP) as srv:
        port = srv.port
    pool = UpstreamPool(Origin("http", "127.0.0.1", port))
    with pytest.raises(ConnectFailed):
        await pool.request(get())
    await pool.aclose()


async def test_closed_pool_refuses_requests() -> None:
    async with uvicorn_server(APP) as srv:
        pool = srv.pool()
        await pool.aclose()
        with pytest.raises(ConnectFailed):
            await pool.request(get())


def test_origin_scheme_is_http_or_https() -> None:
    with pytest.raises(ValueError):
        Origin("ftp", "127.0.0.1", 21)


def test_pool_needs_a_connection() -> None:
    with pytest.raises(ValueError):
        UpstreamPool(Origin("http", "127.0.0.1", 1), max_connections=0)
