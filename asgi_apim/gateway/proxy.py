"""`GatewayProxy`: the ASGI app that forwards each API's requests to its backend.

`asgi_apim.protect` wraps it as it wraps any app, so a request reaches it
authenticated, authorised and throttled. WSO2's semantics: the API's context is
replaced by the backend URL's path; the rest of the path (as received), the
query, the method and the body pass (see `asgi_apim.gateway.headers` for the
headers). Bodies stream both ways; the client's ``Expect: 100-continue`` is
passed to the backend, and the client gets its ``100 Continue`` only once the
backend asks for the body. A client that goes away closes the backend request.

One `UpstreamPool` per backend origin serves every request to it, closed at
lifespan shutdown. A transport failure (`UpstreamError`) suspends the endpoint
(`asgi_apim.gateway.endpoints`); a failover or load-balanced group then tries
its next endpoint when the request had not reached the failed one (no
connection; or a closed connection, for an idempotent request without a body); otherwise the
failure is answered as WSO2 does: 502 101503, 504 101508, 504 101504, 502
101505, 502 101506, 503 303001 (`asgi_apim.errors`), and logged with the
backend's address, which the answer never shows.

WebSocket scopes go to `asgi_apim.gateway.websocket`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import quote

from cryptography.hazmat.primitives.serialization import Encoding
from starlette.types import Receive, Scope, Send

from asgi_apim._keys import CONNECTION_LOST
from asgi_apim.auth.application import ApplicationSecurity
from asgi_apim.auth.base import without_params
from asgi_apim.certs.trust import TrustedProxies, peer_host
from asgi_apim.config import Config
from asgi_apim.errors import (
    BackendConnectionClosed,
    BackendConnectTimeout,
    BackendError,
    BackendProtocolError,
    BackendTimeout,
    BadRequest,
    NotFound,
    RequestError,
    reject,
)
from asgi_apim.gateway._client import ClientGone, Guard, RequestBody
from asgi_apim.gateway.endpoints import Address, Endpoint
from asgi_apim.gateway.headers import (
    CLIENT_CERTIFICATE,
    Headers,
    connection_named,
    forwarded,
    framing,
    raw_path_of,
    remainder,
    response_headers,
    split_request,
)
from asgi_apim.gateway.targets import Target, targets
from asgi_apim.gateway.upstream import (
    IDEMPOTENT,
    ConnectFailed,
    ConnectionClosed,
    ConnectTimeout,
    Origin,
    PoolTimeout,
    ProtocolError,
    ReadTimeout,
    RequestBodyError,
    SSLContextSource,
    UpstreamError,
    UpstreamPool,
    UpstreamRequest,
    UpstreamResponse,
)

logger = logging.getLogger("asgi_apim.gateway")

SSLContexts = Callable[[str, int], "SSLContextSource | None"]


def transport_error(exc: UpstreamError | TimeoutError) -> BackendError:
    """The answer to a transport failure: WSO2's code, and nothing about the backend."""
    if isinstance(exc, ConnectTimeout):
        return BackendConnectTimeout("the backend did not accept a connection in time")
    if isinstance(exc, (ReadTimeout, TimeoutError)):
        return BackendTimeout("the backend did not answer in time")
    if isinstance(exc, ConnectionClosed):
        return BackendConnectionClosed("the backend closed the connection")
    if isinstance(exc, ProtocolError):
        return BackendProtocolError("the backend's answer is not valid HTTP")
    return BackendError("the gateway could not connect to the backend")


class GatewayProxy:
    """Forwards every request on an API with a ``backend``; 404 (900906) for any other path."""

    def __init__(
        self,
        config: Config,
        *,
        ssl_contexts: SSLContexts | None = None,
        credentials: ApplicationSecurity | None = None,
    ) -> None:
        """``credentials``: the stack's `ApplicationSecurity` (`gateway` shares one), which says where
        client credentials are read; one is built from ``config`` when none is given."""
        self.config = config
        self.targets = targets(config, credentials or ApplicationSecurity.from_config(config))
        # (context, target), longest first: a default version's unversioned context routes to its API too
        self._prefixes = sorted(
            ((c, t) for t in self.targets for c in t.api.contexts), key=lambda p: len(p[0]), reverse=True
        )
        self._trusted = TrustedProxies(config.mutual_ssl.trusted_proxies)  # the certificate header's trust
        self._ssl_contexts = ssl_contexts
        self._pools: dict[Address, UpstreamPool] = {}
        self.websocket: Callable[[Target, Scope, Receive, Send], Any] | None = None
        self.jobs: list[Callable[[], Awaitable[None]]] = []  # run from lifespan startup to shutdown
        self._tasks: list[asyncio.Task[None]] = []

    # ---- shared ----------------------------------------------------------------------------------

    def match(self, path: str) -> Target | None:
        for context, target in self._prefixes:
            if context == "/" or path == context or path.startswith(context + "/"):
                return target
        return None

    def pool(self, endpoint: Endpoint) -> UpstreamPool:
        address = endpoint.address
        pool = self._pools.get(address)
        if pool is None:
            ssl_context = None
            if address.scheme == "https" and self._ssl_contexts is not None:
                ssl_context = self._ssl_contexts(address.host, address.port)
            pool = self._pools[address] = UpstreamPool(
                Origin(address.scheme, address.host, address.port), ssl_context=ssl_context
            )
        return pool

    def ssl_context_for(self, endpoint: Endpoint) -> SSLContextSource | None:
        address = endpoint.address
        if address.scheme != "https" or self._ssl_contexts is None:
            return None
        return self._ssl_contexts(address.host, address.port)

    def base_headers(self, scope: Scope, target: Target) -> tuple[Headers, bytes | None]:
        """The client's headers that go on (the ``Host`` apart), and its ``Host``."""
        headers, host, _, _ = self.request_headers(scope, target)
        return headers, host

    def request_headers(self, scope: Scope, target: Target) -> tuple[Headers, bytes | None, bool, int | None]:
        """The client's headers that go on (the ``Host`` apart), its ``Host``, whether the request has
        a body, and its Content-Length (None: chunked or none). One pass over the client's headers."""
        out, noted = split_request(scope["headers"], target.dropped)
        host = None
        for name, value in noted:
            if name == b"host":
                host = value
        named = connection_named(noted)
        if named:
            out = [h for h in out if h[0] not in named]
        peer = peer_host(scope)
        out += forwarded(noted, peer=peer, trusted=peer in self._trusted, scheme=scope["scheme"], host=host)
        if target.jwt is not None:
            assertion = target.jwt.token(scope.get("user"))
            if assertion is not None:
                out.append((target.jwt.header, assertion))
        if target.api.gateway.forward_client_certificate:
            cert = getattr(scope.get("user"), "certificate", None)
            if cert is not None:
                out.append((CLIENT_CERTIFICATE, quote(cert.public_bytes(Encoding.PEM).decode(), safe="").encode()))
        has_body, length = framing(noted)
        return out, host, has_body, length

    def target_path(self, scope: Scope, target: Target, endpoint: Endpoint) -> bytes:
        raw = raw_path_of(scope)
        rest = None
        for context in target.api.contexts:  # the versioned context, then a default version's unversioned one
            rest = remainder(raw, context)
            if rest is not None:
                break
        if rest is None:
            raise BadRequest("the request path's encoding does not match its API's context")
        return endpoint.path + rest if endpoint.path or rest else b"/"

    def query(self, scope: Scope, target: Target) -> bytes:
        return without_params(scope.get("query_string", b""), target.dropped_query)

    # ---- ASGI ------------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
            return
        target = self.match(scope["path"])
        if target is None:
            await reject(scope, send, NotFound("no API with a backend owns this path"))
            return
        try:
            if kind == "websocket":
                if self.websocket is None:
                    raise NotFound("WebSocket proxying is not available")
                await self.websocket(target, scope, receive, send)
            else:
                await self._http(target, scope, receive, send)
        except RequestError as exc:
            await reject(scope, send, exc, target.name)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._tasks = [asyncio.ensure_future(job()) for job in self.jobs]
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            await pool.aclose()
        for target in self.targets:
            if target.auth is not None:
                await target.auth.aclose()

    # ---- HTTP ------------------------------------------------------------------------------------

    async def _http(self, target: Target, scope: Scope, receive: Receive, send: Send) -> None:
        timeouts = target.api.gateway.timeouts
        candidates = target.group(scope).candidates()
        base, host, has_body, length = self.request_headers(scope, target)
        query = self.query(scope, target)
        body = RequestBody(receive, keep=target.auth is not None and target.auth.retry_on_401) if has_body else None
        lost: asyncio.Future[None] | None = scope.get(CONNECTION_LOST)
        # the loop named: asyncio.current_task() alone asks for the running loop, a getpid(2) on Python 3.11
        guard = Guard(asyncio.current_task(lost.get_loop() if lost is not None else None), timeouts.total)
        watcher: asyncio.Future[None] | None = None
        if lost is None:  # a server without our connection_lost future: a task waits in receive()
            watcher = asyncio.ensure_future(guard.watch(receive, body))
        elif lost.done():
            guard.close()
            logger.info("api %s: the client went away before the backend was called", target.name)
            return
        else:
            lost.add_done_callback(guard)
        response: UpstreamResponse | None = None
        started = False
        try:
            response = await self._exchange(target, scope, candidates, base, host, query, body, length)
            headers = response_headers(response.headers)
            await send({"type": "http.response.start", "status": response.status, "headers": headers})
            started = True
            whole = response.whole
            if whole is None:
                whole = b""  # one chunk held back: the last one goes with more_body=False, one message fewer
                async for chunk in response.stream():
                    if whole:
                        await send({"type": "http.response.body", "body": whole, "more_body": True})
                    whole = chunk
            guard.finished = True  # a disconnect from here on is the end of a complete response
            await send({"type": "http.response.body", "body": whole, "more_body": False})
        except asyncio.CancelledError:
            if not guard.caught():
                raise
            if guard.expired:
                self._failed(target, TimeoutError(f"no whole answer within {timeouts.total:g} s (total)"), started)
            else:
                logger.info("api %s: the client went away; the backend request is closed", target.name)
        except ClientGone:
            logger.info("api %s: the client went away; the backend request is closed", target.name)
        except (UpstreamError, TimeoutError) as exc:
            self._failed(target, exc, started)
        except RequestError:
            raise
        except Exception as exc:  # a fault of ours or of a library: logged, answered as a failed backend call
            logger.exception("api %s: the backend call failed unexpectedly (%s)", target.name, type(exc).__name__)
            if not started:
                raise BackendError("the gateway could not complete the backend call") from None
        finally:
            guard.close()
            if watcher is not None:
                watcher.cancel()
            elif lost is not None:
                lost.remove_done_callback(guard)
            if response is not None:
                response.close()

    @staticmethod
    def _failed(target: Target, exc: UpstreamError | TimeoutError, started: bool) -> None:
        """Log a transport failure; before the response started, raise its answer."""
        when = "mid-response" if started else "before responding"
        logger.warning("api %s: the backend failed %s: %s", target.name, when, _cause(exc))
        if not started:
            raise transport_error(exc) from None

    async def _exchange(
        self,
        target: Target,
        scope: Scope,
        candidates: list[Endpoint],
        base: Headers,
        host: bytes | None,
        query: bytes,
        body: RequestBody | None,
        length: int | None,
    ) -> UpstreamResponse:
        timeouts = target.api.gateway.timeouts
        auth = target.auth
        preserve = target.api.gateway.preserve_host
        retried = False
        index = 0
        while True:
            endpoint = candidates[index]
            headers = [(b"host", host if preserve and host else endpoint.host_header), *base]
            path = self.target_path(scope, target, endpoint)
            used, q = (await auth.apply(headers, query)) if auth is not None else (None, query)
            stream: AsyncIterator[bytes] | None = None
            if body is not None:
                stream = (body.replay() if retried else None) or body.__aiter__()
            request = UpstreamRequest(scope["method"], path + b"?" + q if q else path, headers, stream, length)
            try:
                response = await self.pool(endpoint).request(
                    request, connect_timeout=timeouts.connect, read_timeout=timeouts.read
                )
            except RequestBodyError:
                raise BadRequest("the request body does not match its Content-Length") from None
            except UpstreamError as exc:
                if not isinstance(exc, PoolTimeout):
                    endpoint.failed(_cause(exc))
                logger.warning("api %s: backend %s: %s", target.name, endpoint.url, _cause(exc))
                # the next endpoint, when this one never got the request: no connection; or a closed
                # connection on an idempotent request that sent no body (never a POST that may have been served)
                untouched = isinstance(exc, (ConnectFailed, ConnectTimeout)) or (
                    isinstance(exc, ConnectionClosed) and scope["method"] in IDEMPOTENT and body is None
                )
                if untouched and index + 1 < len(candidates):
                    index += 1
                    continue
                raise
            endpoint.succeeded()
            if response.status == 401 and auth is not None and auth.retry_on_401 and not retried:
                replay = body is None or body.replay() is not None
                if replay:
                    await response.aclose()
                    auth.rejected(used)
                    retried = True
                    continue
            return response


def _cause(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
