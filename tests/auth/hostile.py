"""Misbehaving servers on 127.0.0.1 for the outbound-call tests and bench/hostile_outbound.py.

One raw asyncio HTTP/1.1 server, in a thread with its own event loop (so that its work
never runs inside the loop under test), whose answer to every request depends on `mode`:

- ``ok``: the JWKS in `jwks`, at once.
- ``drip``: the same answer, one byte every `drip_interval` seconds, head included.
- ``hang``: reads the request, never answers.
- ``gzip``: the JWKS gzip-compressed, with ``Content-Encoding: gzip``.
- ``big``: a `big_bytes` body with its Content-Length; ``big-chunked``: the same, chunked.
- ``introspect``: RFC 7662 ``{"active": false}`` after `delay` seconds, counting the calls
  and the most that were in flight at once.

Tests switch the mode while it runs; `sent` counts the body bytes written, so a test can
tell that a client abandoned a body.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

_CHUNK = b"x" * 65536


@dataclass
class Hostile:
    mode: str = "ok"
    jwks: dict[str, Any] = field(default_factory=lambda: {"keys": []})
    drip_interval: float = 2.0
    big_bytes: int = 50 * 1024 * 1024
    delay: float = 0.01
    url: str = ""
    requests: int = 0
    calls: int = 0  # introspection calls
    in_flight: int = 0
    max_in_flight: int = 0
    sent: int = 0  # body bytes written
    aborted: int = 0  # answers the client stopped reading
    tokens: list[str] = field(default_factory=list)


def _head(status: str, headers: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status}"] + [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def _read_request(reader: asyncio.StreamReader) -> bytes | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        return None
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    return await reader.readexactly(length) if length else b""


async def _answer(state: Hostile, body: bytes, writer: asyncio.StreamWriter) -> None:
    """Answer one request."""
    mode = state.mode
    if mode == "hang":
        await asyncio.Event().wait()
    if mode == "introspect":
        state.calls += 1
        state.in_flight += 1
        state.max_in_flight = max(state.max_in_flight, state.in_flight)
        try:
            token = dict(p.split("=", 1) for p in body.decode().split("&") if "=" in p).get("token", "")
            state.tokens.append(token)
            await asyncio.sleep(state.delay)
        finally:
            state.in_flight -= 1
        data = json.dumps({"active": False}).encode()
        writer.write(_head("200 OK", {"content-type": "application/json", "content-length": str(len(data))}) + data)
        await writer.drain()
        return
    if mode in ("big", "big-chunked"):
        chunked = mode == "big-chunked"
        length = {"transfer-encoding": "chunked"} if chunked else {"content-length": str(state.big_bytes)}
        writer.write(_head("200 OK", {"content-type": "application/json", **length}))
        left = state.big_bytes
        while left > 0 and not writer.is_closing():
            piece = _CHUNK[: min(left, len(_CHUNK))]
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
            await writer.drain()
            state.sent += len(piece)
            left -= len(piece)
        if chunked:
            writer.write(b"0\r\n\r\n")
        await writer.drain()
        return
    data = json.dumps(state.jwks).encode()
    if mode == "gzip":
        data = gzip.compress(data)
        writer.write(_head("200 OK", {"content-encoding": "gzip", "content-length": str(len(data))}) + data)
        await writer.drain()
        return
    answer = _head("200 OK", {"content-type": "application/json", "content-length": str(len(data))}) + data
    if mode == "drip":
        for i in range(len(answer)):
            if writer.is_closing():
                raise ConnectionResetError
            writer.write(answer[i : i + 1])
            await writer.drain()
            await asyncio.sleep(state.drip_interval)
        return
    writer.write(answer)
    await writer.drain()


def _handler(state: Hostile) -> Any:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                body = await _read_request(reader)
                if body is None:
                    break
                state.requests += 1
                await _answer(state, body, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            state.aborted += 1
        except asyncio.CancelledError:
            pass
        finally:
            writer.close()

    return handle


@contextmanager
def running_hostile() -> Iterator[Hostile]:
    """A `Hostile` server on 127.0.0.1, stopped (its connections dropped) on exit."""
    state = Hostile()
    loop = asyncio.new_event_loop()
    started = threading.Event()
    holder: dict[str, Any] = {}

    async def main() -> None:
        server = await asyncio.start_server(_handler(state), "127.0.0.1", 0)
        holder["server"] = server
        state.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        started.set()
        async with server:
            await server.serve_forever()

    def run() -> None:
        asyncio.set_event_loop(loop)
        task = loop.create_task(main())
        holder["task"] = task
        try:
            loop.run_until_complete(task)
        except asyncio.CancelledError:
            pass
        pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for t in pending:
            t.cancel()
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.close()

    thread = threading.Thread(target=run, daemon=True, name="hostile-server")
    thread.start()
    started.wait(10)
    try:
        yield state
    finally:
        loop.call_soon_threadsafe(holder["task"].cancel)
        thread.join(10)
