"""uvicorn protocol classes that add the ASGI TLS extension and keep the real peer.

uvicorn 0.54 does not put the client certificate into the scope. Each class
here subclasses one of uvicorn's HTTP or WebSocket protocols with
`TLSExtensionMixin`: when a connection is made, its TLS facts are read once
from the transport's ``ssl_object`` and every scope of that connection gets

* ``scope["extensions"]["tls"]`` on TLS connections, as the ASGI TLS extension
  specifies (https://asgi.readthedocs.io/en/latest/extensions.html#tls), unless
  the server already set one;
* ``scope["asgi_apim.peer"]``: the address of the socket peer, recorded before
  uvicorn's ProxyHeadersMiddleware (inside ``config.loaded_app``) rewrites
  ``scope["client"]`` from X-Forwarded-For. On a UNIX socket there is no
  address: the peer is ``("unix", 0)``, which no CIDR matches, so a proxy's
  certificate header is never believed there.

``client_cert_chain`` is the chain the client sent, leaf first, as PEM strings:
``SSLObject.get_unverified_chain()`` on Python 3.13+, the private
``SSLObject._sslobj.get_unverified_chain()`` on 3.11/3.12, and the leaf from
``getpeercert(binary_form=True)`` when those give nothing (a resumed session).
``cipher_suite`` is the IANA id, the low 16 bits of OpenSSL's cipher id as
`ssl.SSLContext.get_ciphers` reports it; None when OpenSSL does not list it.
``server_cert`` is the PEM that `set_server_certificate` recorded for the
connection's SSLContext (``asgi-apim serve`` records its ``--ssl-certfile``
leaf), else None.

The classes are module attributes (``H11TLSProtocol``, ``HttpToolsTLSProtocol``,
``WebSocketsSansIOTLSProtocol``, ``WebSocketsTLSProtocol``, ``WSProtoTLSProtocol``)
built on first access, so an uninstalled implementation (wsproto) or a
deprecated one (websockets.legacy) is imported only when chosen, and the
classes pickle by name for ``--workers``. ``HTTPProtocol`` and ``WSProtocol``
are the classes for what uvicorn's own ``auto`` picks (httptools or h11;
websockets or wsproto), for plain ``uvicorn --http ... --ws ...``.

The HTTP classes also cut off a client whose request head is late (see
`asgi_apim.server.deadline`) and, under ``asgi-apim serve``, run the TLS
handshake themselves so that a refused one is logged (see
`asgi_apim.server.handshake`). The httptools class sends a response's head
with its first body piece in one write (see `asgi_apim.server.writes`).

Every scope also gets ``scope["asgi_apim.connection_lost"]``: an
``asyncio.Future`` of the connection, done (result None) once the client's
connection is closed. An app that must stop work for a client that went away
(the gateway closes its backend request) adds a done-callback to it instead of
keeping a task in ``receive()`` for every request.
"""

from __future__ import annotations

import _ssl
import asyncio
import ssl
import weakref
from typing import Any

from cryptography import x509
from starlette.types import ASGIApp, Receive, Scope, Send

from asgi_apim._keys import CONNECTION_LOST, PEER
from asgi_apim.server.deadline import H11HeadDeadline, HttpToolsHeadDeadline, header_timeout_for
from asgi_apim.server.handshake import handshake_context, start_handshake
from asgi_apim.server.ratelog import install_accept_log
from asgi_apim.server.writes import OneWriteHead

TLSInfo = dict[str, Any]

UNIX_PEER = ("unix", 0)
TLS_VERSIONS = {"SSLv3": 0x0300, "TLSv1": 0x0301, "TLSv1.1": 0x0302, "TLSv1.2": 0x0303, "TLSv1.3": 0x0304}

_SERVER_CERTS: weakref.WeakKeyDictionary[ssl.SSLContext, str] = weakref.WeakKeyDictionary()
_CIPHER_IDS: dict[str, int | None] = {}


def set_server_certificate(context: ssl.SSLContext, pem: str | None) -> None:
    """Record the PEM leaf ``context`` presents, reported as ``server_cert``."""
    if pem is None:
        _SERVER_CERTS.pop(context, None)
    else:
        _SERVER_CERTS[context] = pem


def _cipher_id(context: ssl.SSLContext | None, name: str) -> int | None:
    if name not in _CIPHER_IDS:
        for cipher in context.get_ciphers() if context is not None else ():
            _CIPHER_IDS.setdefault(cipher["name"], cipher["id"] & 0xFFFF)
        _CIPHER_IDS.setdefault(name, None)
    return _CIPHER_IDS[name]


def _unverified_chain(ssl_object: Any) -> list[bytes]:
    getter = getattr(ssl_object, "get_unverified_chain", None)  # Python 3.13+: DER bytes
    if getter is not None:
        return [bytes(c) for c in getter() or ()]
    getter = getattr(getattr(ssl_object, "_sslobj", None), "get_unverified_chain", None)
    if getter is None:
        return []
    return [c.public_bytes(_ssl.ENCODING_DER) for c in getter() or ()]


def client_chain_der(ssl_object: Any) -> list[bytes]:
    """The client's certificates, DER, leaf first; [] when it sent none."""
    leaf = ssl_object.getpeercert(binary_form=True)
    if not leaf:
        return []
    chain = _unverified_chain(ssl_object)
    if not chain or chain[0] != leaf:
        chain = [leaf, *(c for c in chain if c != leaf)]
    return chain


def tls_info(ssl_object: Any) -> TLSInfo:
    """The ASGI TLS extension dict for one connection."""
    error: str | None = None
    try:
        chain = client_chain_der(ssl_object)
        name = x509.load_der_x509_certificate(chain[0]).subject.rfc4514_string() if chain else None
    except (ValueError, ssl.SSLError):
        chain, name, error = [], None, "the client certificate could not be read"
    cipher = ssl_object.cipher()
    context = getattr(ssl_object, "context", None)
    context = context if isinstance(context, ssl.SSLContext) else None
    return {
        "server_cert": _SERVER_CERTS.get(context) if context is not None else None,
        "client_cert_chain": [ssl.DER_cert_to_PEM_cert(der) for der in chain],
        "client_cert_name": name,
        "client_cert_error": error,
        "tls_version": TLS_VERSIONS.get(ssl_object.version() or ""),
        "cipher_suite": _cipher_id(context, cipher[0]) if cipher else None,
    }


class ConnectionApp:
    """The app of one connection: records the peer and the TLS extension, then calls on.
    Each scope gets its own shallow copy of the TLS dict, so no request can alter the next one's."""

    __slots__ = ("app", "lost", "peer", "tls")

    def __init__(
        self, app: ASGIApp, peer: tuple[str, int], tls: TLSInfo | None, lost: asyncio.Future[None] | None = None
    ) -> None:
        self.app = app
        self.peer = peer
        self.tls = tls
        self.lost = lost

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            scope[PEER] = self.peer
            if self.lost is not None:
                scope[CONNECTION_LOST] = self.lost
            if self.tls is not None:
                tls = dict(self.tls, client_cert_chain=list(self.tls["client_cert_chain"]))
                scope.setdefault("extensions", {}).setdefault("tls", tls)
        await self.app(scope, receive, send)


class TLSExtensionMixin:
    """Wraps ``self.app`` per connection in a `ConnectionApp`. Put it before the uvicorn base."""

    app: ASGIApp
    client: tuple[str, int] | None
    _lost: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        config = getattr(self, "config", None)
        context = handshake_context(config)
        if context is not None and transport.get_extra_info("sslcontext") is None:
            start_handshake(transport, self, context, header_timeout_for(config))  # comes back here once done
            return
        super().connection_made(transport)  # type: ignore[misc]  # the uvicorn protocol after this mixin in the MRO has it
        ssl_object = transport.get_extra_info("ssl_object")
        info = tls_info(ssl_object) if ssl_object is not None else None
        self._lost = asyncio.get_running_loop().create_future()
        self.app = ConnectionApp(self.app, self.client or UNIX_PEER, info, self._lost)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)  # type: ignore[misc]  # the uvicorn protocol after this mixin in the MRO has it
        lost = self._lost  # None: lost before the handshake we ran was done
        if lost is not None and not lost.done():
            lost.set_result(None)


HTTP_BASES: dict[str, str] = {
    "H11TLSProtocol": "uvicorn.protocols.http.h11_impl:H11Protocol",
    "HttpToolsTLSProtocol": "uvicorn.protocols.http.httptools_impl:HttpToolsProtocol",
}
WS_BASES: dict[str, str] = {
    "WebSocketsTLSProtocol": "uvicorn.protocols.websockets.websockets_impl:WebSocketProtocol",
    "WebSocketsSansIOTLSProtocol": "uvicorn.protocols.websockets.websockets_sansio_impl:WebSocketsSansIOProtocol",
    "WSProtoTLSProtocol": "uvicorn.protocols.websockets.wsproto_impl:WSProtocol",
}
_HTTP_NAMES = {"h11": "H11TLSProtocol", "httptools": "HttpToolsTLSProtocol"}
_WS_NAMES = {
    "websockets": "WebSocketsTLSProtocol",
    "websockets-sansio": "WebSocketsSansIOTLSProtocol",
    "wsproto": "WSProtoTLSProtocol",
}


_DEADLINES: dict[str, type] = {"H11TLSProtocol": H11HeadDeadline, "HttpToolsTLSProtocol": HttpToolsHeadDeadline}
_WRITES: dict[str, type] = {"HttpToolsTLSProtocol": OneWriteHead}
ALIASES = {"HTTPProtocol": "http", "WSProtocol": "ws"}  # what uvicorn's own ``auto`` would pick


_BUILT: dict[str, type] = {}


def __getattr__(name: str) -> type:
    """The class ``name``, built once; not cached in the module's globals, so that every lookup
    (uvicorn's ``--http`` import, inside its running loop) also installs the rate-limited
    ``accept()`` log on that loop before the first connection is accepted."""
    try:
        install_accept_log(asyncio.get_running_loop())
    except RuntimeError:
        pass
    if name in ALIASES:
        http, ws = tls_protocols()
        cls = http if ALIASES[name] == "http" else ws
        if cls is None:
            raise AttributeError(f"{__name__}.{name}: no WebSocket implementation is installed")
        return cls
    if name in _BUILT:
        return _BUILT[name]
    target = HTTP_BASES.get(name) or WS_BASES.get(name)
    if target is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from uvicorn.importer import import_from_string

    base = import_from_string(target)
    mixins = tuple(m for m in (TLSExtensionMixin, _WRITES.get(name), _DEADLINES.get(name)) if m is not None)
    _BUILT[name] = cls = type(
        name,
        (*mixins, base),
        {"__module__": __name__, "__qualname__": name, "__doc__": f"{target} with the ASGI TLS extension."},
    )
    return cls


def _subclass_of(auto: Any, names: dict[str, str], bases: dict[str, str]) -> type:
    for cls_name in names.values():
        module, _, attr = bases[cls_name].partition(":")
        if getattr(auto, "__module__", None) == module and getattr(auto, "__name__", None) == attr:
            return __getattr__(cls_name)
    raise ValueError(f"uvicorn chose {auto!r}, which asgi-apim has no TLS protocol for")


def tls_protocols(http: str = "auto", ws: str = "auto") -> tuple[type, type | None]:
    """Our classes for uvicorn's ``--http`` (auto, h11, httptools) and ``--ws``
    (auto, websockets, websockets-sansio, wsproto, none) names.
    ``auto`` picks what uvicorn's own ``auto`` picks. ImportError when the chosen
    implementation is not installed; ValueError for a name we do not know."""
    if http == "auto":
        from uvicorn.protocols.http.auto import AutoHTTPProtocol

        http_cls = _subclass_of(AutoHTTPProtocol, _HTTP_NAMES, HTTP_BASES)
    elif http in _HTTP_NAMES:
        http_cls = __getattr__(_HTTP_NAMES[http])
    else:
        raise ValueError(f"--http {http!r}: asgi-apim supports auto, {', '.join(_HTTP_NAMES)}")
    if ws == "none":
        return http_cls, None
    if ws == "auto":
        from uvicorn.protocols.websockets.auto import AutoWebSocketsProtocol

        if AutoWebSocketsProtocol is None:
            return http_cls, None
        return http_cls, _subclass_of(AutoWebSocketsProtocol, _WS_NAMES, WS_BASES)
    if ws in _WS_NAMES:
        return http_cls, __getattr__(_WS_NAMES[ws])
    raise ValueError(f"--ws {ws!r}: asgi-apim supports auto, none, {', '.join(_WS_NAMES)}")
