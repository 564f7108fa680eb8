"""Endpoint groups: round robin, failover order, WSO2's suspension growing by its factor up to its maximum."""

from __future__ import annotations

import pytest

from asgi_apim.errors import EndpointsSuspended
from asgi_apim.gateway.endpoints import Address, Endpoint, EndpointGroup
from asgi_apim.gateway_config import BackendConfig, SuspensionConfig


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_endpoint_address_path_and_host() -> None:
    s = SuspensionConfig()
    e = Endpoint("https://Example.org/api/v1/", s)
    assert (
        e.address == Address("https", "example.org", 443) and e.path == b"/api/v1" and e.host_header == b"example.org"
    )
    e = Endpoint("http://[::1]:8080", s)
    assert e.address == Address("http", "::1", 8080) and e.path == b"" and e.host_header == b"[::1]:8080"
    assert Endpoint("http://h/a%20b", s).path == b"/a%20b"


def test_suspension_grows_by_its_factor_up_to_the_maximum_and_one_success_resets() -> None:
    clock = Clock()
    e = Endpoint("http://h", SuspensionConfig(initial=10, factor=3, max=50), clock)
    durations = []
    for _ in range(4):
        e.failed("ConnectFailed")
        durations.append(e.suspended_until - clock.now)
        assert not e.available(clock.now)
    assert durations == [10, 30, 50, 50]
    clock.now = e.suspended_until
    assert e.available(clock.now) and e.state(clock.now)["state"] == "active"
    e.succeeded()
    e.failed("x")
    assert e.suspended_until - clock.now == 10


def test_initial_zero_never_suspends() -> None:
    e = Endpoint("http://h", SuspensionConfig(initial=0))
    e.failed("x")
    assert e.available(0) and e.failures == 1


def test_load_balance_is_round_robin_over_available_endpoints() -> None:
    clock = Clock()
    g = EndpointGroup(BackendConfig(("http://a", "http://b", "http://c"), "load_balance"), SuspensionConfig(), clock)
    firsts = [g.candidates()[0].address.host for _ in range(6)]
    assert firsts == ["a", "b", "c", "a", "b", "c"]
    g.endpoints[1].failed("x")
    orders = [[e.address.host for e in g.candidates()] for _ in range(3)]
    assert orders == [["a", "c"], ["c", "a"], ["c", "a"]]


def test_failover_is_in_order_and_all_suspended_is_303001() -> None:
    clock = Clock()
    g = EndpointGroup(BackendConfig(("http://a", "http://b"), "failover"), SuspensionConfig(initial=5), clock)
    assert [e.address.host for e in g.candidates()] == ["a", "b"]
    g.endpoints[0].failed("x")
    assert [e.address.host for e in g.candidates()] == ["b"]
    g.endpoints[1].failed("x")
    assert not g.ready()
    with pytest.raises(EndpointsSuspended) as info:
        g.candidates()
    assert (info.value.status, info.value.code) == (503, 303001)
    assert [s["state"] for s in g.state()] == ["suspended", "suspended"]
    clock.now += 5
    assert g.ready() and [e.address.host for e in g.candidates()] == ["a", "b"]
