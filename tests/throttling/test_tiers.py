from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from limits import RateLimitItemPerHour, RateLimitItemPerMinute, RateLimitItemPerSecond

from asgi_apim._redact import WITHHELD, redact
from asgi_apim.config import load_config
from asgi_apim.errors import ConfigError
from asgi_apim.throttling import ThrottlingMiddleware, parse_tier, parse_tiers
from asgi_apim.throttling.engine import open_storage
from asgi_apim.throttling.tiers import DEFAULT_TIERS


async def app(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
    return None


def test_wso2_defaults_present_and_overridable() -> None:
    tiers = parse_tiers({"Gold": "7/minute", "Platinum": "10/second;1000/hour"})
    assert set(DEFAULT_TIERS) <= set(tiers)
    assert tiers["Gold"].limits == (RateLimitItemPerMinute(7),)
    assert tiers["Bronze"].limits == (RateLimitItemPerMinute(1000),)
    assert tiers["Unauthenticated"].limits == (RateLimitItemPerMinute(500),)
    assert tiers["Unlimited"].unlimited
    assert tiers["Platinum"].limits == (RateLimitItemPerSecond(10), RateLimitItemPerHour(1000))


def test_limits_sorted_shortest_window_first_and_deduplicated() -> None:
    tier = parse_tier("T", "1000/hour; 10/second; 10/second")
    assert [i.get_expiry() for i in tier.limits] == [1, 3600]


@pytest.mark.parametrize("value", ["unlimited", "Unlimited", " UNLIMITED "])
def test_unlimited_any_case(value: str) -> None:
    assert parse_tier("X", value).unlimited


@pytest.mark.parametrize(
    "value",
    [
        "",
        "  ",
        "lots",
        "5/fortnight",
        "-1/minute",
        "0/minute",
        "10/second;0/hour",
        "five per minute",
        "10/second;bogus",
    ],
)
def test_bad_limit_names_the_key(value: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_tier("Shiny", value)
    assert info.value.key == "throttling.tiers.Shiny"


def test_middleware_parses_tiers_at_start_up() -> None:
    with pytest.raises(ConfigError) as info:
        ThrottlingMiddleware(app, tiers={"Broken": "many/minute"})
    assert info.value.key == "throttling.tiers.Broken"


def test_from_config_refuses_a_bad_tier_string(tmp_path: Path) -> None:
    cfg = tmp_path / "deployment.toml"
    cfg.write_text(
        '[encryption]\nkey = "' + "ab" * 32 + '"\n[throttling.tiers]\nGold = "5000/minute"\nOdd = "twice/day"\n'
    )
    with pytest.raises(ConfigError) as info:  # by the configuration loader or, at the latest, the middleware
        ThrottlingMiddleware.from_config(app, load_config(cfg))
    assert info.value.key == "throttling.tiers.Odd"


def test_unknown_tier_name_in_an_api_is_refused_at_start_up(tmp_path: Path) -> None:
    cfg = tmp_path / "deployment.toml"
    cfg.write_text(
        '[encryption]\nkey = "' + "ab" * 32 + '"\n'
        '[[apis]]\nname = "pets"\ncontext = "/pets"\ntier = "Diamond"\n[apis.security]\napplication = ["basic"]\n'
    )
    with pytest.raises(ConfigError, match="Diamond"):
        load_config(cfg)


def test_missing_default_tier_is_refused() -> None:
    with pytest.raises(ConfigError, match="Nobody"):
        ThrottlingMiddleware(app, tiers={}, default_tier="Nobody")


@pytest.mark.parametrize(
    ("key", "kw"), [("throttling.strategy", {"strategy": "leaky"}), ("throttling.headers", {"headers": "both"})]
)
def test_bad_strategy_or_header_style(key: str, kw: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as info:
        ThrottlingMiddleware(app, tiers={}, **kw)
    assert info.value.key == key


@pytest.mark.parametrize("uri", ["nowhere", "bogus://x", "valkey://127.0.0.1:1"])
def test_bad_storage_uri(uri: str) -> None:
    with pytest.raises(ConfigError) as info:
        ThrottlingMiddleware(app, tiers={}, storage=uri)
    assert info.value.key == "throttling.storage"


def test_storage_uri_password_never_in_the_error() -> None:
    with pytest.raises(ConfigError) as info:
        ThrottlingMiddleware(app, tiers={}, storage="bogus://admin:hunter2@127.0.0.1:1")
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize(
    "uri",
    [
        "redis://127.0.0.1:notaport/0?password=hunter2pw",  # a password in the query, and a URI that does not parse
        "redis://:hunter2pw@[::1:16381/0",  # an IPv6 host left open: urlsplit refuses it
        "redis://127.0.0.1:notaport/0?sentinel_password=hunter2pw&ssl_cert_reqs=none&x=",
        "bogus://u:hunter2pw@127.0.0.1:1",
        "redis+cluster://admin:hunter2pw@127.0.0.1:notaport",
    ],
)
def test_no_form_of_storage_uri_shows_its_password(uri: str) -> None:
    with pytest.raises(ConfigError) as info:
        open_storage(uri)
    assert "hunter2pw" not in str(info.value)
    if uri.startswith("bogus"):
        assert "unknown storage scheme" in str(info.value)  # the user name "u" masks no other text


_FORMS = [
    "redis://:{p}@127.0.0.1:6379/0",
    "redis://user:{p}@host:1/0",
    "redis://h:1/0?password={p}",
    "redis://h:1/0?x=1&auth_token={p}",
    "valkey://a:{p}@[::1/0",
    "redis://{p}@h/0",
]


@given(
    st.text(st.characters(min_codepoint=33, max_codepoint=0x2FF, blacklist_characters="&;#*"), min_size=3, max_size=30),
    st.sampled_from(_FORMS),
)
def test_a_redacted_uri_never_holds_its_password(password: str, form: str) -> None:
    assume(password not in form.replace("{p}", " "))  # not a piece of the URI's other text
    uri = form.format(p=password)
    assert password not in redact(uri).replace("***", "")
    assert password not in redact(uri, f"{uri}: failed near {password!s}").replace("***", "").replace(WITHHELD, "")
