"""One exchange on one upstream connection: the request head, the body (after a 100 when asked
for), the response head; and the response handed back, its body streamed. Used by
`asgi_apim.gateway.upstream.UpstreamPool`, which owns the connections."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from asgi_apim.gateway._http11 import HEAD_LATE, Connection, InvalidRequest, RequestBodyError

FRAMING = (b"content-length", b"transfer-encoding")
_METHOD = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_METHODS: dict[str, bytes] = {}  # a method checked once: its bytes and the space after it
SENDER_GRACE = 0.05  # after a complete response, how long a request body still being written may take to end
Release = Callable[[Connection, bool], None]  # (connection, reuse it)


@dataclass
class UpstreamRequest:
    """``headers`` are sent as given (Host included) except Content-Length and Transfer-Encoding,
    which the client writes from ``content_length``: a length, or chunked when a body has none."""

    method: str
    target: bytes
    headers: list[tuple[bytes, bytes]]
    body: AsyncIterator[bytes] | None = None
    content_length: int | None = None


class UpstreamResponse:
    """A response whose head has arrived. Read the body with `stream`; always `aclose`.
    ``whole`` is the body when all of it came with the head (the connection is then already back
    in the pool), else None."""

    def __init__(self, release: Release, conn: Connection, sender: asyncio.Task[None] | None, timeout: float) -> None:
        self.status = conn.status
        self.headers = conn.headers
        self._give_back = release
        self._conn: Connection | None = conn
        self._sender = sender
        self._timeout = timeout
        self._leftover = b""
        self.whole: bytes | None = None
        if conn.complete and (sender is None or sender.done()):
            self._leftover = self.whole = conn.take()  # the whole body came with the head
            self._release()

    def _release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        sender = self._sender
        if sender is not None and not sender.done():
            sender.cancel()
        sender_ok = sender is None or (sender.done() and not sender.cancelled() and sender.exception() is None)
        self._give_back(conn, conn.complete and conn.keep_alive and sender_ok)

    async def stream(self) -> AsyncIterator[bytes]:
        """The body, de-chunked, piece by piece as it arrives (nothing read ahead past a small buffer)."""
        conn = self._conn
        if conn is None:
            data, self._leftover = self._leftover, b""
            if data:
                yield data
            return
        try:
            while True:
                data = await conn.read(self._timeout)
                if not data:
                    break
                yield data
            if self._sender is not None and not self._sender.done():
                # a backend that answered before taking the whole body: a moment for the last write to finish,
                # else the rest is not sent and the connection not reused
                await asyncio.wait({self._sender}, timeout=SENDER_GRACE)
        except BaseException:
            if self._conn is conn:  # still ours: a connection given back may already serve another request
                conn.abort()
                self._release()
            raise
        if self._conn is conn:
            self._release()

    async def aclose(self) -> None:
        """Give the connection back if the body was read to its end, else close it."""
        self.close()

    def close(self) -> None:
        """`aclose`, for a caller that need not await it."""
        conn = self._conn
        if conn is None:
            return
        if not conn.complete:
            conn.abort()
        self._release()

    async def read(self) -> bytes:
        """The whole body (for small responses and tests)."""
        return b"".join([chunk async for chunk in self.stream()])


def request_head(req: UpstreamRequest) -> bytes:
    """The request head. A CR, LF or NUL inside the method, target or a header (a smuggled header
    or request) is `InvalidRequest`, found by counting line ends over the whole head."""
    method = _METHODS.get(req.method)
    if method is None:
        if not _METHOD.fullmatch(req.method):
            raise InvalidRequest(f"invalid request line: {req.method!r} {req.target!r}")
        method = req.method.encode("ascii") + b" "
        if len(_METHODS) < 64:  # the usual few; any other is checked every time
            _METHODS[req.method] = method
    if b" " in req.target or not req.target:
        raise InvalidRequest(f"invalid request line: {req.method!r} {req.target!r}")
    lines = [method, req.target, b" HTTP/1.1\r\n"]
    for name, value in req.headers:
        if name.lower() not in FRAMING:
            lines += (name, b": ", value, b"\r\n")
    count = (len(lines) >> 2) + 2  # the request line, one a header, the empty line
    if req.content_length is not None:
        if req.content_length < 0:
            raise InvalidRequest("content_length must not be negative")
        lines += (b"content-length: ", str(req.content_length).encode("ascii"), b"\r\n")
        count += 1
    elif req.body is not None:
        lines.append(b"transfer-encoding: chunked\r\n")
        count += 1
    lines.append(b"\r\n")
    head = b"".join(lines)
    if head.count(b"\n") != count or head.count(b"\r") != count or b"\x00" in head:
        raise InvalidRequest("a request target or header holds CR, LF or NUL")
    return head


class Exchange:
    """One request on one connection: head, body (after a 100 when asked), response head."""

    def __init__(
        self, release: Release, conn: Connection, req: UpstreamRequest, head: bytes, timeout: float, wait_100: float
    ) -> None:
        self.release, self.conn, self.req, self.head, self.timeout = release, conn, req, head, timeout
        self.wait_100 = wait_100
        self.body_started = False
        self.expect = req.body is not None and any(
            n.lower() == b"expect" and v.strip().lower() == b"100-continue" for n, v in req.headers
        )

    async def run(self) -> UpstreamResponse:
        conn, req = self.conn, self.req
        sender: asyncio.Task[None] | None = None
        try:
            head = conn.begin(self.head, head_request=req.method.upper() == "HEAD", expect_continue=self.expect)
            if req.body is not None:
                if self.expect and await self._final_before_continue(head):
                    conn.keep_alive = False  # the body announced was never sent
                    return UpstreamResponse(self.release, conn, None, self.timeout)
                sender = asyncio.ensure_future(self._send_body())
                await asyncio.wait({head, sender}, return_when=asyncio.FIRST_COMPLETED)
                if not head.done():
                    sender.result()  # the body failed to go: its error is the answer
            if not head.done():  # the wait for the response head, inline: one coroutine fewer per request
                conn.watch(head, self.timeout, HEAD_LATE)
                try:
                    await head
                finally:
                    conn.unwatch()
            head.result()
            return UpstreamResponse(self.release, conn, sender, self.timeout)
        except BaseException:
            if sender is not None and not sender.done():
                sender.cancel()
            elif sender is not None and not sender.cancelled():
                sender.exception()  # seen: its failure is the connection's, already raised
            conn.abort()
            self.release(conn, False)
            raise

    async def _final_before_continue(self, head: asyncio.Future[None]) -> bool:
        """Wait a moment for the 100; True when a final response came instead."""
        continued = self.conn.continued
        assert continued is not None
        await asyncio.wait({head, continued}, timeout=self.wait_100, return_when=asyncio.FIRST_COMPLETED)
        if head.done():
            head.result()
            return True
        return False

    async def _send_body(self) -> None:
        conn, req = self.conn, self.req
        assert req.body is not None
        chunked = req.content_length is None
        sent = 0
        self.body_started = True
        async for chunk in req.body:
            if not chunk:
                continue
            sent += len(chunk)
            if chunked:
                conn.write([b"%x\r\n" % len(chunk), chunk, b"\r\n"])
            else:
                if req.content_length is not None and sent > req.content_length:
                    raise RequestBodyError(f"the request body is longer than its Content-Length {req.content_length}")
                conn.write(chunk)
            await conn.drain(self.timeout)
        if chunked:
            conn.write(b"0\r\n\r\n")
        elif sent != req.content_length:
            raise RequestBodyError(f"the request body ended after {sent} of {req.content_length} bytes")
