"""`asgi_apim._fetch.fetch` against real misbehaving servers on 127.0.0.1 (tests/auth/hostile.py)."""

from __future__ import annotations

import asyncio
import json
import socket
import time
import tracemalloc
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asgi_apim._fetch import FetchFailed, FetchTimeout, FetchTooLarge, fetch
from tests.auth.hostile import Hostile, running_hostile

MiB = 1024 * 1024


@pytest.fixture
def hostile() -> Iterator[Hostile]:
    with running_hostile() as state:
        yield state


@pytest.fixture
async def client() -> httpx.AsyncClient:
    async with httpx.AsyncClient(timeout=30) as c:
        yield c


async def test_an_answer_within_its_limits(hostile: Hostile, client: httpx.AsyncClient) -> None:
    hostile.jwks = {"keys": [{"kid": "a"}]}
    got = await fetch(client, "GET", f"{hostile.url}/jwks.json", deadline=2, max_bytes=1024)
    assert got.status == 200
    assert json.loads(got.body) == {"keys": [{"kid": "a"}]}
    assert got.headers["content-type"] == "application/json"


async def test_a_body_of_exactly_the_limit_passes_and_one_byte_more_does_not(
    hostile: Hostile, client: httpx.AsyncClient
) -> None:
    size = len(json.dumps(hostile.jwks).encode())
    assert (await fetch(client, "GET", hostile.url, deadline=2, max_bytes=size)).body
    with pytest.raises(FetchTooLarge):
        await fetch(client, "GET", hostile.url, deadline=2, max_bytes=size - 1)


async def test_a_dripping_server_is_cut_off_at_the_deadline(hostile: Hostile, client: httpx.AsyncClient) -> None:
    hostile.mode, hostile.drip_interval = "drip", 0.1  # never 30 s between bytes: httpx's own timeout never trips
    began = time.monotonic()
    with pytest.raises(FetchTimeout, match="within 0.6 s"):
        await fetch(client, "GET", hostile.url, deadline=0.6, max_bytes=MiB)
    assert 0.55 < time.monotonic() - began < 1.5


async def test_a_server_that_never_answers_is_cut_off_at_the_deadline(
    hostile: Hostile, client: httpx.AsyncClient
) -> None:
    hostile.mode = "hang"
    began = time.monotonic()
    with pytest.raises(FetchTimeout):
        await fetch(client, "POST", hostile.url, deadline=0.4, max_bytes=MiB, data={"token": "t"})
    assert time.monotonic() - began < 1.4


async def test_a_content_length_over_the_limit_is_refused_unread(hostile: Hostile, client: httpx.AsyncClient) -> None:
    hostile.mode = "big"
    began = time.monotonic()
    with pytest.raises(FetchTooLarge, match=f"answer of {50 * MiB} bytes"):
        await fetch(client, "GET", hostile.url, deadline=10, max_bytes=MiB)
    assert time.monotonic() - began < 1.0
    await asyncio.sleep(0.3)
    assert hostile.sent < 16 * MiB  # the connection was closed: the server could write no more than the buffers hold


@pytest.mark.parametrize("mode", ["big", "big-chunked"])
async def test_a_body_over_the_limit_is_abandoned_with_bounded_memory(
    hostile: Hostile, client: httpx.AsyncClient, mode: str
) -> None:
    hostile.mode = mode  # 50 MiB, refused by its Content-Length, or (chunked) abandoned after 1 MiB
    tracemalloc.start()
    try:
        with pytest.raises(FetchTooLarge):
            await fetch(client, "GET", hostile.url, deadline=10, max_bytes=MiB)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * MiB, f"{peak / MiB:.1f} MiB traced"
    await asyncio.sleep(0.3)
    assert hostile.sent < 16 * MiB


async def test_a_half_read_connection_is_never_reused(hostile: Hostile, client: httpx.AsyncClient) -> None:
    hostile.mode = "big-chunked"
    with pytest.raises(FetchTooLarge):
        await fetch(client, "GET", hostile.url, deadline=10, max_bytes=MiB)
    hostile.mode = "ok"
    assert (await fetch(client, "GET", hostile.url, deadline=2, max_bytes=MiB)).status == 200


async def test_a_client_cut_off_at_its_deadline_serves_the_next_call(
    hostile: Hostile, client: httpx.AsyncClient
) -> None:
    hostile.mode, hostile.drip_interval = "drip", 0.05
    with pytest.raises(FetchTimeout):
        await fetch(client, "GET", hostile.url, deadline=0.3, max_bytes=MiB)
    hostile.mode = "ok"
    assert (await fetch(client, "GET", hostile.url, deadline=2, max_bytes=MiB)).status == 200


async def test_a_compressed_answer_is_refused(hostile: Hostile, client: httpx.AsyncClient) -> None:
    hostile.mode = "gzip"
    with pytest.raises(FetchFailed, match="compressed answer"):
        await fetch(client, "GET", hostile.url, deadline=2, max_bytes=MiB)


async def test_transport_failures_are_fetch_failed(client: httpx.AsyncClient) -> None:
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    with pytest.raises(FetchFailed, match="ConnectError"):
        await fetch(client, "GET", f"http://127.0.0.1:{closed}/", deadline=2, max_bytes=MiB)
    with pytest.raises(FetchFailed):
        await fetch(client, "GET", "http://127.0.0.1:99999/", deadline=2, max_bytes=MiB)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(size=st.integers(0, 300_000), limit=st.integers(0, 300_000), chunked=st.booleans())
def test_the_body_is_returned_whole_exactly_when_it_fits(
    hostile: Hostile, size: int, limit: int, chunked: bool
) -> None:
    hostile.mode, hostile.big_bytes = ("big-chunked" if chunked else "big"), size

    async def run() -> bytes | None:
        async with httpx.AsyncClient() as c:
            try:
                return (await fetch(c, "GET", hostile.url, deadline=5, max_bytes=limit)).body
            except FetchTooLarge:
                return None

    body = asyncio.run(run())
    if size <= limit:
        assert body is not None and len(body) == size
    else:
        assert body is None
