from __future__ import annotations

import logging

import pytest

from asgi_apim._keys import PEER
from asgi_apim.certs.trust import TrustedProxies
from asgi_apim.identity import ANONYMOUS, Principal
from asgi_apim.throttling import Caller, CallerKeys
from tests.asgi import make_scope

TIERS = {"Gold", "Bronze", "Unauthenticated"}


def keys() -> CallerKeys:
    return CallerKeys(TrustedProxies(["127.0.0.1/32", "::1/128"]), tiers=TIERS, default_tier="Unauthenticated")


@pytest.mark.parametrize(
    ("principal", "expected"),
    [
        (
            Principal(method="mutual_ssl", subject="CN=a", tier="Gold", throttle_key="cert:" + "ab" * 32),
            Caller("cert:" + "ab" * 32, "Gold"),
        ),
        (
            Principal(method="oauth2", subject="alice", tier="Bronze", throttle_key="azp:idp:client-1"),
            Caller("azp:idp:client-1", "Bronze"),
        ),
        (
            Principal(method="api_key", subject="key-1", tier="Gold", throttle_key="apikey:jti-1"),
            Caller("apikey:jti-1", "Gold"),
        ),
        (Principal(method="basic", subject="bob", tier="Bronze"), Caller("basic:bob", "Bronze")),
    ],
)
def test_principal_counted_by_its_throttle_key_and_tier(principal: Principal, expected: Caller) -> None:
    assert keys()(make_scope(user=principal)) == expected


def test_unknown_caller_tier_counts_under_the_default_tier(caplog: pytest.LogCaptureFixture) -> None:
    caller_keys = keys()
    with caplog.at_level(logging.WARNING, "asgi_apim.throttling"):
        for _ in range(3):
            caller = caller_keys(
                make_scope(user=Principal(method="oauth2", subject="x", tier="Diamond", throttle_key="k"))
            )
        caller_keys(make_scope(user=Principal(method="oauth2", subject="y", tier=None, throttle_key="k2")))
    assert caller == Caller("k", "Unauthenticated")
    assert sum("Diamond" in r.getMessage() for r in caplog.records) == 1


def test_anonymous_counted_per_client_ip() -> None:
    scope = make_scope(user=ANONYMOUS, client=("203.0.113.7", 4000))
    assert keys()(scope) == Caller("ip:203.0.113.7", "Unauthenticated")
    assert keys()(make_scope(client=("203.0.113.8", 4000))) == Caller("ip:203.0.113.8", "Unauthenticated")


def test_forwarded_for_ignored_from_an_untrusted_peer() -> None:
    scope = make_scope(headers=[("X-Forwarded-For", "198.51.100.1")], client=("203.0.113.7", 4000))
    assert keys()(scope).key == "ip:203.0.113.7"


def test_forwarded_for_believed_from_a_trusted_proxy() -> None:
    scope = make_scope(headers=[("X-Forwarded-For", "198.51.100.1, 127.0.0.1")], client=("127.0.0.1", 4000))
    assert keys()(scope).key == "ip:198.51.100.1"


def test_the_real_socket_peer_decides_trust_not_the_rewritten_client() -> None:
    # uvicorn's proxy-headers middleware may have rewritten scope["client"]; our protocols record the peer.
    scope = make_scope(
        headers=[("X-Forwarded-For", "198.51.100.1")], client=("127.0.0.1", 4000), **{PEER: ("203.0.113.9", 5)}
    )
    assert keys()(scope).key == "ip:203.0.113.9"


def test_no_client_at_all_is_one_shared_bucket() -> None:
    assert keys()(make_scope(client=None)).key == "ip:unknown"
