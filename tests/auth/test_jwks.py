from __future__ import annotations

import asyncio
import json
import logging
import socket
from pathlib import Path
from typing import Any

import pytest
from jwt.algorithms import HMACAlgorithm

from asgi_apim.auth.jwks import REFRESHES, JWKSError, JWKSource, parse_jwks
from asgi_apim.auth.jwt import JWTIssuer, OAuth2Authenticator
from asgi_apim.config import KeyManagerConfig
from asgi_apim.errors import ConfigError, InvalidCredentials
from tests.auth.idp import API, ISSUER, IdP, claims, ec_key, ed_key, rsa_key

K1, K2, K3 = rsa_key("k1"), rsa_key("k2", second=True), ec_key("k3")


def test_keys_serve_only_compatible_algorithms() -> None:
    ec, ed = ec_key("e"), ed_key("o")
    pinned = dict(K2.jwk(), alg="PS256")
    doc = {"keys": [K1.jwk(), pinned, ec.jwk(), ed.jwk()]}
    keys, _ = parse_jwks(doc, ["RS256", "PS256", "ES256", "ES384", "EdDSA", "HS256"])
    assert set(keys["k1"]) == {"RS256", "PS256"}
    assert set(keys["k2"]) == {"PS256"}
    assert set(keys["e"]) == {"ES256"}
    assert set(keys["o"]) == {"EdDSA"}
    assert not any("HS256" in algs for algs in keys.values())


def test_unusable_jwks_entries_are_skipped() -> None:
    oct_key = {"kty": "oct", "kid": "h", "k": "c2VjcmV0"}
    enc = dict(K1.jwk(), kid="enc", use="enc")
    bad = {"kty": "RSA", "kid": "bad", "n": "!!", "e": "AQAB"}
    odd_kid = dict(K1.jwk(), kid=7)
    keys, _ = parse_jwks({"keys": [oct_key, enc, bad, odd_kid, "junk", K1.jwk()]}, ["RS256", "HS256"])
    assert list(keys) == ["k1"]
    with pytest.raises(JWKSError):
        parse_jwks({"no": "keys"}, ["RS256"])


def test_rsa_key_is_never_an_hmac_secret() -> None:
    keys, _ = parse_jwks({"keys": [K1.jwk()]}, ["RS256", "HS256"])
    src_key = keys["k1"]["RS256"]
    with pytest.raises(Exception):
        HMACAlgorithm(HMACAlgorithm.SHA256).prepare_key(src_key)


def test_bad_jwks_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match=r"key_managers\[idp\]\.jwks_file"):
        JWKSource(["RS256"], file=path, name="idp")


def serve(idp: IdP, *keys: Any) -> None:
    idp.jwks = {"keys": [k.jwk() for k in keys]}


def oauth(idp: IdP, *, refetch: float = 0.3, refresh: float = 300.0) -> OAuth2Authenticator:
    km = KeyManagerConfig(
        name="idp",
        issuer=ISSUER,
        audience=("pets",),
        jwks_url=f"{idp.url}/jwks.json",
        algorithms=("RS256", "ES256"),
        jwks_min_refetch_interval=refetch,
        jwks_refresh_interval=refresh,
    )
    return OAuth2Authenticator([JWTIssuer.from_config(km)])


async def test_rotation_against_a_real_jwks_server(idp: IdP) -> None:
    serve(idp, K1)
    auth = oauth(idp, refetch=0.3)
    await auth.start()
    try:
        assert idp.count("/jwks.json") == 1
        old = K1.sign(claims(sub="old"))
        assert (await auth.authenticate(old, API, {})).subject == "old"

        # a new kid appears: one refetch on the unknown kid picks it up
        serve(idp, K1, K2)
        await asyncio.sleep(0.35)  # past the refetch rate limit that start()'s fetch began
        new = K2.sign(claims(sub="new"))
        assert (await auth.authenticate(new, API, {})).subject == "new"
        assert idp.count("/jwks.json") == 2

        # another unknown kid right away: no refetch inside the rate limit
        with pytest.raises(InvalidCredentials, match="no signing key"):
            await auth.authenticate(K3.sign(claims()), API, {})
        assert idp.count("/jwks.json") == 2

        # the old kid is removed: its (cached) token stops passing once the keys move on
        serve(idp, K2, K3)
        await asyncio.sleep(0.35)
        assert (await auth.authenticate(K3.sign(claims(sub="ec")), API, {})).subject == "ec"
        assert idp.count("/jwks.json") == 3
        with pytest.raises(InvalidCredentials, match="no signing key"):
            await auth.authenticate(old, API, {})
        assert (await auth.authenticate(new, API, {})).subject == "new"
    finally:
        await auth.aclose()


async def test_issuer_down_keeps_last_good_keys(idp: IdP) -> None:
    serve(idp, K1)
    auth = oauth(idp, refetch=0.0)
    source = auth.issuers[ISSUER].keys
    assert source is not None
    before = list(REFRESHES.get("idp", [0, 0]))
    await auth.start()
    try:
        idp.jwks_status = 503
        assert await source.refresh() is False
        idp.jwks_status, idp.jwks = 200, {"garbage": True}
        assert await source.refresh() is False
        assert (await auth.authenticate(K1.sign(claims()), API, {})).subject == "alice"
        assert source.generation == 0
        # counted for metrics: the start's fetch installed keys, the two refreshes failed
        assert [n - b for n, b in zip(REFRESHES["idp"], before, strict=True)] == [1, 2]
    finally:
        await auth.aclose()


async def test_unreachable_issuer_fails_closed_then_recovers(idp: IdP) -> None:
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    km = KeyManagerConfig(
        name="idp", issuer=ISSUER, jwks_url=f"http://127.0.0.1:{closed}/jwks.json", jwks_min_refetch_interval=0
    )
    auth = OAuth2Authenticator([JWTIssuer.from_config(km)])
    try:
        await auth.start()  # logs, does not raise
        with pytest.raises(InvalidCredentials, match="no signing key"):
            await auth.authenticate(K1.sign(claims(aud=None)), API, {})
    finally:
        await auth.aclose()
    serve(idp, K1)
    lazy = oauth(idp, refetch=0.0)
    try:  # never started: the first unknown kid fetches the keys
        assert (await lazy.authenticate(K1.sign(claims()), API, {})).subject == "alice"
    finally:
        await lazy.aclose()


async def test_background_refresh(idp: IdP) -> None:
    serve(idp, K1)
    auth = oauth(idp, refetch=1000.0, refresh=0.2)
    source = auth.issuers[ISSUER].keys
    assert source is not None
    await auth.start()
    try:
        serve(idp, K2)
        for _ in range(50):
            await asyncio.sleep(0.05)
            if source.get("k2", "RS256"):
                break
        assert source.get("k2", "RS256") and not source.get("k1", "RS256")
        assert source.generation == 1
    finally:
        await auth.aclose()
    assert source._task is None


async def test_concurrent_unknown_kids_fetch_once(idp: IdP) -> None:
    serve(idp, K1)
    auth = oauth(idp, refetch=5.0)
    try:
        results = await asyncio.gather(*(auth.authenticate(K1.sign(claims(sub=f"u{i}")), API, {}) for i in range(10)))
        assert {p.subject for p in results} == {f"u{i}" for i in range(10)}
        assert idp.count("/jwks.json") == 1
    finally:
        await auth.aclose()


def test_file_source_reads_once(tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [K1.jwk()]}))
    source = JWKSource(["RS256"], file=path)
    path.unlink()
    assert source.get("k1", "RS256") and source.get(None, "RS256") and not source.get("k1", "ES256")


async def test_the_jwks_url_s_credentials_never_reach_the_log(idp: IdP, caplog: pytest.LogCaptureFixture) -> None:
    idp.jwks_status = 503  # answered: httpx's error quotes the URL it fetched
    base = idp.url.replace("http://", "http://svc:jwkssecret@")
    km = KeyManagerConfig(name="idp", issuer=ISSUER, jwks_url=f"{base}/jwks.json?access_token=qtoken")
    auth = OAuth2Authenticator([JWTIssuer.from_config(km)])
    try:
        with caplog.at_level(logging.WARNING):
            await auth.start()
    finally:
        await auth.aclose()
    assert "JWKS fetch" in caplog.text
    assert "jwkssecret" not in caplog.text and "qtoken" not in caplog.text


async def test_a_fetch_failing_outside_httpx_keeps_the_refresher_alive(caplog: pytest.LogCaptureFixture) -> None:
    source = JWKSource(
        ("RS256",), url="http://127.0.0.1:99999/jwks.json", name="idp"
    )  # httpx raises OverflowError for the port
    try:
        with caplog.at_level(logging.WARNING):
            await source.start()  # logs, does not raise: the background job lives on
        assert source._task is not None and not source._task.done()
        assert "JWKS fetch for key manager 'idp'" in caplog.text
    finally:
        await source.aclose()
