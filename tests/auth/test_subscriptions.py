"""Subscription claims read with WSO2's meaning: parsing (properties), matching, tiers."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asgi_apim.auth.subscriptions import (
    NotSubscribed,
    Subscription,
    SubscriptionClaimError,
    Subscriptions,
    read_subscriptions,
    tiers_for,
)
from asgi_apim.config import ApiConfig

PIZZA = ApiConfig(name="pizzashack", context="/pizzashack")
PETS = ApiConfig(name="pets", context="/pets/")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=6,
)
entry_keys = st.sampled_from(["name", "context", "version", "subscriptionTier", "publisher", "x"])
entries = st.dictionaries(entry_keys, json_values | st.text(max_size=20), max_size=6)
claims = st.fixed_dictionaries(
    {},
    optional={
        "subscribedAPIs": st.lists(entries, max_size=5) | json_values,
        "allowedAPIs": st.lists(entries, max_size=5) | json_values,
        "application": st.dictionaries(
            st.sampled_from(["id", "uuid", "name", "tier", "owner"]), json_values, max_size=5
        )
        | json_values,
    },
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(claims)
def test_any_claims_read_or_refused_cleanly(value: dict[str, Any]) -> None:
    """Whatever a token carries: subscriptions, None, or SubscriptionClaimError; never anything else."""
    try:
        found = read_subscriptions(value)
    except SubscriptionClaimError:
        return
    if found is None:
        assert "subscribedAPIs" not in value and "allowedAPIs" not in value
        return
    listed = value["subscribedAPIs"] if "subscribedAPIs" in value else value["allowedAPIs"]
    assert len(found.entries) == len(listed)
    for entry, raw in zip(found.entries, listed):
        assert (entry.name, entry.context, entry.version, entry.tier) == (
            raw.get("name"),
            raw.get("context"),
            raw.get("version"),
            raw.get("subscriptionTier"),
        )
    assert found.application_tier is None or isinstance(found.application_tier, str)


@given(st.text(min_size=1, max_size=30), st.text(max_size=10))
def test_an_entry_opens_only_its_api(name: str, version: str) -> None:
    api = ApiConfig(name=name, context=f"/{name.replace('/', '')}")
    subs = read_subscriptions({"subscribedAPIs": [{"name": name, "version": version}]})
    assert subs is not None and subs.find(api) is not None
    other = ApiConfig(name=name + "x", context="/elsewhere-" + name.replace("/", ""))
    assert subs.find(other) is None or other.context == api.context


def test_subscribed_apis_come_before_allowed_apis() -> None:
    subs = read_subscriptions({"subscribedAPIs": [{"name": "a"}], "allowedAPIs": [{"name": "b"}]})
    assert subs is not None and [e.name for e in subs.entries] == ["a"]
    mgw = read_subscriptions({"allowedAPIs": [{"name": "pets", "version": "*"}]})
    assert mgw is not None and mgw.find(PETS) == Subscription(name="pets", version="*")


@pytest.mark.parametrize(
    ("context", "version", "opens"),
    [
        ("/pizzashack", None, True),
        ("/pizzashack/", "1.0.0", True),
        ("/pizzashack/1.0.0", "1.0.0", True),  # WSO2 writes the versioned context
        ("/pizzashack/1.0.0", "2.0.0", False),
        ("/pizzashack/1.0.0", "*", False),
        ("/pizza", "1.0.0", False),
        ("/pets", None, False),
    ],
)
def test_context_matching(context: str, version: str | None, opens: bool) -> None:
    assert Subscription(name="PizzaShackAPI", context=context, version=version).opens(PIZZA) is opens


@pytest.mark.parametrize(
    "bad",
    [
        {"subscribedAPIs": {"name": "pets"}},
        {"subscribedAPIs": ["pets"]},
        {"subscribedAPIs": [{"name": 1}]},
        {"allowedAPIs": [{"subscriptionTier": ["Gold"]}]},
        {"subscribedAPIs": [], "application": "shop"},
        {"subscribedAPIs": [], "application": {"tier": "Gold"}},
        {"subscribedAPIs": [], "application": {"id": True}},
        {"subscribedAPIs": [{}] * 2000},
    ],
)
def test_malformed_claims(bad: dict[str, Any]) -> None:
    with pytest.raises(SubscriptionClaimError):
        read_subscriptions(bad)


def test_application_identity_and_tier() -> None:
    subs = read_subscriptions(
        {"subscribedAPIs": [], "application": {"id": 7, "uuid": "u-1", "name": "Shop", "tier": "Gold"}}
    )
    assert subs == Subscriptions((), "u-1", "Gold")
    by_id = read_subscriptions({"subscribedAPIs": [], "application": {"id": 7, "name": "Shop"}})
    assert by_id is not None and (by_id.application, by_id.application_tier) == ("7", None)


def test_tiers_for() -> None:
    subs = Subscriptions((Subscription(name="pets", tier="Gold"), Subscription(name="pizzashack")), "app", "Silver")
    assert tiers_for(subs, PETS, "Unlimited", {"Gold", "Silver"}) == ("Gold", "Silver")
    assert tiers_for(subs, PIZZA, "Bronze", None) == ("Bronze", "Silver")
    with pytest.raises(NotSubscribed, match="not subscribed to API 'cats'") as info:
        tiers_for(subs, ApiConfig(name="cats", context="/cats"), "Gold", None)
    assert (info.value.status, info.value.code) == (403, 900908)
    with pytest.raises(NotSubscribed, match="'Silver'"):
        tiers_for(subs, PETS, "Gold", {"Gold"})


@pytest.mark.parametrize(
    ("entry", "opens"),
    [
        ({"name": "shop", "version": "1.0.0"}, True),
        ({"name": "shop", "version": "2.0.0"}, False),  # another version of the API
        ({"name": "shop", "version": "*"}, True),
        ({"name": "shop"}, True),
        ({"context": "/shop/1.0.0", "version": "1.0.0"}, True),  # the versioned context, as WSO2 writes it
        ({"context": "/shop", "version": "1.0.0"}, True),  # the unversioned context and the version
        ({"context": "/shop/2.0.0", "version": "2.0.0"}, False),
        ({"context": "/shop", "version": "2.0.0"}, False),
    ],
)
def test_a_versioned_api_is_opened_by_its_own_version_only(entry: dict[str, Any], opens: bool) -> None:
    api = ApiConfig(name="shop", context="/shop/1.0.0", version="1.0.0", unversioned_context="/shop")
    assert Subscription(**{k if k != "subscriptionTier" else "tier": v for k, v in entry.items()}).opens(api) is opens
