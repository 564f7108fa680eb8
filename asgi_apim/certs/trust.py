"""Who may tell us the client's certificate: the trust gate for proxy headers.

A TLS-terminating proxy (nginx, Envoy, an AWS ALB) forwards the client's
certificate in a header. Anybody can send that header, so it is believed only
when the *immediate socket peer* is one of ``trusted_proxies``. The peer is the
address of the TCP connection: our uvicorn protocols record it under
``scope["asgi_apim.peer"]`` before uvicorn's proxy-headers middleware rewrites
``scope["client"]`` from X-Forwarded-For, so X-Forwarded-For never changes who
the peer is. Under another server ``scope["client"]`` is used, and that server
must not be told to rewrite it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from starlette.types import Scope

from asgi_apim._keys import PEER

_IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class TrustedProxies:
    """Built once from CIDRs; ``host in trusted`` is the per-request check.

    ``known`` is its memo (host -> verdict), public and read-only for callers on a hot
    path: ``known.get(host)`` answers without a call for a host seen before (None: ask
    ``host in trusted``). It is cleared, never rebound, so a reference to it stays good.
    """

    def __init__(self, cidrs: Iterable[str]) -> None:
        self.networks = tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)
        self.always_trust = any(n.prefixlen == 0 for n in self.networks)
        self.known: dict[str, bool] = {}

    def __contains__(self, host: object) -> bool:
        if not isinstance(host, str):
            return False
        known = self.known.get(host)
        if known is None:
            known = self._check(host)
            if len(self.known) > 1024:
                self.known.clear()
            self.known[host] = known
        return known

    def _check(self, host: str) -> bool:
        try:
            # Many ways to write an IPv6 address (and IPv4-mapped ones): compare as objects.
            addr: _IPAddress = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        return self.always_trust or any(addr in n for n in self.networks)


def peer_host(scope: Scope) -> str | None:
    """The real socket peer's host: our server's record first, then ``scope["client"]``."""
    peer = scope.get(PEER) or scope.get("client")
    return peer[0] if peer else None


def client_ip(scope: Scope, trusted: TrustedProxies) -> str | None:
    """The caller's IP for counting, read from X-Forwarded-For only when the socket peer is trusted.

    Every X-Forwarded-For line is read, in order, as one list (a proxy may add a line of
    its own rather than append to the client's: reading the first line alone would let the
    client name its own address). Walking back from the peer over the trusted hops, the
    first untrusted hop is the caller. A hop is an address, written as its canonical text
    (``1.2.3.4:80``, ``[2001:db8::1]:80`` and ``::ffff:1.2.3.4`` count as ``1.2.3.4`` and
    ``2001:db8::1``); a hop that is no address ends the walk at the trusted hop (or peer)
    that reported it, so text of the client's choosing never names a bucket."""
    host = peer_host(scope)
    if host is None or host not in trusted:
        return host
    lines = [value for name, value in scope.get("headers", ()) if name == b"x-forwarded-for"]
    if not lines:
        return host
    reporter = host
    for hop in reversed(b",".join(lines).decode("latin-1").split(",")):
        if not hop.strip():
            continue
        address = forwarded_address(hop)
        if address is None:
            return reporter
        if address not in trusted:
            return address
        reporter = address
    return reporter  # every hop is a trusted proxy: the first of them


_ADDRESSES: dict[str, str | None] = {}  # hop text -> its address's canonical text; bounded


def forwarded_address(hop: str) -> str | None:
    """A forwarded hop's address as canonical text, or None when the hop is not an address.
    Remembered (bounded), so a hop seen before costs one lookup."""
    known = _ADDRESSES.get(hop, _ADDRESSES)
    if known is not _ADDRESSES:
        return known  # type: ignore[return-value]  # a memo value (str or None), the sentinel excluded above
    text = hop.strip()
    if text.startswith("["):  # [v6] or [v6]:port
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        addr: _IPAddress = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        address = None
    else:
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        address = str(addr)
    if len(_ADDRESSES) >= 4096:
        _ADDRESSES.clear()
    _ADDRESSES[hop] = address
    return address
