"""One HTTP/1.1 client connection: an asyncio protocol around httptools' response parser.

A `Connection` carries one exchange at a time (no pipelining). Its response
body is kept in a small queue: past `HIGH_WATER` bytes the transport stops
reading until the consumer has taken the queue below `LOW_WATER`, so a slow
consumer slows the backend down through TCP instead of filling memory. Writes
wait while the transport's buffer is above its own high-water mark.

Bodies end as the response says: Content-Length, chunked, the close of the
connection (neither given), or not at all (HEAD, 1xx, 204, 304). Interim 1xx
responses are skipped; a 100 is noted for ``Expect: 100-continue``.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import time
from collections.abc import Callable
from typing import cast

import httptools

from asgi_apim.errors import APIMError

HIGH_WATER = 256 * 1024  # body bytes queued before the connection stops reading
MAX_HEAD = 64 * 1024  # bytes of status line and headers a response may send
DELIMITING = frozenset({b"content-length", b"transfer-encoding"})  # response headers that end a body
HEAD_LATE = "no response head from the backend within {:g} s"
BODY_STALLED = "the backend sent nothing of the response body for {:g} s"


class UpstreamError(APIMError):
    """A request to a backend failed in transport. The text names the cause, for logs only."""


class ConnectFailed(UpstreamError):
    """Refused, unreachable, or the TLS handshake failed (WSO2 101503)."""


class ConnectTimeout(UpstreamError):
    """No connection within the connect timeout (WSO2 101508)."""


class PoolTimeout(ConnectTimeout):
    """Every pooled connection stayed busy for the connect timeout."""


class ReadTimeout(UpstreamError):
    """No response head, or the body (or the backend's reading of ours) stalled for the read timeout (101504)."""


class ConnectionClosed(UpstreamError):
    """Reset or closed before the response was complete (WSO2 101505)."""


class ProtocolError(UpstreamError):
    """The backend answered something that is not HTTP/1.1 (502, WSO2 101503)."""


class InvalidRequest(UpstreamError):
    """The request cannot be sent as given: a CR, LF or NUL in its head, a negative length."""


class RequestBodyError(InvalidRequest):
    """The request body did not match its declared Content-Length (the client's fault, not the backend's)."""


class _Surplus(Exception):
    """Bytes after the complete response: parsing stops there."""


class Connection(asyncio.Protocol):
    """A client connection to one origin. Created by the pool through ``loop.create_connection``."""

    def __init__(self, token: object, on_lost: Callable[[Connection], None]) -> None:
        self.token = token
        self.idle_since = time.monotonic()
        self.reused = False
        self.pooled = False  # counted by the pool (set once connected)
        self._on_lost = on_lost
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._parser = httptools.HttpResponseParser(self)
        self._fresh_parser = False
        self._active = False
        self._head_request = False
        # per response
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self._head_bytes = 0
        self._head: asyncio.Future[None] | None = None
        self.continued: asyncio.Future[None] | None = None
        self._until_close = False
        self.received_any = False
        self.complete = False
        self.keep_alive = False
        self._error: UpstreamError | None = None
        # body queue and flow control
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._reading_paused = False
        self._data_waiter: asyncio.Future[None] | None = None
        self._write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        # the read deadline: one timer per connection, re-armed only when it fires early (see `watch`)
        self._watched: asyncio.Future[None] | None = None
        self._watch_deadline = 0.0
        self._watch_why = ""
        self._watch_timeout = 0.0
        self._watchdog: asyncio.TimerHandle | None = None
        self._watchdog_at = 0.0

    # ---- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's

    def data_received(self, data: bytes) -> None:
        if not self._active:  # bytes nobody asked for: the connection cannot be trusted with the next request
            self.close()
            return
        self.received_any = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(ProtocolError("the backend switched protocols unasked"))
        except httptools.HttpParserError as exc:
            cause = exc.__context__  # what a callback raised
            if isinstance(cause, _Surplus):
                self.close()
            elif isinstance(cause, UpstreamError):
                self._fail(cause)
            else:
                self._fail(ProtocolError(f"malformed response from the backend: {exc}"))

    def eof_received(self) -> bool | None:
        self._ended()
        return None  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if isinstance(exc, ssl.SSLError) and self._active and not self.status:
            # TLS 1.3: a server refusing our certificate says so after the handshake, on the first read
            self._fail(ConnectFailed(f"TLS with the backend failed: {exc}"))
        self._ended()
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_exception(ConnectionClosed("the backend closed the connection"))
        self._on_lost(self)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)

    # ---- httptools callbacks --------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.complete:  # a second response to one request: never trust the connection again
            self.keep_alive = False
            raise _Surplus
        self.headers = []

    def on_status(self, status: bytes) -> None:
        self._count(len(status))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value)
        if self._head_bytes > MAX_HEAD:
            self._count(0)
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:
            if status == 100 and self.continued is not None and not self.continued.done():
                self.continued.set_result(None)
            self._head_bytes = 0
            return
        self.status = status
        if self._head_request:
            self._fresh_parser = True  # the parser would wait for the Content-Length it announced
            self._finish()
        else:
            delimited = False
            for name, _ in self.headers:
                if name.lower() in DELIMITING:
                    delimited = True
                    break
            self._until_close = not delimited and status not in (204, 304)
        if self._head is not None and not self._head.done():
            self._head.set_result(None)

    def on_body(self, body: bytes) -> None:
        if self.complete or not self.status:
            return
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered >= HIGH_WATER and not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self.status and not self.complete:
            self._finish()

    # ---- state ------------------------------------------------------------------------------------

    def _count(self, n: int) -> None:
        self._head_bytes += n
        if self._head_bytes > MAX_HEAD:
            raise ProtocolError(f"response head over {MAX_HEAD} bytes")

    def _finish(self) -> None:
        self.complete = True
        if self._head_request:  # llhttp, not knowing the request, may wait for a close to end the body
            tokens = b",".join(v for n, v in self.headers if n.lower() == b"connection").lower()
            options = {t.strip() for t in tokens.split(b",")}
            if self._parser.get_http_version() == "1.1":
                self.keep_alive = b"close" not in options
            else:
                self.keep_alive = b"keep-alive" in options
        else:
            self.keep_alive = not self._until_close and self._parser.should_keep_alive()
        self._wake()

    def _ended(self) -> None:
        """The backend closed its side: the end of a body delimited by close, else a failure."""
        if not self._active or self.complete:
            return
        if self.status and self._until_close:
            self.complete = True
            self.keep_alive = False
            self._wake()
        elif self.status:
            self._fail(ConnectionClosed("the backend closed the connection before the end of the response body"))
        else:
            tls = self.transport is not None and self.transport.get_extra_info("sslcontext") is not None
            hint = " (over TLS 1.3, a refused client certificate looks like this)" if tls and not self.reused else ""
            self._fail(ConnectionClosed(f"the backend closed the connection before responding{hint}"))

    def _fail(self, error: UpstreamError) -> None:
        if self._error is None:
            self._error = error
        for fut in (self._head, self.continued):
            if fut is not None and not fut.done():
                fut.set_exception(error)
                fut.exception()  # retrieved: a 100-continue wait that ended first must not warn
        self._wake()
        self.close()

    def _wake(self) -> None:
        if self._data_waiter is not None and not self._data_waiter.done():
            self._data_waiter.set_result(None)

    def close(self) -> None:
        self.keep_alive = False
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def abort(self) -> None:
        self.keep_alive = False
        if self.transport is not None:
            self.transport.abort()

    @property
    def usable(self) -> bool:
        return not self.closed and self.transport is not None and not self.transport.is_closing()

    # ---- one exchange -------------------------------------------------------------------------------

    def begin(self, head: bytes, *, head_request: bool, expect_continue: bool) -> asyncio.Future[None]:
        """Start an exchange: send the request head; answer the future set when the response head arrives."""
        if self._fresh_parser:
            self._parser = httptools.HttpResponseParser(self)
            self._fresh_parser = False
        self._active = True
        self._head_request = head_request
        self.status = 0
        self.headers = []
        self._head_bytes = 0
        self._until_close = False
        self.received_any = False
        self.complete = False
        self.keep_alive = False
        self._error = None
        self._chunks.clear()
        self._buffered = 0
        self._head = self.loop.create_future()
        self.continued = self.loop.create_future() if expect_continue else None
        assert self.transport is not None
        self.transport.write(head)
        return self._head

    def end(self) -> None:
        """The exchange is over (the connection goes back to the pool or is closed)."""
        self._active = False
        self._head = None
        self.continued = None
        self._chunks.clear()
        self._buffered = 0
        if self._reading_paused and self.transport is not None and not self.transport.is_closing():
            self._reading_paused = False
            self.transport.resume_reading()

    def write(self, data: bytes | list[bytes]) -> None:
        if self._error is not None:
            raise self._error
        if not self.usable:
            raise ConnectionClosed("the backend closed the connection while the request was sent")
        assert self.transport is not None
        if isinstance(data, list):
            self.transport.writelines(data)
        else:
            self.transport.write(data)

    async def drain(self, timeout: float) -> None:
        if not self._write_paused:
            return
        self._drain_waiter = self.loop.create_future()
        try:
            async with asyncio.timeout(timeout):
                await self._drain_waiter
        except TimeoutError:
            raise ReadTimeout(f"the backend read none of the request body for {timeout:g} s") from None
        finally:
            self._drain_waiter = None

    def take(self) -> bytes:
        """Every body byte queued so far."""
        data = b"".join(self._chunks)
        self._chunks.clear()
        self._buffered = 0
        return data

    async def read(self, timeout: float) -> bytes:
        """The next piece of the body; b"" at its end. Raises the connection's error, or `ReadTimeout`."""
        while not self._chunks:
            if self.complete:
                return b""
            if self._error is not None:
                raise self._error
            self._data_waiter = self.loop.create_future()
            self.watch(self._data_waiter, timeout, BODY_STALLED)
            try:
                await self._data_waiter
            finally:
                self._watched = None
                self._data_waiter = None
        if len(self._chunks) == 1:
            data = self._chunks.popleft()
        else:
            data = b"".join(self._chunks)
            self._chunks.clear()
        self._buffered = 0
        if self._reading_paused and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()
        return data

    # ---- the read deadline ---------------------------------------------------------------------------

    def watch(self, waiter: asyncio.Future[None], timeout: float, why: str) -> None:
        """Fail ``waiter`` with `ReadTimeout` (``why``, formatted with the timeout) unless it is done
        within ``timeout`` seconds, or `unwatch` is called first. One wait at a time. The timer is
        the connection's: a wait that ends early leaves it armed, and when it fires for a later
        wait it is set again for that wait's deadline, so a keep-alive connection serving request
        after request arms about one timer per timeout period rather than one per wait."""
        deadline = self.loop.time() + timeout
        self._watched, self._watch_deadline, self._watch_why, self._watch_timeout = waiter, deadline, why, timeout
        if self._watchdog is None or self._watchdog_at > deadline:
            if self._watchdog is not None:
                self._watchdog.cancel()
            self._watchdog = self.loop.call_at(deadline, self._bark)
            self._watchdog_at = deadline

    def unwatch(self) -> None:
        self._watched = None

    def _bark(self) -> None:
        self._watchdog = None
        waiter = self._watched
        if waiter is None or waiter.done() or self.closed:
            return  # nothing is waiting: no timer until the next wait
        if self.loop.time() < self._watch_deadline:
            self._watchdog = self.loop.call_at(self._watch_deadline, self._bark)
            self._watchdog_at = self._watch_deadline
            return
        self._watched = None
        waiter.set_exception(ReadTimeout(self._watch_why.format(self._watch_timeout)))
