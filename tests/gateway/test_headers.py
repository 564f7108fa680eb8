"""Header hygiene, X-Forwarded-*, and the raw path below a context."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from hypothesis import given
from hypothesis import strategies as st

from asgi_apim._keys import PEER
from asgi_apim.gateway.headers import (
    connection_named,
    forwarded,
    raw_path_of,
    remainder,
    response_headers,
)
from asgi_apim.gateway.proxy import GatewayProxy
from tests.gateway.test_proxy import api, config


def test_connection_named_and_response_hygiene() -> None:
    headers = [(b"Connection", b"close, X-A"), (b"connection", b"x-b"), (b"X-A", b"1"), (b"x-b", b"2"), (b"x-c", b"3")]
    assert connection_named(headers) == {b"close", b"x-a", b"x-b"}
    kept = response_headers([*headers, (b"transfer-encoding", b"chunked"), (b"date", b"d"), (b"server", b"s")])
    assert kept == [(b"x-c", b"3")]


def test_x_forwarded_is_believed_from_the_peers_the_certificate_header_is(tmp_path: Path) -> None:
    """The gateway asks the certificate header's trust (`TrustedProxies`): addresses compared as
    objects, an IPv4-mapped IPv6 peer as its IPv4 address, a zone id ignored."""
    trust = '[mutual_ssl]\ntrusted_proxies = ["127.0.0.2/32", "fe80::/64", "::1/128"]\n'
    proxy = GatewayProxy(config(tmp_path, trust + api("pets", '"http://127.0.0.1:9"')))
    believed = {}
    for peer in ("127.0.0.2", "::ffff:127.0.0.2", "0:0:0:0:0:0:0:1", "fe80::1%eth0", "127.0.0.1", "unix", "x"):
        scope = {"type": "http", "scheme": "http", "headers": [(b"x-forwarded-for", b"1.2.3.4")], PEER: (peer, 1)}
        headers, _, _, _ = proxy.request_headers(scope, proxy.targets[0])
        chain = dict(headers)[b"x-forwarded-for"]
        believed[peer] = chain == b"1.2.3.4, " + peer.encode()
        assert believed[peer] or chain == peer.encode()
    assert believed == {
        "127.0.0.2": True,
        "::ffff:127.0.0.2": True,
        "0:0:0:0:0:0:0:1": True,
        "fe80::1%eth0": True,
        "127.0.0.1": False,
        "unix": False,
        "x": False,
    }


def test_forwarded_from_a_trusted_proxy_appends_and_keeps_its_values() -> None:
    client = [(b"x-forwarded-for", b"1.2.3.4"), (b"X-Forwarded-Proto", b"https"), (b"x-forwarded-host", b"api.example")]
    out = dict(forwarded(client, peer="127.0.0.2", trusted=True, scheme="http", host=b"gw:8000"))
    assert out == {
        b"x-forwarded-for": b"1.2.3.4, 127.0.0.2",
        b"x-forwarded-proto": b"https",
        b"x-forwarded-host": b"api.example",
    }
    out = dict(forwarded(client, peer="9.9.9.9", trusted=False, scheme="wss", host=b"gw:8000"))
    assert out == {b"x-forwarded-for": b"9.9.9.9", b"x-forwarded-proto": b"https", b"x-forwarded-host": b"gw:8000"}


def test_remainder_keeps_the_raw_encoding() -> None:
    assert remainder(b"/pets/a%2Fb/%7E", "/pets") == b"/a%2Fb/%7E"
    assert remainder(b"/pets", "/pets") == b""
    assert remainder(b"/pets/", "/pets") == b"/"
    assert remainder(b"/p%65ts/x", "/pets") == b"/x"
    assert remainder(b"/pets%2Fx/y", "/pets") is None
    assert remainder(b"/a/b/c", "/a/b") == b"/c"
    assert remainder(b"/anything", "/") == b"/anything"
    assert raw_path_of({"raw_path": b"/x%20y?q", "path": "/x y"}) == b"/x%20y"
    assert raw_path_of({"path": "/x y"}) == b"/x%20y"


segment = st.text(
    alphabet=st.characters(blacklist_characters="/", blacklist_categories=("Cs",)), min_size=1, max_size=8
)


@given(st.lists(segment, min_size=1, max_size=3), st.lists(segment, max_size=4))
def test_remainder_is_what_follows_the_context_as_written(context: list[str], rest: list[str]) -> None:
    ctx = "/" + "/".join(context)
    raw_rest = "".join("/" + quote(s, safe="") for s in rest)
    raw = "/" + "/".join(quote(s, safe="") for s in context) + raw_rest
    assert remainder(raw.encode(), ctx) == raw_rest.encode()
