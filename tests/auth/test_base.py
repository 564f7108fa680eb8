from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import bcrypt
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from hypothesis import given
from hypothesis import strategies as st

from asgi_apim.auth.apikey import ApiKeyAuthenticator
from asgi_apim.auth.application import build_authenticators
from asgi_apim.auth.base import (
    ALIAS_TAIL,
    Authenticator,
    ExpiringCache,
    authorization,
    schemes_in_use,
    without_params,
)
from asgi_apim.auth.basic import BasicAuthenticator
from asgi_apim.auth.jwt import OAuth2Authenticator
from asgi_apim.config import Config, parse_config
from asgi_apim.errors import ConfigError
from tests.auth.idp import rsa_key


def files(tmp_path: Path) -> None:
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [rsa_key().jwk()]}))
    key = ed25519.Ed25519PrivateKey.generate()
    (tmp_path / "sign.pem").write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    (tmp_path / "users").write_text("ann:" + bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode() + "\n")


def config(tmp_path: Path, schemes: list[str], *, resource: list[str] | None = None, **sections: Any) -> Config:
    api: dict[str, Any] = {"name": "pets", "context": "/pets", "security": {"application": schemes}}
    if resource is not None:
        api["resources"] = [{"path": "/pets/{id}", "security": {"application": resource}}]
    raw: dict[str, Any] = {"apis": [api], **sections}
    return parse_config(raw, base=tmp_path)


FULL = {
    "key_managers": [{"name": "idp", "issuer": "https://idp", "jwks_file": "jwks.json"}],
    "api_keys": {"signing_key": "sign.pem"},
    "basic_auth": {"users_file": "users", "tier": "Bronze"},
}


async def test_builds_one_authenticator_per_listed_scheme(tmp_path: Path) -> None:
    files(tmp_path)
    cfg = config(tmp_path, ["basic", "oauth2"], resource=["api_key"], **FULL)
    assert schemes_in_use(cfg) == ["basic", "oauth2", "api_key"]
    built = build_authenticators(cfg)
    assert list(built) == ["basic", "oauth2", "api_key"]
    assert isinstance(built["oauth2"], OAuth2Authenticator)
    assert isinstance(built["api_key"], ApiKeyAuthenticator)
    assert isinstance(built["basic"], BasicAuthenticator) and built["basic"].tier == "Bronze"
    for scheme, auth in built.items():
        assert isinstance(auth, Authenticator) and auth.scheme == scheme
        await auth.start()
        await auth.aclose()
    assert {a.challenge.split()[0] for a in built.values()} == {"Bearer", "APIKey", "Basic"}


def test_unlisted_schemes_are_not_built(tmp_path: Path) -> None:
    files(tmp_path)
    assert list(build_authenticators(config(tmp_path, ["basic"], **FULL))) == ["basic"]


@pytest.mark.parametrize(
    ("scheme", "key"),
    [("oauth2", "key_managers"), ("api_key", "api_keys.signing_key"), ("basic", "basic_auth.users_file")],
)
def test_listed_scheme_without_configuration(tmp_path: Path, scheme: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_authenticators(config(tmp_path, [scheme]))
    assert info.value.key == key


def test_expiring_cache() -> None:
    cache: ExpiringCache[str, int] = ExpiringCache(16)
    cache.put("a", 1, expires=110, now=100)
    assert cache.get("a", 105) == 1
    assert cache.get("a", 110) is None and len(cache) == 0
    cache.put("old", 0, expires=99, now=100)
    assert len(cache) == 0
    for i in range(100):
        cache.put(str(i), i, expires=1000, now=100)
    assert len(cache) <= 16 and cache.get("99", 100) == 99
    off: ExpiringCache[str, int] = ExpiringCache(0)
    off.put("a", 1, expires=1000, now=0)
    assert off.get("a", 1) is None
    off.alias("b", "a")
    assert off.get("b", 1) is None


def test_expiring_cache_alias_shares_expiry_and_clearing() -> None:
    cache: ExpiringCache[object, int] = ExpiringCache(4)
    cache.alias(b"raw", "missing")
    assert cache.aliased(b"raw", 100) is None and len(cache) == 0
    cache.put("tok", 7, expires=110, now=100)
    cache.alias(b"Bearer tok", "tok")
    assert cache.aliased(b"Bearer tok", 105) == 7
    assert cache.get(b"Bearer tok", 105) is None  # an alias is not a key of its own
    assert cache.aliased(b"Bearer tok", 110) is None  # expires with the credential it stands for
    cache.put("tok", 7, expires=200, now=100)
    cache.alias(b"Bearer tok", "tok")
    cache.clear()
    assert cache.aliased(b"Bearer tok", 150) is None
    for i in range(10):
        cache.put(str(i), i, expires=1000, now=100)
        cache.alias(str(i).encode(), str(i))
    assert len(cache) <= 4 and len(cache._aliases) <= 4


def test_expiring_cache_alias_is_filed_by_its_tail_and_compared_whole() -> None:
    cache: ExpiringCache[str, int] = ExpiringCache(8)
    tail = b"x" * ALIAS_TAIL
    cache.put("a", 1, expires=1000, now=0)
    cache.put("b", 2, expires=1000, now=0)
    cache.alias(b"Bearer a." + tail, "a")
    assert cache.aliased(b"Bearer a." + tail, 1) == 1
    assert cache.aliased(b"Bearer b." + tail, 1) is None  # the same last bytes, another value: not found
    cache.alias(b"Bearer b." + tail, "b")  # displaces the first
    assert cache.aliased(b"Bearer b." + tail, 1) == 2 and cache.aliased(b"Bearer a." + tail, 1) is None
    cache.alias(b"short", "a")  # shorter than the tail: filed whole
    assert cache.aliased(b"short", 1) == 1 and cache.aliased(b"hort", 1) is None


def test_expiring_cache_eviction_drops_aliases() -> None:
    cache: ExpiringCache[str, int] = ExpiringCache(2)
    cache.put("a", 1, expires=1000, now=0)
    cache.alias(b"Bearer a", "a")
    cache.put("b", 2, expires=1000, now=0)
    cache.put("c", 3, expires=1000, now=0)  # full: evicts, and forgets every alias with it
    assert cache.aliased(b"Bearer a", 1) is None


@pytest.mark.parametrize(
    ("value", "scheme", "expected"),
    [
        (b"Bearer abc", "bearer", "abc"),
        (b"BEARER  abc ", "bearer", "abc"),
        (b"Bearer", "bearer", ""),
        (b"Basic abc", "bearer", None),
        (None, "bearer", None),
        (b"Basic YTpi", "basic", "YTpi"),
    ],
)
def test_authorization_header(value: bytes | None, scheme: str, expected: str | None) -> None:
    headers = [(b"accept", b"*/*")] + ([] if value is None else [(b"authorization", value)])
    assert authorization({"headers": headers}, scheme) == expected


def test_without_params_compares_names_decoded_and_keeps_the_rest() -> None:
    assert without_params(b"apikey=s&x=%20&api%6Bey=t&y", {"apikey"}) == b"x=%20&y"
    assert without_params(b"a+b=1&a%20b=2&c=3", ("a b",)) == b"c=3"
    assert without_params(b"x=1", set()) == b"x=1"
    assert without_params(b"", {"apikey"}) == b""


_PART = st.binary(max_size=12).filter(lambda b: b"&" not in b)


@given(parts=st.lists(_PART, max_size=8), names=st.sets(st.text(max_size=4), max_size=3))
def test_without_params_keeps_every_other_part_byte_for_byte(parts: list[bytes], names: set[str]) -> None:
    kept = without_params(b"&".join(parts), names)
    expected = [p for p in parts if unquote_plus(p.partition(b"=")[0].decode("latin-1")) not in names]
    assert kept == (b"&".join(expected) if parts and names else b"&".join(parts))
