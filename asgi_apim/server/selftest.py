"""Start-up self-test: does the installed uvicorn still carry our extension?

Our protocol classes rely on uvicorn internals (``self.app``, ``self.client``,
``connection_made``). Before serving, `check_protocols` drives the chosen
classes in-process over a fake TLS transport, with a stub ``ssl_object`` and a
throwaway client certificate: a plain ``GET`` through the HTTP class and a
WebSocket upgrade through the WebSocket class, behind uvicorn's own
ProxyHeadersMiddleware and an X-Forwarded-For header. The app must see the TLS
extension with that certificate and the real socket peer; if it does not,
``serve`` stops with one clear line instead of running without mutual TLS.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import ssl
from typing import Any

import uvicorn
from starlette.types import Receive, Scope, Send

from asgi_apim._keys import PEER
from asgi_apim.errors import APIMError

PEER_ADDR = ("127.0.0.1", 54321)
FORWARDED_FOR = "203.0.113.7"
_TIMEOUT = 5.0


class SelfTestError(APIMError):
    """The installed uvicorn does not deliver the TLS extension through our classes."""


class StubSSLObject:
    """The part of ``ssl.SSLObject`` the protocols read."""

    context = None

    def __init__(self, der: bytes) -> None:
        self.der = der

    def getpeercert(self, binary_form: bool = False) -> Any:
        return self.der if binary_form else {}

    def version(self) -> str:
        return "TLSv1.3"

    def cipher(self) -> tuple[str, str, int]:
        return ("TLS_AES_128_GCM_SHA256", "TLSv1.3", 128)


class FakeTransport(asyncio.Transport):
    def __init__(self, ssl_object: Any) -> None:
        super().__init__()
        self.extra = {
            "ssl_object": ssl_object,
            "sslcontext": object(),
            "peername": PEER_ADDR,
            "sockname": ("127.0.0.1", 8443),
            "socket": None,
        }
        self.written = bytearray()
        self.closed = False
        self.protocol: Any = None

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.extra.get(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol

    def get_write_buffer_size(self) -> int:
        return 0

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def can_write_eof(self) -> bool:
        return False


def _client_certificate() -> tuple[bytes, str]:
    from asgi_apim.certs.pki import issue_client

    issued = issue_client(None, "asgi-apim self-test")
    return issued.der(), issued.cert.subject.rfc4514_string()


def _request(websocket: bool) -> bytes:
    lines = ["GET / HTTP/1.1", "Host: selftest", f"X-Forwarded-For: {FORWARDED_FOR}"]
    if websocket:
        key = base64.b64encode(os.urandom(16)).decode()
        lines += ["Upgrade: websocket", "Connection: Upgrade", f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _drive(http: type, ws: type | None, websocket: bool, der: bytes) -> Scope:
    seen: asyncio.Future[Scope] = asyncio.get_running_loop().create_future()

    async def probe(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            return
        if not seen.done():
            seen.set_result(scope)
        if scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.close", "code": 1000})
        else:
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})

    config = uvicorn.Config(
        probe,
        http=http,
        ws=ws or "none",
        lifespan="off",
        log_config=None,
        log_level=None,
        proxy_headers=True,
        forwarded_allow_ips=PEER_ADDR[0],
        access_log=False,
    )
    config.load()
    from uvicorn.server import ServerState

    protocol = http(config=config, server_state=ServerState(), app_state={}, _loop=asyncio.get_running_loop())
    transport = FakeTransport(StubSSLObject(der))
    protocol.connection_made(transport)
    protocol.data_received(_request(websocket))
    try:
        return await asyncio.wait_for(seen, _TIMEOUT)
    except TimeoutError:
        kind = "WebSocket" if websocket else "HTTP"
        raise SelfTestError(
            f"the app was never called through {kind} {getattr(ws if websocket else http, '__name__', '?')}"
        ) from None
    finally:
        (transport.protocol or protocol).connection_lost(None)


def _verify(scope: Scope, kind: str, cls: type, der: bytes, name: str) -> None:
    where = f"uvicorn {uvicorn.__version__} through {cls.__name__} ({kind})"
    tls = scope.get("extensions", {}).get("tls")
    if not isinstance(tls, dict):
        raise SelfTestError(f"{where} does not deliver scope['extensions']['tls']: client certificates would be lost")
    chain = tls.get("client_cert_chain") or []
    if not chain or ssl.PEM_cert_to_DER_cert(chain[0]) != der or tls.get("client_cert_name") != name:
        raise SelfTestError(f"{where} delivers the TLS extension without the client certificate")
    if tuple(scope.get(PEER) or ()) != PEER_ADDR:
        raise SelfTestError(
            f"{where} does not record the socket peer in scope[{PEER!r}]: the trust gate would be blind"
        )
    if tuple(scope.get("client") or ())[:1] != (FORWARDED_FOR,):
        raise SelfTestError(f"{where} does not run the app behind uvicorn's proxy-headers middleware as expected")


async def check_protocols(http: type, ws: type | None) -> None:
    """Raise `SelfTestError` unless ``http`` (and ``ws``) deliver the extension and the peer."""
    der, name = _client_certificate()
    _verify(await _drive(http, ws, False, der), "HTTP", http, der, name)
    if ws is not None:
        _verify(await _drive(http, ws, True, der), "WebSocket", ws, der, name)


def run_selftest(http: type, ws: type | None) -> None:
    """`check_protocols` on a loop of its own, with uvicorn's loggers muted meanwhile."""
    loggers = [logging.getLogger(name) for name in ("uvicorn.error", "uvicorn.access", "uvicorn.asgi")]
    disabled = [lg.disabled for lg in loggers]
    for lg in loggers:
        lg.disabled = True
    try:
        asyncio.run(check_protocols(http, ws))
    finally:
        for lg, was in zip(loggers, disabled):
            lg.disabled = was
