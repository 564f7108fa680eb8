"""100 MiB through the upstream client each way, checked by SHA-256, with memory staying flat:
uvicorn as the backend, tracemalloc and the resident set size watched during the transfer."""

from __future__ import annotations

import asyncio
import hashlib
import os
import tracemalloc
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, StreamingResponse
from starlette.routing import Route

from tests.gateway.servers import get, uvicorn_server

SIZE = 100 * 1024 * 1024
BLOCK = 64 * 1024
LIMIT = 24 * 1024 * 1024  # far below the 100 MiB a buffered body would take


def blocks() -> AsyncIterator[bytes]:
    async def gen() -> AsyncIterator[bytes]:
        seed = hashlib.sha256(b"seed").digest() * (BLOCK // 32)
        for i in range(SIZE // BLOCK):
            yield i.to_bytes(8, "big") + seed[8:]

    return gen()


async def expected() -> str:
    h = hashlib.sha256()
    async for b in blocks():
        h.update(b)
    return h.hexdigest()


async def upload(request: Request) -> PlainTextResponse:
    h, n = hashlib.sha256(), 0
    async for chunk in request.stream():
        h.update(chunk)
        n += len(chunk)
        if n % (2 * 1024 * 1024) < len(chunk):
            await asyncio.sleep(0.005)  # a backend slower than the client
    return PlainTextResponse(f"{n} {h.hexdigest()}")


async def download(request: Request) -> StreamingResponse:
    return (
        StreamingResponse(blocks(), headers={"content-length": str(SIZE)})
        if request.query_params.get("length")
        else StreamingResponse(blocks())
    )


APP = Starlette(routes=[Route("/upload", upload, methods=["POST"]), Route("/download", download)])


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class Watch:
    """Samples the resident set size while a transfer runs; tracemalloc's peak over the same span."""

    def __init__(self) -> None:
        self.peak_rss = 0
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Watch:
        tracemalloc.start()
        tracemalloc.reset_peak()
        self.base_rss = rss()
        self._task = asyncio.ensure_future(self._sample())
        return self

    async def _sample(self) -> None:
        while True:
            self.peak_rss = max(self.peak_rss, rss())
            await asyncio.sleep(0.05)

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        self.peak_traced = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()

    def check(self) -> None:
        assert self.peak_traced < LIMIT, f"traced peak {self.peak_traced / 2**20:.1f} MiB"
        assert self.peak_rss - self.base_rss < LIMIT, f"RSS grew {(self.peak_rss - self.base_rss) / 2**20:.1f} MiB"


async def test_100_mib_upload_chunked_and_with_length() -> None:
    want = await expected()
    async with uvicorn_server(APP) as srv:
        pool = srv.pool(read_timeout=60)
        for length in (SIZE, None):
            async with Watch() as watch:
                resp = await pool.request(get(b"/upload", "POST", body=blocks(), content_length=length))
                answer = await resp.read()
            assert answer == f"{SIZE} {want}".encode()
            watch.check()
        await pool.aclose()


async def test_100_mib_download_chunked_and_with_length() -> None:
    want = await expected()
    async with uvicorn_server(APP) as srv:
        pool = srv.pool(read_timeout=60)
        for target in (b"/download?length=1", b"/download"):
            async with Watch() as watch:
                resp = await pool.request(get(target))
                h, n = hashlib.sha256(), 0
                async for chunk in resp.stream():
                    h.update(chunk)
                    n += len(chunk)
                    if n % (1024 * 1024) < len(chunk):
                        await asyncio.sleep(0.01)  # a consumer slower than the backend
            assert (n, h.hexdigest()) == (SIZE, want)
            watch.check()
        await pool.aclose()
    assert srv.connections == 1
