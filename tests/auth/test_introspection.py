from __future__ import annotations

import asyncio
import logging
import socket
import time
from typing import Any

import pytest

from asgi_apim.auth.introspection import Introspector
from asgi_apim.auth.jwt import OAuth2Authenticator
from asgi_apim.config import KeyManagerConfig
from asgi_apim.errors import InvalidCredentials
from tests.auth.idp import API, ISSUER, IdP

ACTIVE = "opaque-active-0123456789"
INACTIVE = "opaque-revoked-0123456789"


def answers(token: str) -> dict[str, Any]:
    if token == ACTIVE:
        return {
            "active": True,
            "scope": "pets:read pets:write",
            "client_id": "app-7",
            "sub": "carol",
            "iss": ISSUER,
            "exp": int(time.time()) + 300,
            "plan": "Gold",
        }
    return {"active": False}


def oauth(idp: IdP, *, secret: str = "s3cret", negative_ttl: float = 10.0, **km: Any) -> OAuth2Authenticator:
    cfg = KeyManagerConfig(
        name="opaque",
        issuer=ISSUER,
        introspection_url=f"{idp.url}/introspect",
        client_id="gateway",
        client_secret=secret,
        **km,
    )
    return OAuth2Authenticator([], [Introspector(cfg, tiers={"Unlimited", "Gold"}, negative_ttl=negative_ttl)])


async def test_active_token(idp: IdP) -> None:
    idp.introspect = answers
    auth = oauth(idp, tier_claim="plan", subscriber_claim=("client_id",))
    try:
        p = await auth.authenticate(ACTIVE, API, {})
        assert (p.method, p.subject, p.tier) == ("oauth2", "carol", "Gold")
        assert p.scopes == ("pets:read", "pets:write")
        assert p.throttle_key == "client_id:opaque:app-7"
        again = await auth.authenticate(ACTIVE, API, {})
        assert again is p
        assert idp.count("/introspect") == 1
    finally:
        await auth.aclose()


async def test_inactive_token_is_refused_and_cached_briefly(idp: IdP) -> None:
    idp.introspect = answers
    auth = oauth(idp, negative_ttl=0.2)
    try:
        for _ in range(3):
            with pytest.raises(InvalidCredentials, match="not active") as info:
                await auth.authenticate(INACTIVE, API, {})
        assert idp.count("/introspect") == 1
        assert 'error="invalid_token"' in info.value.headers["www-authenticate"]
        assert INACTIVE not in info.value.detail
        await asyncio.sleep(0.25)
        with pytest.raises(InvalidCredentials):
            await auth.authenticate(INACTIVE, API, {})
        assert idp.count("/introspect") == 2
    finally:
        await auth.aclose()


@pytest.mark.parametrize(
    "answer",
    [
        {"active": True, "sub": "x", "exp": 1},
        {"active": True, "sub": "x", "iss": "https://someone.else"},
        {"active": "true", "sub": "x"},
        {"active": True},
        {"active": True, "sub": "x", "aud": "cats"},
        {"active": True, "sub": "x", "plan": "Platinum"},
    ],
    ids=["expired", "foreign_iss", "active_not_boolean", "no_subject", "wrong_aud", "unknown_tier"],
)
async def test_active_but_unacceptable(idp: IdP, answer: dict[str, Any]) -> None:
    idp.introspect = lambda token: answer
    auth = oauth(idp, audience=("pets",), tier_claim="plan")
    try:
        with pytest.raises(InvalidCredentials, match="not active"):
            await auth.authenticate("some-opaque-token", API, {})
    finally:
        await auth.aclose()


async def test_endpoint_errors_fail_closed_and_are_not_cached(idp: IdP, caplog: pytest.LogCaptureFixture) -> None:
    idp.introspect = answers
    idp.introspect_status = 500
    auth = oauth(idp)
    try:
        with caplog.at_level(logging.WARNING, logger="asgi_apim.auth.introspection"):
            with pytest.raises(InvalidCredentials, match="introspection endpoint failed"):
                await auth.authenticate(ACTIVE, API, {})
        assert "HTTP 500" in caplog.text and ACTIVE not in caplog.text
        idp.introspect_status = 200
        assert (await auth.authenticate(ACTIVE, API, {})).subject == "carol"
    finally:
        await auth.aclose()


async def test_wrong_client_secret_fails_closed(idp: IdP) -> None:
    idp.introspect = answers
    auth = oauth(idp, secret="wrong")
    try:
        with pytest.raises(InvalidCredentials, match="introspection endpoint failed"):
            await auth.authenticate(ACTIVE, API, {})
    finally:
        await auth.aclose()


async def test_endpoint_down(idp: IdP) -> None:
    idp.introspect = answers
    auth = oauth(idp)
    url = idp.url
    try:
        assert (await auth.authenticate(ACTIVE, API, {})).subject == "carol"
        auth.introspectors[0].url = url.rsplit(":", 1)[0] + ":1/introspect"  # nothing listens on port 1
        with pytest.raises(InvalidCredentials, match="introspection endpoint failed"):
            await auth.authenticate("another-opaque-token", API, {})
        assert (await auth.authenticate(ACTIVE, API, {})).subject == "carol"  # still cached
    finally:
        await auth.aclose()


async def test_cache_expires_with_token(idp: IdP) -> None:
    exp = time.time() + 0.3
    idp.introspect = lambda token: {"active": True, "sub": "dave", "exp": exp}
    auth = oauth(idp, leeway=0)
    try:
        await auth.authenticate("short-lived", API, {})
        await auth.authenticate("short-lived", API, {})
        assert idp.count("/introspect") == 1
        await asyncio.sleep(0.35)
        with pytest.raises(InvalidCredentials):
            await auth.authenticate("short-lived", API, {})
        assert idp.count("/introspect") == 2
    finally:
        await auth.aclose()


async def test_the_endpoint_s_credentials_never_reach_the_log(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    cfg = KeyManagerConfig(
        name="opaque",
        issuer=ISSUER,
        introspection_url=f"http://gw:urlsecret@127.0.0.1:{closed}/introspect?password=qsecret",
    )
    auth = OAuth2Authenticator([], [Introspector(cfg, tiers={"Unlimited"})])
    try:
        with caplog.at_level(logging.WARNING), pytest.raises(InvalidCredentials):
            await auth.authenticate("an-opaque-token", API, {})
    finally:
        await auth.aclose()
    assert "introspection at http://***@127.0.0.1" in caplog.text
    assert "urlsecret" not in caplog.text and "qsecret" not in caplog.text
