"""Header hygiene, X-Forwarded-*, and the raw path below a context."""

from __future__ import annotations

from urllib.parse import quote

from hypothesis import given
from hypothesis import strategies as st

from asgi_apim.gateway.headers import (
    TrustedPeers,
    connection_named,
    forwarded,
    raw_path_of,
    remainder,
    response_headers,
)


def test_connection_named_and_response_hygiene() -> None:
    headers = [(b"Connection", b"close, X-A"), (b"connection", b"x-b"), (b"X-A", b"1"), (b"x-b", b"2"), (b"x-c", b"3")]
    assert connection_named(headers) == {b"close", b"x-a", b"x-b"}
    kept = response_headers([*headers, (b"transfer-encoding", b"chunked"), (b"date", b"d"), (b"server", b"s")])
    assert kept == [(b"x-c", b"3")]


def test_trusted_peers_compare_addresses_as_objects() -> None:
    trusted = TrustedPeers(["127.0.0.2/32", "::1/128"])
    assert "127.0.0.2" in trusted and "0:0:0:0:0:0:0:1" in trusted
    assert "127.0.0.1" not in trusted and "not-an-ip" not in trusted and None not in trusted


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
