from __future__ import annotations

import asyncio
import base64
import os
import pickle
import ssl
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from cryptography import x509
from uvicorn.protocols.http.auto import AutoHTTPProtocol
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState

from asgi_apim._keys import PEER
from asgi_apim.certs.pki import Issued, issue_client, issue_server, make_ca
from asgi_apim.server import protocols
from asgi_apim.server.protocols import ConnectionApp, set_server_certificate, tls_info, tls_protocols
from asgi_apim.server.selftest import FakeTransport, StubSSLObject
from tests.server.tlspair import client_context, handshake, server_context


@pytest.fixture(scope="module")
def pki() -> dict[str, Issued]:
    ca = make_ca()
    inter = make_ca("intermediate", issuer=ca)
    return {"ca": ca, "inter": inter, "server": issue_server(ca), "client": issue_client(inter, "bob")}


def _pem_der(pem: str) -> bytes:
    return ssl.PEM_cert_to_DER_cert(pem)


def test_tls_info_from_a_real_handshake(tmp_path: Path, pki: dict[str, Issued]) -> None:
    sctx = server_context(tmp_path, pki["server"])
    sctx.load_verify_locations(cadata=pki["ca"].cert_pem().decode())
    server, _ = handshake(sctx, client_context(tmp_path, pki["ca"], pki["client"], pki["inter"]))
    info = tls_info(server)
    assert [_pem_der(p) for p in info["client_cert_chain"]] == [pki["client"].der(), pki["inter"].der()]
    assert info["client_cert_name"] == pki["client"].cert.subject.rfc4514_string() == "CN=bob,O=asgi-apim dev"
    assert info["client_cert_error"] is None
    assert info["tls_version"] == {"TLSv1.3": 0x0304, "TLSv1.2": 0x0303}[server.version()]
    iana = {"TLS_AES_256_GCM_SHA384": 0x1302, "TLS_AES_128_GCM_SHA256": 0x1301, "TLS_CHACHA20_POLY1305_SHA256": 0x1303}
    assert info["cipher_suite"] == iana[server.cipher()[0]]
    assert info["server_cert"] is None


def test_tls_1_2_cipher_suite_and_server_cert(tmp_path: Path, pki: dict[str, Issued]) -> None:
    sctx = server_context(tmp_path, pki["server"])
    sctx.maximum_version = ssl.TLSVersion.TLSv1_2
    sctx.set_ciphers("ECDHE-ECDSA-AES128-GCM-SHA256")
    set_server_certificate(sctx, pki["server"].cert_pem().decode())
    server, _ = handshake(sctx, client_context(tmp_path, pki["ca"]))
    info = tls_info(server)
    assert info["tls_version"] == 0x0303
    assert info["cipher_suite"] == 0xC02B  # TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
    assert info["server_cert"] == pki["server"].cert_pem().decode()
    assert info["client_cert_chain"] == [] and info["client_cert_name"] is None
    set_server_certificate(sctx, None)
    assert tls_info(server)["server_cert"] is None


class _ChainStub(StubSSLObject):
    def __init__(self, leaf: bytes, chain: list[bytes] | None) -> None:
        super().__init__(leaf)
        self.chain = chain

    def get_unverified_chain(self) -> list[bytes] | None:  # the Python 3.13 API
        return self.chain


def test_leaf_first_even_when_the_chain_omits_it(pki: dict[str, Issued]) -> None:
    leaf, inter = pki["client"].der(), pki["inter"].der()
    assert [_pem_der(p) for p in tls_info(_ChainStub(leaf, [inter]))["client_cert_chain"]] == [leaf, inter]
    assert [_pem_der(p) for p in tls_info(_ChainStub(leaf, [inter, leaf]))["client_cert_chain"]] == [leaf, inter]


def test_resumed_session_falls_back_to_the_leaf(pki: dict[str, Issued]) -> None:
    leaf = pki["client"].der()
    for stub in (_ChainStub(leaf, None), StubSSLObject(leaf)):  # no chain / no chain API at all
        info = tls_info(stub)
        assert [_pem_der(p) for p in info["client_cert_chain"]] == [leaf]
        assert info["client_cert_name"] == "CN=bob,O=asgi-apim dev"


def test_unreadable_certificate_is_an_error_not_a_crash() -> None:
    info = tls_info(StubSSLObject(b"\x30\x03\x02\x01\x00"))
    assert info["client_cert_chain"] == [] and info["client_cert_name"] is None
    assert info["client_cert_error"]


def test_unknown_cipher_is_none() -> None:
    class Odd(StubSSLObject):
        def cipher(self) -> tuple[str, str, int]:
            return ("NOT-A-CIPHER", "TLSv1.3", 0)

    assert tls_info(Odd(issue_client(None).der()))["cipher_suite"] is None


async def _noop_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    scope["seen"] = True


async def test_connection_app_never_overwrites_a_server_tls_key() -> None:
    ours = {"client_cert_chain": ["ours"], "tls_version": 0x0304}
    app = ConnectionApp(_noop_app, ("127.0.0.1", 1), ours)
    theirs = {"client_cert_chain": ["theirs"]}
    scope: dict[str, Any] = {"type": "http", "extensions": {"tls": theirs, "other": {}}}
    await app(scope, None, None)
    assert scope["extensions"] == {"tls": theirs, "other": {}} and scope[PEER] == ("127.0.0.1", 1)


async def test_connection_app_gives_each_scope_its_own_copy() -> None:
    app = ConnectionApp(_noop_app, ("127.0.0.1", 1), {"client_cert_chain": ["a"], "tls_version": 0x0304})
    first: dict[str, Any] = {"type": "http"}
    await app(first, None, None)
    first["extensions"]["tls"]["client_cert_chain"].append("tampered")
    second: dict[str, Any] = {"type": "websocket"}
    await app(second, None, None)
    assert second["extensions"]["tls"]["client_cert_chain"] == ["a"]


async def test_connection_app_leaves_lifespan_alone() -> None:
    app = ConnectionApp(_noop_app, ("127.0.0.1", 1), {"client_cert_chain": []})
    scope: dict[str, Any] = {"type": "lifespan"}
    await app(scope, None, None)
    assert scope == {"type": "lifespan", "seen": True}


# --------------------------------------------------------------------------- uvicorn protocols, fake transports


def _request(websocket: bool) -> bytes:
    lines = ["GET /x HTTP/1.1", "Host: t", "X-Forwarded-For: 198.51.100.4"]
    if websocket:
        key = base64.b64encode(os.urandom(16)).decode()
        lines += ["Upgrade: websocket", "Connection: Upgrade", f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def _scope_through(
    http: type, ws: type | None, transport: FakeTransport, websocket: bool = False
) -> dict[str, Any]:
    seen: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.set_result(scope)
        if scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.close", "code": 1000})
        else:
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})

    config = uvicorn.Config(
        app, http=http, ws=ws or "none", lifespan="off", log_config=None, forwarded_allow_ips="127.0.0.1"
    )
    config.load()
    proto = http(config=config, server_state=ServerState(), app_state={}, _loop=asyncio.get_running_loop())
    proto.connection_made(transport)
    proto.data_received(_request(websocket))
    try:
        return await asyncio.wait_for(seen, 5)
    finally:
        (transport.protocol or proto).connection_lost(None)


HTTP_CLASSES = ["h11", "httptools"]
WS_CLASSES = ["websockets-sansio", "websockets"]


@pytest.mark.filterwarnings("ignore:.*deprecated", "ignore::DeprecationWarning")
@pytest.mark.parametrize("http", HTTP_CLASSES)
@pytest.mark.parametrize("ws", WS_CLASSES)
@pytest.mark.parametrize("websocket", [False, True], ids=["http", "websocket"])
async def test_tls_connection_gets_extension_and_peer(http: str, ws: str, websocket: bool) -> None:
    client = issue_client(None, "carol")
    http_cls, ws_cls = tls_protocols(http, ws)
    scope = await _scope_through(http_cls, ws_cls, FakeTransport(StubSSLObject(client.der())), websocket)
    assert scope["type"] == ("websocket" if websocket else "http")
    tls = scope["extensions"]["tls"]
    assert [_pem_der(p) for p in tls["client_cert_chain"]] == [client.der()]
    assert tls["client_cert_name"] == "CN=carol,O=asgi-apim dev" and tls["tls_version"] == 0x0304
    assert scope[PEER] == ("127.0.0.1", 54321)
    assert scope["client"] == ("198.51.100.4", 0)  # uvicorn's proxy headers rewrote client, not the peer


@pytest.mark.parametrize("http", HTTP_CLASSES)
async def test_plain_connection_has_peer_but_no_tls(http: str) -> None:
    transport = FakeTransport(None)
    del transport.extra["sslcontext"]
    http_cls, _ = tls_protocols(http, "none")
    scope = await _scope_through(http_cls, None, transport)
    assert "tls" not in scope.get("extensions", {})
    assert scope[PEER] == ("127.0.0.1", 54321) and scope["scheme"] == "http"


async def test_unix_socket_peer_is_never_an_address() -> None:
    transport = FakeTransport(None)
    del transport.extra["sslcontext"]
    transport.extra["peername"] = ""
    http_cls, _ = tls_protocols("h11", "none")
    scope = await _scope_through(http_cls, None, transport)
    assert scope[PEER] == ("unix", 0)


# --------------------------------------------------------------------------- names


def test_tls_protocols_maps_uvicorns_names() -> None:
    assert tls_protocols("h11", "none") == (protocols.H11TLSProtocol, None)
    http, ws = tls_protocols("auto", "auto")
    assert issubclass(http, AutoHTTPProtocol) and http is protocols.HttpToolsTLSProtocol
    assert ws is protocols.WebSocketsSansIOTLSProtocol and issubclass(ws, WebSocketsSansIOProtocol)
    assert issubclass(tls_protocols("httptools", "websockets-sansio")[0], HttpToolsProtocol)
    assert issubclass(protocols.H11TLSProtocol, H11Protocol)


@pytest.mark.parametrize("http, ws", [("zttp", "auto"), ("h2", "auto"), ("auto", "socketio")])
def test_unknown_names_are_refused(http: str, ws: str) -> None:
    with pytest.raises(ValueError):
        tls_protocols(http, ws)


def test_classes_pickle_by_name() -> None:
    for name in ("H11TLSProtocol", "HttpToolsTLSProtocol", "WebSocketsSansIOTLSProtocol"):
        cls = getattr(protocols, name)
        assert cls.__module__ == "asgi_apim.server.protocols" and cls.__qualname__ == name
        assert pickle.loads(pickle.dumps(cls)) is cls
    with pytest.raises(AttributeError):
        protocols.NoSuchProtocol  # noqa: B018


def test_stub_certificate_name_matches_cryptography() -> None:
    issued = issue_client(None, 'dave, "quoted"')
    name = tls_info(StubSSLObject(issued.der()))["client_cert_name"]
    assert name == x509.load_der_x509_certificate(issued.der()).subject.rfc4514_string()
    assert name.startswith('CN=dave\\, \\"quoted\\"')
