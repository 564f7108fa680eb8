"""What the gateway forwards of a request's target and headers, and what it adds.

* Hop-by-hop headers (RFC 9110 7.6.1: Connection, Keep-Alive, Proxy-Connection,
  TE, Trailer, Transfer-Encoding, Upgrade, Proxy-Authenticate, Proxy-Authorization,
  and every header the Connection header names) are dropped both ways.
* The client's credential (``Authorization`` for oauth2 and basic, the API-key
  header and query parameter for api_key, when the API accepts that scheme)
  never reaches the backend, unless the API sets ``forward_credentials = true``
  and has no ``[apis.backend_security]`` (`asgi_apim.gateway.targets`). The
  client-certificate header never does; nor does a client's own
  ``X-WSO2-CLIENT-CERTIFICATE`` or ``X-JWT-Assertion``.
* ``X-Forwarded-For`` gets the socket peer appended when that peer is a trusted
  proxy (``[mutual_ssl] trusted_proxies``, decided by
  `asgi_apim.certs.trust.TrustedProxies` as for the certificate header), and is
  replaced by it otherwise; ``X-Forwarded-Proto`` and
  ``X-Forwarded-Host`` are a trusted proxy's when it sent them, else this
  request's scheme and Host.
* The path below the API's context is forwarded as received (``raw_path``), never
  decoded and encoded again.
"""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping
from typing import Any
from urllib.parse import quote, unquote

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authenticate",
        b"proxy-authorization",
    }
)
FORWARDED = frozenset({b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"forwarded"})
CLIENT_CERTIFICATE = b"x-wso2-client-certificate"
JWT_ASSERTION = b"x-jwt-assertion"
# uvicorn writes its own; a second copy from the backend would only confuse the client
RESPONSE_DROPPED = HOP_BY_HOP | {b"date", b"server"}

Headers = list[tuple[bytes, bytes]]
# dropped request headers whose values still count: the Host, the Connection's list, a trusted proxy's
# X-Forwarded-*, the framing (with Content-Length, which goes on as the upstream client writes it)
NOTED = frozenset({b"host", b"connection", b"transfer-encoding", b"content-length", *FORWARDED})


def connection_named(headers: Iterable[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """The header names listed by every ``Connection`` header (lower-cased)."""
    named: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            named.update(token.strip().lower() for token in value.split(b",") if token.strip())
    return frozenset(named)


def split_request(headers: Iterable[tuple[bytes, bytes]], dropped: frozenset[bytes]) -> tuple[Headers, Headers]:
    """One pass over a client's request headers: those that go on (names lower-cased; not the ones
    ``dropped``, not Content-Length), and those of `NOTED` (lower-cased) that the forwarding reads."""
    kept: Headers = []
    noted: Headers = []
    for name, value in headers:
        lname = name.lower()
        if lname in dropped or lname == b"content-length":
            if lname in NOTED:
                noted.append((lname, value))
        else:
            kept.append((lname, value))
    return kept, noted


def framing(noted: Headers) -> tuple[bool, int | None]:
    """Whether a request with these `NOTED` headers has a body, and its Content-Length (None: chunked)."""
    length: int | None = None
    for name, value in noted:
        if name == b"transfer-encoding":
            return True, None
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                continue
    if length is None or length < 0:
        return False, None
    return True, length


def response_headers(headers: Headers) -> Headers:
    """A backend's response headers as the client gets them."""
    out: Headers = []
    named: Headers | None = None
    for header in headers:
        lname = header[0].lower()
        if lname in RESPONSE_DROPPED:
            if lname == b"connection":
                named = [*(named or ()), header]
            continue
        out.append(header)
    if named:
        listed = connection_named(named)
        out = [h for h in out if h[0].lower() not in listed]
    return out


_PROTO = {"http": b"http", "https": b"https", "ws": b"http", "wss": b"https"}  # X-Forwarded-Proto of a scope scheme


def forwarded(
    headers: Headers, *, peer: str | None, trusted: bool, scheme: str, host: bytes | None
) -> list[tuple[bytes, bytes]]:
    """The X-Forwarded-For/-Proto/-Host headers to send, from the client's ``headers``."""
    found: dict[bytes, bytes] = {}
    if trusted:
        for name, value in headers:
            lname = name.lower()
            if lname in FORWARDED:
                found[lname] = found[lname] + b", " + value if lname in found else value
    out = []
    chain = found.get(b"x-forwarded-for")
    if peer:
        out.append((b"x-forwarded-for", chain + b", " + peer.encode("latin-1") if chain else peer.encode("latin-1")))
    elif chain:
        out.append((b"x-forwarded-for", chain))
    proto = found.get(b"x-forwarded-proto") or _PROTO.get(scheme) or scheme.encode("latin-1")
    out.append((b"x-forwarded-proto", proto))
    fhost = found.get(b"x-forwarded-host") or host
    if fhost:
        out.append((b"x-forwarded-host", fhost))
    return out


def remainder(raw_path: bytes, context: str) -> bytes | None:
    """The part of ``raw_path`` below ``context`` as received (``b""`` or starting with ``/``), or
    None when the raw path's leading segments do not decode to the context."""
    if context == "/":
        return raw_path if raw_path != b"/" else b""
    want = context.strip("/").split("/")
    parts = raw_path.split(b"/", len(want) + 1)  # "", the context's segments, the rest
    if len(parts) < len(want) + 1:
        return None
    for segment, expected in zip(parts[1 : len(want) + 1], want, strict=True):
        if segment != expected.encode() and unquote(segment.decode("latin-1")) != expected:
            return None
    return b"/" + parts[len(want) + 1] if len(parts) > len(want) + 1 else b""


def raw_path_of(scope: MutableMapping[str, Any]) -> bytes:
    raw = scope.get("raw_path")
    if isinstance(raw, bytes) and raw:
        return raw.split(b"?", 1)[0]
    return quote(scope["path"]).encode("ascii")
