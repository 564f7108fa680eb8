"""The TLS handshake run by our protocol, so that a refused one leaves a log line.

When the event loop runs the handshake (``create_server(ssl=...)``), a failure
is dropped silently: asyncio and uvloop log it only in debug mode, and the
protocol never learns of the connection. The client sees "Empty reply from
server" and the operator sees nothing. Under ``asgi-apim serve`` the server
listens in plain TCP instead (`HandshakeConfig` moves uvicorn's SSLContext
aside after loading it), and the protocol calls ``loop.start_tls`` itself
(`start_handshake`): a refusal is logged on ``asgi_apim.tls`` with the peer and
the verification error (unknown CA, expired, a CA certificate used as a client,
plain HTTP on the TLS port...), at most one line per reason per second. The
handshake must finish within the header timeout.
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import logging
import ssl
from typing import Any

import uvicorn

from asgi_apim.server.ratelog import RateLimitedLog, install_accept_log

HANDSHAKE_ATTR = "asgi_apim_handshake_context"
DEFAULT_HANDSHAKE_TIMEOUT = 60.0  # asyncio's own

logger = logging.getLogger("asgi_apim.tls")
_refusals = RateLimitedLog(logger)

_SSL_REASONS = {
    "HTTP_REQUEST": "plain HTTP sent to the TLS port",
    "WRONG_VERSION_NUMBER": "not a TLS client hello",
    "NO_SHARED_CIPHER": "no cipher in common",
    "UNSUPPORTED_PROTOCOL": "TLS version not supported",
    "TLSV1_ALERT_UNKNOWN_CA": "the client does not trust the server certificate (alert unknown CA)",
    "SSLV3_ALERT_BAD_CERTIFICATE": "the client rejected the server certificate (alert bad certificate)",
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": "no client certificate sent (--ssl-cert-reqs 2 requires one)",
}


def handshake_context(config: Any) -> ssl.SSLContext | None:
    """The SSLContext our protocol handshakes with itself, or None (the loop does TLS, or none)."""
    context = getattr(config, HANDSHAKE_ATTR, None)
    return context if isinstance(context, ssl.SSLContext) else None


def refusal_reason(exc: BaseException) -> tuple[int, str]:
    """The log level and the operator-readable reason for a failed handshake."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return logging.WARNING, f"client certificate refused: {exc.verify_message} (verify code {exc.verify_code})"
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or type(exc).__name__
        return logging.INFO, _SSL_REASONS.get(reason, reason.lower().replace("_", " "))
    if isinstance(exc, ConnectionAbortedError) and "taking longer" in str(exc):
        return logging.INFO, "handshake not finished in time"
    if isinstance(exc, (ConnectionError, EOFError)):
        return logging.DEBUG, "connection closed during the handshake"
    return logging.WARNING, f"{type(exc).__name__}: {exc}"


def _peer(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    if isinstance(peer, (tuple, list)) and len(peer) >= 2:
        return f"[{peer[0]}]:{peer[1]}" if ":" in str(peer[0]) else f"{peer[0]}:{peer[1]}"
    return "unix socket"


def log_refusal(transport: asyncio.BaseTransport, exc: BaseException) -> None:
    level, reason = refusal_reason(exc)
    _refusals.log(level, reason, "TLS handshake refused from %s: %s", _peer(transport), reason)


def _ssl_protocol_class(loop: asyncio.AbstractEventLoop) -> Any:
    """The loop's own SSL protocol: uvloop's for a uvloop loop (its transports want it), else asyncio's."""
    module = type(loop).__module__
    if module.startswith("uvloop"):
        import uvloop.loop

        return getattr(uvloop.loop, "SSLProtocol")  # noqa: B009  # not in uvloop's stub
    return asyncio.sslproto.SSLProtocol


def start_handshake(
    transport: asyncio.BaseTransport,
    protocol: object,
    context: ssl.SSLContext,
    timeout: float | None,
) -> asyncio.Future[None]:
    """Put the loop's SSL protocol between ``transport`` and ``protocol``, at once, as
    ``create_server(ssl=...)`` does (no byte of the client hello can reach ``protocol``):
    ``protocol.connection_made`` is called with the TLS transport when the handshake succeeds;
    a failure is logged (`log_refusal`) and the connection aborted. The future is the handshake's."""
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()
    ssl_protocol = _ssl_protocol_class(loop)(
        loop, protocol, context, waiter, True, None, True, timeout or DEFAULT_HANDSHAKE_TIMEOUT
    )
    transport.set_protocol(ssl_protocol)
    ssl_protocol.connection_made(transport)
    waiter.add_done_callback(lambda done: _handshake_done(transport, done))
    return waiter


def _handshake_done(transport: asyncio.BaseTransport, waiter: asyncio.Future[None]) -> None:
    if waiter.cancelled():
        transport.abort()  # type: ignore[attr-defined]  # every transport asyncio and uvloop give here has abort()
        return
    exc = waiter.exception()
    if exc is not None:
        log_refusal(transport, exc)
        transport.abort()  # type: ignore[attr-defined]  # every transport asyncio and uvloop give here has abort()


def take_over_handshake(config: uvicorn.Config) -> None:
    """After ``config.load()``: the listener is plain TCP and our protocol runs the handshake with
    the SSLContext uvicorn built (see `HandshakeConfig`)."""
    if config.ssl is not None:
        setattr(config, HANDSHAKE_ATTR, config.ssl)
        config.ssl = None


class HandshakeConfig(uvicorn.Config):
    """uvicorn's Config that keeps the SSLContext for our protocol: the listener is plain TCP and
    each connection's HTTP protocol runs the handshake (`start_handshake`), logging refusals.
    ``header_timeout`` travels with it to every worker."""

    def __init__(self, *args: Any, header_timeout: float | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout = header_timeout

    def load(self) -> None:
        super().load()
        take_over_handshake(self)
        try:
            install_accept_log(asyncio.get_running_loop())
        except RuntimeError:  # loaded outside a loop (a test): the protocols install it on first use
            pass


class HandshakeServer(uvicorn.Server):
    """uvicorn's Server announcing ``https://`` when our protocol does the TLS."""

    def _log_started_message(self, listeners: Any) -> None:
        context = handshake_context(self.config)
        if context is None or self.config.ssl is not None:
            super()._log_started_message(listeners)
            return
        self.config.ssl = context
        try:
            super()._log_started_message(listeners)
        finally:
            self.config.ssl = None
