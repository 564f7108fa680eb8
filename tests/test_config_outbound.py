"""The [[key_managers]] keys that bound outbound calls: fetch_timeout, jwks_wait,
introspection_negative_ttl, introspection_max_concurrency."""

from pathlib import Path

import pytest

from asgi_apim.auth.introspection import Introspector
from asgi_apim.auth.jwt import JWTIssuer
from asgi_apim.config import KeyManagerConfig, load_config
from asgi_apim.errors import ConfigError

KM = "[[key_managers]]\nname='k'\nissuer='i'\njwks_url='http://127.0.0.1:1/jwks'\nintrospection_url='http://127.0.0.1:1/i'\n"


def load(tmp_path: Path, text: str) -> KeyManagerConfig:
    path = tmp_path / "deployment.toml"
    path.write_text(KM + text)
    return load_config(path).key_managers[0]


def test_defaults(tmp_path: Path) -> None:
    km = load(tmp_path, "")
    assert (km.fetch_timeout, km.jwks_wait) == (5.0, 5.0)
    assert (km.introspection_negative_ttl, km.introspection_max_concurrency) == (5.0, 32)


async def test_the_keys_reach_the_key_source_and_the_introspector(tmp_path: Path) -> None:
    km = load(
        tmp_path,
        "fetch_timeout = 2.5\njwks_wait = 0\nintrospection_negative_ttl = 1\nintrospection_max_concurrency = 4\n",
    )
    keys = JWTIssuer.from_config(km).keys
    assert keys is not None
    introspector = Introspector(km)
    try:
        assert (keys.timeout, keys.wait) == (2.5, 0.0)
        assert (introspector.timeout, introspector.negative_ttl, introspector.max_concurrency) == (2.5, 1.0, 4)
    finally:
        await keys.aclose()
        await introspector.aclose()


@pytest.mark.parametrize(
    "text, message",
    [
        ("fetch_timeout = 0", "fetch_timeout: must be a number >= 0.1"),
        ("fetch_timeout = 1000", "fetch_timeout: must be a number <= 300"),
        ("fetch_timeout = 'soon'", "fetch_timeout: must be a number"),
        ("jwks_wait = -1", "jwks_wait: must be a number >= 0"),
        ("jwks_wait = nan", "jwks_wait: must be a finite number"),
        ("introspection_negative_ttl = -0.5", "introspection_negative_ttl: must be a number >= 0"),
        ("introspection_max_concurrency = 0", "introspection_max_concurrency: must be a whole number >= 1"),
        ("introspection_max_concurrency = 2.5", "introspection_max_concurrency: must be a whole number"),
        ("introspection_max_concurrency = true", "introspection_max_concurrency: must be a whole number"),
        ("introspection_max_concurrency = 100000", "introspection_max_concurrency: must be a whole number <= 10000"),
    ],
)
def test_bad_values_are_one_error_naming_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    assert str(info.value).startswith(f"key_managers[0].{message}"), str(info.value)
