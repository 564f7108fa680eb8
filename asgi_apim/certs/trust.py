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

from asgi_apim._keys import PEER

_IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class TrustedProxies:
    """Built once from CIDRs; ``host in trusted`` is the per-request check."""

    def __init__(self, cidrs: Iterable[str]) -> None:
        self.networks = tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)
        self.always_trust = any(n.prefixlen == 0 for n in self.networks)
        self._seen: dict[str, bool] = {}  # read directly on hot paths (CertificateResolver): cleared, never rebound

    def __contains__(self, host: object) -> bool:
        if not isinstance(host, str):
            return False
        known = self._seen.get(host)
        if known is None:
            known = self._check(host)
            if len(self._seen) > 1024:
                self._seen.clear()
            self._seen[host] = known
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


def peer_host(scope: dict) -> str | None:
    """The real socket peer's host: our server's record first, then ``scope["client"]``."""
    peer = scope.get(PEER) or scope.get("client")
    return peer[0] if peer else None


def client_ip(scope: dict, trusted: TrustedProxies) -> str | None:
    """The caller's IP for counting: the last X-Forwarded-For hop not in ``trusted``,
    read only when the socket peer itself is trusted."""
    host = peer_host(scope)
    if host is None or host not in trusted:
        return host
    for name, value in scope.get("headers", ()):
        if name == b"x-forwarded-for":
            hops = [h.strip() for h in value.decode("latin-1").split(",")]
            for hop in reversed(hops):
                if hop and hop not in trusted:
                    return hop
            return hops[0] if hops and hops[0] else host
    return host
