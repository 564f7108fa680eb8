"""The upstream client against raw servers that misbehave: resets, garbage, hangs, early closes,
stale keep-alive connections, 100-continue, slow readers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from asgi_apim.gateway._http11 import HIGH_WATER
from asgi_apim.gateway.upstream import ConnectionClosed, ProtocolError, ReadTimeout
from tests.gateway.servers import chunks, get, raw_server, read_head, reset

OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


class ReadTimers:
    """Counts the read-deadline timers the connections arm (``_bark``) on the running loop while inside."""

    def __init__(self) -> None:
        self.count = 0

    def __enter__(self) -> ReadTimers:
        loop = asyncio.get_running_loop()
        call_at = loop.call_at

        def counting(when: float, callback: Any, *args: Any, **kw: Any) -> asyncio.TimerHandle:
            self.count += getattr(callback, "__name__", "") == "_bark"
            return call_at(when, callback, *args, **kw)

        loop.call_at = counting  # type: ignore[method-assign]
        self._loop = loop
        return self

    def __exit__(self, *exc: object) -> None:
        del self._loop.call_at


async def test_garbage_status_line() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(1)

    async with raw_server(handler) as srv:
        pool = srv.pool()
        with pytest.raises(ProtocolError):
            await pool.request(get())
        await pool.aclose()


async def test_oversized_response_head() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\n" + b"x-big: " + b"a" * 70000 + b"\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(1)

    async with raw_server(handler) as srv:
        pool = srv.pool()
        with pytest.raises(ProtocolError):
            await pool.request(get())
        await pool.aclose()


async def test_garbage_in_a_chunked_body() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n")
        await writer.drain()
        await asyncio.sleep(1)

    async with raw_server(handler) as srv:
        pool = srv.pool()
        resp = await pool.request(get())
        with pytest.raises(ProtocolError):
            await resp.read()
        await pool.aclose()


async def test_no_response_head_times_out() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        await asyncio.sleep(5)

    async with raw_server(handler) as srv:
        pool = srv.pool(read_timeout=0.2)
        started = time.monotonic()
        with pytest.raises(ReadTimeout):
            await pool.request(get())
        assert time.monotonic() - started < 2
        await pool.aclose()


async def test_a_body_that_stalls_times_out() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc")
        await writer.drain()
        await asyncio.sleep(5)

    async with raw_server(handler) as srv:
        pool = srv.pool()
        resp = await pool.request(get(), read_timeout=0.2)
        got = []
        with pytest.raises(ReadTimeout):
            async for chunk in resp.stream():
                got.append(chunk)
        assert got == [b"abc"]
        await pool.aclose()


async def test_each_wait_on_a_keep_alive_connection_has_its_own_read_deadline() -> None:
    """The connection's one timer, armed for a quick first request, fires before the second one's
    deadline: it is set again for that deadline, neither failing the second request early nor late."""
    requests = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal requests
        while True:
            await read_head(reader)
            requests += 1
            if requests > 1:
                await asyncio.sleep(5)  # the second request hangs
            writer.write(OK)
            await writer.drain()

    async with raw_server(handler) as srv:
        pool = srv.pool(read_timeout=0.4)
        with ReadTimers() as timers:
            assert await (await pool.request(get())).read() == b"ok"
            armed = timers.count
            await asyncio.sleep(0.25)  # the first wait's deadline is 0.15 s away
            started = time.monotonic()
            with pytest.raises(ReadTimeout, match="no response head from the backend within 0.4 s"):
                await pool.request(get())
            waited = time.monotonic() - started
        assert 0.35 <= waited < 1.0, waited
        assert srv.connections == 1 and armed == 1
        await pool.aclose()


async def test_quick_requests_on_a_keep_alive_connection_arm_one_read_timer() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_head(reader)
            await asyncio.sleep(0.001)  # the head is awaited, not already there
            writer.write(OK)
            await writer.drain()

    async with raw_server(handler) as srv:
        pool = srv.pool(read_timeout=30)
        with ReadTimers() as timers:
            for _ in range(20):
                assert await (await pool.request(get())).read() == b"ok"
        assert srv.connections == 1 and timers.count == 1
        await pool.aclose()


async def test_reset_mid_body() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n" + b"a" * 1000)
        await writer.drain()
        await asyncio.sleep(0.05)
        reset(writer)

    async with raw_server(handler) as srv:
        pool = srv.pool()
        resp = await pool.request(get())
        with pytest.raises(ConnectionClosed):
            await resp.read()
        await pool.aclose()


async def test_closed_before_responding() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        reset(writer)

    async with raw_server(handler) as srv:
        pool = srv.pool()
        with pytest.raises(ConnectionClosed):
            await pool.request(get())  # a new connection: never sent again
        await pool.aclose()
    assert srv.connections == 1


async def test_a_body_delimited_by_close() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\n")
        for part in (b"one ", b"two ", b"three"):
            writer.write(part)
            await writer.drain()
            await asyncio.sleep(0.02)
        writer.close()

    async with raw_server(handler) as srv:
        pool = srv.pool()
        assert await (await pool.request(get())).read() == b"one two three"
        assert await (await pool.request(get())).read() == b"one two three"
        await pool.aclose()
    assert srv.connections == 2  # never reused


async def test_connection_close_and_http10_are_not_reused() -> None:
    answers = [
        b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok",
        b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok",
    ]

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_head(reader)
            writer.write(answers.pop(0) if answers else OK)
            await writer.drain()

    async with raw_server(handler) as srv:
        pool = srv.pool()
        for _ in range(4):
            assert await (await pool.request(get())).read() == b"ok"
        await pool.aclose()
    assert srv.connections == 3


async def test_interim_responses_are_skipped() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\n" + OK)
        await writer.drain()
        await asyncio.sleep(1)

    async with raw_server(handler) as srv:
        pool = srv.pool()
        resp = await pool.request(get())
        assert resp.status == 200 and resp.headers == [(b"content-length", b"2")]
        assert await resp.read() == b"ok"
        await pool.aclose()


def _stale_server() -> tuple[list[bytes], object]:
    """Answers the first request of each connection, then reads the next one and closes without a byte."""
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await read_head(reader))
        writer.write(OK)
        await writer.drain()
        seen.append(await read_head(reader))
        reset(writer)

    return seen, handler


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
async def test_an_idempotent_request_on_a_stale_connection_is_sent_once_more(method: str) -> None:
    seen, handler = _stale_server()
    async with raw_server(handler) as srv:  # type: ignore[arg-type]
        pool = srv.pool()
        assert await (await pool.request(get())).read() == b"ok"
        assert await (await pool.request(get(b"/again", method))).read() == b"ok"
        await pool.aclose()
    assert srv.connections == 2
    assert [h.split(b" ")[1] for h in seen] == [b"/", b"/again", b"/again"]


async def test_a_post_on_a_stale_connection_is_not_sent_again() -> None:
    seen, handler = _stale_server()
    async with raw_server(handler) as srv:  # type: ignore[arg-type]
        pool = srv.pool()
        await (await pool.request(get())).read()
        with pytest.raises(ConnectionClosed):
            await pool.request(get(b"/post", "POST", content_length=0))
        await pool.aclose()
    assert srv.connections == 1


async def test_a_connection_closed_while_idle_is_not_used() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(OK)
        await writer.drain()
        writer.close()  # a keep-alive timeout on the backend's side

    async with raw_server(handler) as srv:
        pool = srv.pool()
        await (await pool.request(get())).read()
        await asyncio.sleep(0.05)
        await (await pool.request(get(b"/", "POST", content_length=0))).read()  # not replayable, yet it works
        await pool.aclose()
    assert srv.connections == 2


def _continue_server(answer: bytes | None, delay: float = 0.0) -> tuple[list[bytes], object]:
    """Reads a head; sends ``answer`` (a 100 or a final response) or nothing; then reads the body."""
    bodies: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await read_head(reader)
        assert b"expect: 100-continue" in head.lower()
        if answer is not None:
            await asyncio.sleep(delay)
            writer.write(answer)
            await writer.drain()
            if not answer.startswith(b"HTTP/1.1 100"):
                bodies.append(await asyncio.wait_for(reader.read(100), 0.5))
                return
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        bodies.append(await reader.readexactly(length))
        writer.write(OK)
        await writer.drain()

    return bodies, handler


EXPECT = [(b"host", b"x"), (b"expect", b"100-continue")]


async def test_expect_continue_sends_the_body_after_the_100() -> None:
    bodies, handler = _continue_server(b"HTTP/1.1 100 Continue\r\n\r\n", delay=0.1)
    async with raw_server(handler) as srv:  # type: ignore[arg-type]
        pool = srv.pool()
        resp = await pool.request(get(b"/", "POST", headers=EXPECT, body=chunks(b"hello"), content_length=5))
        assert resp.status == 200 and await resp.read() == b"ok"
        await pool.aclose()
    assert bodies == [b"hello"]


async def test_expect_continue_answered_finally_never_sends_the_body() -> None:
    pulled: list[bytes] = []

    async def body() -> AsyncIterator[bytes]:
        pulled.append(b"x")
        yield b"hello"

    refusal = b"HTTP/1.1 413 Content Too Large\r\ncontent-length: 3\r\n\r\nbig"
    bodies, handler = _continue_server(refusal)
    async with raw_server(handler) as srv:  # type: ignore[arg-type]
        pool = srv.pool()
        resp = await pool.request(get(b"/", "POST", headers=EXPECT, body=body(), content_length=5))
        assert resp.status == 413 and await resp.read() == b"big"
        await pool.aclose()
        for _ in range(50):
            if bodies:
                break
            await asyncio.sleep(0.01)
    assert pulled == [] and bodies == [b""]  # nothing sent; the connection closed, not reused


async def test_expect_continue_without_an_answer_sends_the_body_after_a_while() -> None:
    bodies, handler = _continue_server(None)
    async with raw_server(handler) as srv:  # type: ignore[arg-type]
        pool = srv.pool(continue_timeout=0.1)
        resp = await pool.request(get(b"/", "POST", headers=EXPECT, body=chunks(b"hello"), content_length=5))
        assert await resp.read() == b"ok"
        await pool.aclose()
    assert bodies == [b"hello"]


async def test_a_backend_that_answers_before_reading_the_body() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 4\r\n\r\nnope")
        await writer.drain()
        await asyncio.sleep(2)

    async def endless() -> AsyncIterator[bytes]:
        while True:
            yield b"z" * 65536
            await asyncio.sleep(0)

    async with raw_server(handler) as srv:
        pool = srv.pool(read_timeout=0.3)
        resp = await pool.request(get(b"/", "POST", body=endless()))
        assert resp.status == 401
        assert await resp.read() == b"nope"
        await resp.aclose()
        await pool.aclose()


async def test_a_slow_reader_holds_the_backend_back() -> None:
    sent = 0
    done = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal sent
        await read_head(reader)
        total = 64 * 1024 * 1024
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % total)
        block = b"q" * 65536
        while sent < total:
            writer.write(block)
            await writer.drain()
            sent += len(block)
        done.set()

    async with raw_server(handler) as srv:
        pool = srv.pool()
        resp = await pool.request(get())
        stream = resp.stream()
        first = await stream.__anext__()
        await asyncio.sleep(0.5)  # the consumer is slow: reading stops, TCP pushes back
        assert not done.is_set()
        assert sent < 16 * 1024 * 1024  # socket buffers at most, never the whole body
        assert len(first) <= HIGH_WATER + 65536
        await resp.aclose()
        await pool.aclose()
