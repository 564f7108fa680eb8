"""``[apis.cors]``, ``transports``, ``interceptors`` and the credential places of ``[apis.security]``:
read, or refused with one error naming the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asgi_apim.config import parse_config
from asgi_apim.edge_config import WSO2_CORS_HEADERS, WSO2_CORS_METHODS, CorsConfig
from asgi_apim.errors import ConfigError


def api(**keys: Any) -> Any:
    raw = {"encryption": {"key": "ab" * 32}, "apis": [{"name": "a", "context": "/a", **keys}]}
    return parse_config(raw, base=Path(".")).apis[0]


def test_defaults() -> None:
    a = api()
    assert a.cors is None and a.transports == ("http", "https") and a.interceptors == () and a.version is None
    assert a.security.api_key_header is None and a.security.auth_header is None and not a.security.located


def test_cors_defaults_are_wso2s() -> None:
    assert api(cors={"allow_origins": ["https://a.example/"]}).cors == CorsConfig(
        allow_origins=("https://a.example",), allow_methods=WSO2_CORS_METHODS, allow_headers=WSO2_CORS_HEADERS
    )


def test_every_key_read() -> None:
    a = api(
        cors={
            "allow_origins": ["*"],
            "allow_methods": ["get", "POST"],
            "allow_headers": ["x-a"],
            "allow_credentials": True,
            "expose_headers": ["x-b"],
            "max_age": 60,
        },
        transports=["https"],
        interceptors=["pkg.mod:fn", "pkg:obj.method"],
        response_interceptors=["pkg.mod:after"],
        security={
            "application": ["api_key", "oauth2"],
            "api_key_header": "X-Key",
            "api_key_query": "",
            "auth_header": "X-Auth",
        },
        resources=[{"path": "/x", "interceptors": [], "response_interceptors": ["m:f"]}],
    )
    assert a.cors == CorsConfig(("*",), ("GET", "POST"), ("x-a",), True, ("x-b",), 60)
    assert a.transports == ("https",) and a.interceptors == ("pkg.mod:fn", "pkg:obj.method")
    assert a.response_interceptors == ("pkg.mod:after",)
    assert (a.security.api_key_header, a.security.api_key_query, a.security.auth_header) == ("x-key", "", "x-auth")
    assert a.resources[0].interceptors == () and a.resources[0].response_interceptors == ("m:f",)


@pytest.mark.parametrize(
    ("keys", "key", "message"),
    [
        ({"cors": {}}, "apis[0].cors.allow_origins", "at least one origin"),
        ({"cors": {"allow_origins": ["a.example"]}}, "apis[0].cors.allow_origins[0]", "is not an origin"),
        (
            {"cors": {"allow_origins": ["*"], "allow_methods": ["BREW"]}},
            "apis[0].cors.allow_methods",
            "not an HTTP method",
        ),
        ({"cors": {"allow_origins": ["*"], "allow_headers": ["a b"]}}, "apis[0].cors.allow_headers", "not a header"),
        ({"cors": {"allow_origins": ["*"], "max_age": -1}}, "apis[0].cors.max_age", ">= 0"),
        ({"cors": {"allow_origins": ["*"], "origins": []}}, "apis[0].cors.origins", "unknown key"),
        ({"transports": []}, "apis[0].transports", "lists no transport"),
        ({"transports": ["ftp"]}, "apis[0].transports", "'ftp' is not one of"),
        ({"interceptors": ["nocolon"]}, "apis[0].interceptors[0]", "is not module:function"),
        ({"response_interceptors": ["a:b:c"]}, "apis[0].response_interceptors[0]", "is not module:function"),
        ({"security": {"api_key_header": "a b"}}, "apis[0].security.api_key_header", "not a valid HTTP header"),
        ({"security": {"auth_header": ""}}, "apis[0].security.auth_header", "is empty"),
        ({"security": {"api_key_header": "", "api_key_query": ""}}, "apis[0].security.api_key_query", "no API key"),
    ],
)
def test_bad_values_name_the_key(keys: dict[str, Any], key: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        api(**keys)
    assert str(caught.value).startswith(key + ":"), str(caught.value)


_ANY = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 100_000),
    st.text(max_size=20),
    st.lists(st.one_of(st.text(max_size=20), st.sampled_from(["*", "https://a.example", "GET", "x-h"])), max_size=3),
)
_CORS_KEYS = ["allow_origins", "allow_methods", "allow_headers", "allow_credentials", "expose_headers", "max_age"]


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(_CORS_KEYS), _ANY, max_size=6), st.one_of(st.none(), _ANY))
def test_any_cors_table_or_transports_is_read_or_refused_naming_the_key(cors: dict[str, Any], transports: Any) -> None:
    keys: dict[str, Any] = {"cors": {k: v for k, v in cors.items() if v is not None}}
    if transports is not None:
        keys["transports"] = transports
    try:
        got = api(**keys)
    except ConfigError as exc:
        assert str(exc).startswith(("apis[0].cors", "apis[0].transports")), str(exc)
        return
    assert got.cors is not None and got.cors.allow_origins and set(got.transports) <= {"http", "https"}
