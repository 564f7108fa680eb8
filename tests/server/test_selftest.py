from __future__ import annotations

from typing import Any

import pytest
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from asgi_apim._keys import PEER
from asgi_apim.server import protocols
from asgi_apim.server.protocols import H11TLSProtocol, HttpToolsTLSProtocol, WebSocketsSansIOTLSProtocol, tls_protocols
from asgi_apim.server.selftest import SelfTestError, check_protocols, run_selftest


@pytest.mark.filterwarnings("ignore:.*deprecated", "ignore::DeprecationWarning")
@pytest.mark.parametrize("http", ["auto", "h11", "httptools"])
@pytest.mark.parametrize("ws", ["auto", "websockets-sansio", "websockets", "none"])
async def test_passes_with_the_installed_uvicorn(http: str, ws: str) -> None:
    await check_protocols(*tls_protocols(http, ws))


@pytest.mark.parametrize(
    "http, ws, kind",
    [
        (H11Protocol, None, "H11Protocol (HTTP)"),
        (HttpToolsProtocol, None, "HttpToolsProtocol (HTTP)"),
        (H11TLSProtocol, WebSocketsSansIOProtocol, "WebSocketsSansIOProtocol (WebSocket)"),
    ],
)
async def test_fails_when_uvicorns_own_classes_are_used(http: type, ws: type | None, kind: str) -> None:
    with pytest.raises(
        SelfTestError, match=r"through " + kind.replace("(", r"\(").replace(")", r"\)") + " does not deliver"
    ):
        await check_protocols(http, ws)


class FutureH11(H11TLSProtocol):
    """A uvicorn that takes the app from the config again after connection_made."""

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self.app = self.config.loaded_app


class FutureWS(WebSocketsSansIOTLSProtocol):
    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self.app = self.config.loaded_app


async def test_fails_when_a_future_uvicorn_bypasses_self_app() -> None:
    with pytest.raises(SelfTestError, match="FutureH11"):
        await check_protocols(FutureH11, None)
    with pytest.raises(SelfTestError, match="FutureWS"):
        await check_protocols(H11TLSProtocol, FutureWS)


async def test_fails_when_the_certificate_is_lost(monkeypatch: pytest.MonkeyPatch) -> None:
    real = protocols.tls_info
    monkeypatch.setattr(protocols, "tls_info", lambda obj: dict(real(obj), client_cert_chain=[]))
    with pytest.raises(SelfTestError, match="without the client certificate"):
        await check_protocols(HttpToolsTLSProtocol, None)


async def test_fails_when_the_peer_is_not_recorded(monkeypatch: pytest.MonkeyPatch) -> None:
    real_call = protocols.ConnectionApp.__call__

    async def forgetful(self: Any, scope: dict[str, Any], receive: Any, send: Any) -> None:
        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            scope.pop(PEER, None)
            await inner(scope, receive, send)

        inner = self.app
        await real_call(type(self)(app, self.peer, self.tls), scope, receive, send)

    monkeypatch.setattr(protocols.ConnectionApp, "__call__", forgetful)
    with pytest.raises(SelfTestError, match="socket peer"):
        await check_protocols(H11TLSProtocol, None)


def test_run_selftest_is_synchronous_and_one_line() -> None:
    run_selftest(H11TLSProtocol, WebSocketsSansIOTLSProtocol)
    with pytest.raises(SelfTestError) as info:
        run_selftest(H11Protocol, None)
    assert "\n" not in str(info.value) and "uvicorn" in str(info.value)
