"""Properties of what the upstream client writes and reads itself: the request head it builds
(parsed back by httptools' request parser) and the response framing it decides around httptools'
response parser (bytes split anywhere, every way a body can end)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httptools
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asgi_apim.gateway._http11 import Connection
from asgi_apim.gateway.upstream import InvalidRequest, UpstreamRequest, request_head

TOKEN = st.text(alphabet="!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=1)
VALUE = st.binary(max_size=40).map(lambda b: bytes(c for c in b if 0x21 <= c <= 0x7E))
TARGET = st.binary(min_size=1, max_size=60).map(lambda b: b"/" + bytes(c for c in b if 0x21 <= c <= 0x7E))


class _Request:
    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.done = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.done = True


async def _nobody() -> AsyncIterator[bytes]:
    yield b""


@given(
    method=TOKEN,
    target=TARGET,
    headers=st.lists(st.tuples(TOKEN.map(str.encode), VALUE), max_size=8),
    framing=st.sampled_from(["none", "length", "chunked"]),
    length=st.integers(0, 2**40),
)
def test_the_request_head_parses_back_to_what_was_given(
    method: str, target: bytes, headers: list[tuple[bytes, bytes]], framing: str, length: int
) -> None:
    body = None if framing == "none" else _nobody()
    req = UpstreamRequest(method, target, headers, body, length if framing == "length" else None)
    head = request_head(req)
    parsed = _Request()
    parser = httptools.HttpRequestParser(parsed)
    try:
        parser.feed_data(head)
    except httptools.HttpParserInvalidMethodError:
        return  # llhttp knows a fixed list of methods; the head itself is well formed
    assert parsed.done and parser.get_method() == method.encode() and parsed.url == target
    kept = [(n, v) for n, v in headers if n.lower() not in (b"content-length", b"transfer-encoding")]
    framing_headers = {
        "none": [],
        "length": [(b"content-length", str(length).encode())],
        "chunked": [(b"transfer-encoding", b"chunked")],
    }[framing]
    assert parsed.headers == kept + framing_headers
    if body is not None:
        asyncio.run(body.aclose())  # type: ignore[attr-defined]


@given(
    where=st.sampled_from(["method", "target", "name", "value"]),
    bad=st.sampled_from([b"\r", b"\n", b"\r\n", b"\x00", b"\r\nx-injected: 1\r\n"]),
)
def test_cr_lf_or_nul_anywhere_in_the_head_is_refused(where: str, bad: bytes) -> None:
    method, target, name, value = "GET", b"/a", b"x-a", b"v"
    if where == "method":
        method = "GE" + bad.decode() + "T"
    elif where == "target":
        target += bad
    elif where == "name":
        name += bad
    else:
        value += bad
    with pytest.raises(InvalidRequest):
        request_head(UpstreamRequest(method, target, [(name, value)], None, None))


class _Transport:
    """Enough of a transport for `Connection` fed by hand."""

    def __init__(self) -> None:
        self.closing = False
        self.paused = False

    def write(self, data: bytes) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    abort = close

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def get_extra_info(self, name: str) -> Any:
        return None


def _response(status: int, body: bytes, framing: str, sizes: list[int], interim: bool, close: bool) -> bytes:
    head = b"HTTP/1.1 100 Continue\r\n\r\n" if interim else b""
    head += b"HTTP/1.1 %d X\r\nx-a: b\r\n" % status
    if close:
        head += b"connection: close\r\n"
    if framing == "length":
        return head + b"content-length: %d\r\n\r\n" % len(body) + body
    if framing == "chunked":
        out, rest = [head + b"transfer-encoding: chunked\r\n\r\n"], body
        for size in sizes:
            if not rest:
                break
            part, rest = rest[: max(size, 1)], rest[max(size, 1) :]
            out.append(b"%x;ext=1\r\n%s\r\n" % (len(part), part))
        if rest:
            out.append(b"%x\r\n%s\r\n" % (len(rest), rest))
        out.append(b"0\r\nx-trailer: t\r\n\r\n")
        return b"".join(out)
    return head + b"\r\n" + body  # ends with the connection


@settings(max_examples=150, deadline=None)
@given(
    status=st.sampled_from([200, 201, 204, 304, 404, 500]),
    body=st.binary(max_size=3000),
    framing=st.sampled_from(["length", "chunked", "close"]),
    sizes=st.lists(st.integers(1, 700), max_size=6),
    cuts=st.lists(st.integers(0, 4000), max_size=8),
    interim=st.booleans(),
    close=st.booleans(),
    head_request=st.booleans(),
)
def test_any_split_of_a_response_reads_back_its_body_and_framing(
    status: int,
    body: bytes,
    framing: str,
    sizes: list[int],
    cuts: list[int],
    interim: bool,
    close: bool,
    head_request: bool,
) -> None:
    no_body = head_request or status in (204, 304)
    if no_body:
        body = b""
        if framing == "chunked" and head_request:
            framing = "length"  # a HEAD answer says its length but sends nothing
    wire = _response(status, body, framing, sizes, interim, close)
    if no_body:  # the head alone, whatever it says of a body
        wire = wire[: wire.index(b"\r\n\r\n", wire.index(b"HTTP/1.1 %d" % status)) + 4]

    async def run() -> tuple[bytes, Connection]:
        conn = Connection(None, lambda c: None)
        conn.connection_made(_Transport())  # type: ignore[arg-type]
        conn.begin(b"", head_request=head_request, expect_continue=False)
        points = sorted({c % (len(wire) + 1) for c in cuts})
        for a, b in zip([0, *points], [*points, len(wire)]):
            if wire[a:b]:
                conn.data_received(wire[a:b])
        if framing == "close" and not no_body:
            conn.eof_received()
        assert conn.status == status and (b"x-a", b"b") in conn.headers
        got = b""
        while data := await conn.read(1.0):
            got += data
        return got, conn

    got, conn = asyncio.run(run())
    assert got == body
    assert conn.complete
    delimited_by_close = framing == "close" and not no_body
    assert conn.keep_alive == (not close and not delimited_by_close)


@given(surplus=st.binary(min_size=1, max_size=100), cut=st.integers(0, 200))
def test_bytes_after_the_complete_response_keep_it_and_drop_the_connection(surplus: bytes, cut: int) -> None:
    async def run() -> None:
        conn = Connection(None, lambda c: None)
        transport = _Transport()
        conn.connection_made(transport)  # type: ignore[arg-type]
        conn.begin(b"", head_request=False, expect_continue=False)
        wire = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok" + b"HTTP/1.1 200 OK\r\n\r\n" + surplus
        cut_at = cut % (len(wire) + 1)
        for part in (wire[:cut_at], wire[cut_at:]):
            if part:
                conn.data_received(part)
        assert conn.status == 200 and conn.headers == [(b"content-length", b"2")]
        assert await conn.read(1.0) == b"ok" and await conn.read(1.0) == b""
        assert conn.complete and not conn.keep_alive and transport.closing

    asyncio.run(run())


@settings(max_examples=30, deadline=None)
@given(chunk=st.integers(512, 200_000))
def test_a_large_body_pauses_reading_until_taken(chunk: int) -> None:
    async def run() -> None:
        conn = Connection(None, lambda c: None)
        transport = _Transport()
        conn.connection_made(transport)  # type: ignore[arg-type]
        conn.begin(b"", head_request=False, expect_continue=False)
        total = 1_000_000
        conn.data_received(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % total)
        sent = got = 0
        while got < total:
            while sent < total and not transport.paused:
                n = min(chunk, total - sent)
                conn.data_received(b"z" * n)
                sent += n
            assert sent - got <= 256 * 1024 + chunk  # the high-water mark, plus what one read brought
            got += len(await conn.read(1.0))
        assert await conn.read(1.0) == b"" and not transport.paused

    asyncio.run(run())
