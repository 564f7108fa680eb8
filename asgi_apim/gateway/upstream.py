"""The gateway's upstream HTTP/1.1 client: one pool of keep-alive connections per backend origin.

Chosen by measurement (``bench/bench_gateway.py``): pooled asyncio connections
with httptools' response parser carry several times the throughput of aiohttp
or httpx under concurrency. The interface is small so the client can be swapped:
a request head and a body stream go in, a response head and a body stream come out.

Errors::

    UpstreamError
    ├── ConnectFailed ......... refused, unreachable, TLS handshake failed    -> 101503
    ├── ConnectTimeout ........ no connection in time                          -> 101508
    │   └── PoolTimeout ....... every connection busy for the connect timeout
    ├── ReadTimeout ........... no response head, or a body stalled            -> 101504
    ├── ConnectionClosed ...... reset or closed before the response was whole  -> 101505
    ├── ProtocolError ......... the backend answered garbage                   -> 502 (101503)
    └── InvalidRequest ........ the request cannot be sent as given (CR/LF in a header)
        └── RequestBodyError .. the request body broke its Content-Length

A pooled connection is reused only after a complete exchange that both sides
allow to continue (keep-alive) and only within ``keepalive_expiry`` of its last
use. An idempotent request that finds its reused connection closed before any
response byte arrived is sent once more on a new connection. The SSL context is
asked for on every request; when its version token changes, the idle connections
made under the old context are closed, and busy ones are closed when released.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass

from asgi_apim.gateway._exchange import Exchange, UpstreamRequest, UpstreamResponse, request_head
from asgi_apim.gateway._http11 import (
    ConnectFailed,
    Connection,
    ConnectionClosed,
    ConnectTimeout,
    InvalidRequest,
    PoolTimeout,
    ProtocolError,
    ReadTimeout,
    RequestBodyError,
    UpstreamError,
)

__all__ = [
    "ConnectFailed",
    "ConnectTimeout",
    "ConnectionClosed",
    "InvalidRequest",
    "Origin",
    "PoolTimeout",
    "ProtocolError",
    "ReadTimeout",
    "RequestBodyError",
    "UpstreamError",
    "UpstreamPool",
    "UpstreamRequest",
    "UpstreamResponse",
    "default_ssl_context",
    "request_head",
]

SSLContextSource = Callable[[], tuple[ssl.SSLContext | None, object]]
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})


@dataclass(frozen=True)
class Origin:
    scheme: str  # "http" | "https"
    host: str
    port: int

    def __post_init__(self) -> None:
        if self.scheme not in ("http", "https"):
            raise ValueError(f"unsupported scheme {self.scheme!r}")


def default_ssl_context() -> ssl.SSLContext:
    """The system's CAs, hostname verification, TLS 1.2 at least."""
    ctx = ssl.create_default_context()
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


class UpstreamPool:
    """Keep-alive connections to one origin, shared by every request to it."""

    def __init__(
        self,
        origin: Origin,
        *,
        ssl_context: SSLContextSource | None = None,
        max_connections: int = 100,
        keepalive_expiry: float = 30.0,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        continue_timeout: float = 1.0,
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self.origin = origin
        if ssl_context is None and origin.scheme == "https":
            default = default_ssl_context()
            ssl_context = lambda: (default, None)  # noqa: E731
        self._ssl_context = ssl_context if origin.scheme == "https" else None  # plain HTTP has no context
        self._fallback: ssl.SSLContext | None = None
        self._token: object = None
        self.max_connections = max_connections
        self.keepalive_expiry = keepalive_expiry
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.continue_timeout = continue_timeout  # how long ``Expect: 100-continue`` waits before sending the body
        self._idle: collections.deque[Connection] = collections.deque()  # oldest on the left
        self._count = 0  # connections open or opening
        self._waiters: collections.deque[asyncio.Future[Connection | None]] = collections.deque()
        self._closed = False
        self._sweeper: asyncio.TimerHandle | None = None
        self.connections_made = 0

    # ---- connections ----------------------------------------------------------------------------

    def _current_context(self) -> ssl.SSLContext | None:
        if self._ssl_context is None:
            return None
        ctx, token = self._ssl_context()
        if token != self._token:
            self._token = token
            while self._idle:  # made under the old profile: WSO2 re-initialises its sender too
                self._drop(self._idle.pop())
        if ctx is None:  # an https origin is never reached in clear
            if self._fallback is None:
                self._fallback = default_ssl_context()
            ctx = self._fallback
        return ctx

    def _drop(self, conn: Connection) -> None:
        conn.close()

    def _lost(self, conn: Connection) -> None:
        """A connection's transport is gone (closed by either side): it no longer counts."""
        if not conn.pooled:  # lost before `_connect` returned it: counted down there
            return
        try:
            self._idle.remove(conn)
        except ValueError:
            pass
        self._count -= 1
        self._wake_waiter()

    def _wake_waiter(self) -> None:
        while self._waiters and self._count < self.max_connections:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # room for a new connection
                return

    def _idle_one(self) -> Connection | None:
        """The most recently used idle connection still open, if any (no await: the common case)."""
        if self._closed:
            raise ConnectFailed("the upstream pool is closed")
        self._expire_idle()
        while self._idle:
            conn = self._idle.pop()
            if conn.usable:
                conn.reused = True
                return conn
            self._drop(conn)
        return None

    async def _acquire(self, ctx: ssl.SSLContext | None, timeout: float) -> Connection:
        conn = self._idle_one()
        if conn is not None:
            return conn
        if self._count >= self.max_connections:
            waiter: asyncio.Future[Connection | None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                async with asyncio.timeout(timeout):
                    conn_or_room = await waiter
            except BaseException as exc:
                self._abandon(waiter)
                if isinstance(exc, TimeoutError):
                    raise PoolTimeout(f"all {self.max_connections} connections to the backend stayed busy") from None
                raise
            if conn_or_room is not None:
                conn_or_room.reused = True
                return conn_or_room
            if self._count >= self.max_connections:  # taken meanwhile: wait again, fresh timeout is acceptable
                return await self._acquire(ctx, timeout)
        return await self._connect(ctx, timeout)

    def _abandon(self, waiter: asyncio.Future[Connection | None]) -> None:
        """A waiter gave up (timeout, cancellation): what it was handed as it did goes to the next one."""
        if not waiter.done():
            waiter.cancel()
        elif not waiter.cancelled() and waiter.exception() is None:
            handed = waiter.result()
            if handed is not None:
                self._release(handed, reuse=True)
            else:
                self._wake_waiter()

    async def _connect(self, ctx: ssl.SSLContext | None, timeout: float) -> Connection:
        loop = asyncio.get_running_loop()
        origin, token = self.origin, self._token
        self._count += 1
        try:
            async with asyncio.timeout(timeout):
                _, conn = await loop.create_connection(
                    lambda: Connection(token, self._lost),
                    origin.host,
                    origin.port,
                    ssl=ctx,
                    server_hostname=origin.host if ctx is not None else None,
                    ssl_handshake_timeout=timeout if ctx is not None else None,
                )
        except TimeoutError:
            self._count -= 1
            self._wake_waiter()
            raise ConnectTimeout(f"no connection to {origin.host}:{origin.port} within {timeout:g} s") from None
        except (OSError, ssl.SSLError, ssl.CertificateError) as exc:
            self._count -= 1
            self._wake_waiter()
            raise ConnectFailed(f"cannot connect to {origin.host}:{origin.port}: {exc}") from exc
        except BaseException:
            self._count -= 1
            self._wake_waiter()
            raise
        self.connections_made += 1
        conn.pooled = True
        return conn

    def _give_back(self, conn: Connection, reuse: bool) -> None:
        self._release(conn, reuse=reuse)

    def _release(self, conn: Connection, *, reuse: bool) -> None:
        conn.end()
        if not reuse or self._closed or conn.token != self._token or not conn.usable:
            conn.close()  # counted down by `_lost`
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        conn.idle_since = time.monotonic()
        self._idle.append(conn)
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().call_later(self.keepalive_expiry, self._sweep)

    def _expire_idle(self) -> None:
        now = time.monotonic()
        while self._idle and now - self._idle[0].idle_since >= self.keepalive_expiry:
            self._drop(self._idle.popleft())

    def _sweep(self) -> None:
        """Close the connections idle past ``keepalive_expiry``; come back when the next one will be."""
        self._sweeper = None
        self._expire_idle()
        if self._idle:
            delay = self._idle[0].idle_since + self.keepalive_expiry - time.monotonic()
            self._sweeper = asyncio.get_running_loop().call_later(max(delay, 0.001), self._sweep)

    @property
    def idle_connections(self) -> int:
        return len(self._idle)

    # ---- requests ---------------------------------------------------------------------------------

    async def request(
        self, req: UpstreamRequest, *, connect_timeout: float | None = None, read_timeout: float | None = None
    ) -> UpstreamResponse:
        """Send ``req``; answer once the response head has arrived. Raises `UpstreamError`."""
        connect_timeout = self.connect_timeout if connect_timeout is None else connect_timeout
        read_timeout = self.read_timeout if read_timeout is None else read_timeout
        head = request_head(req)
        replayable = req.method.upper() in IDEMPOTENT
        ctx = self._current_context()
        while True:
            conn = self._idle_one() or await self._acquire(ctx, connect_timeout)
            exchange = Exchange(self._give_back, conn, req, head, read_timeout, self.continue_timeout)
            try:
                return await exchange.run()
            except ConnectionClosed:
                stale = conn.reused and not conn.received_any and not exchange.body_started
                if not (stale and replayable):
                    raise
                replayable = False  # once only

    async def aclose(self) -> None:
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        while self._idle:
            self._drop(self._idle.pop())
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(ConnectFailed("the upstream pool is closed"))
