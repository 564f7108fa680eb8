"""The floor of `bench/bench_floor.py` does the stack's work: same caller, same counts, same headers.

A floor that did less than the stack would flatter the comparison; one that
failed would not be measured at all. Here each floor answers one request
beside the stack in the same configuration."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from asgi_apim._keys import PEER
from tests.asgi import call_scope, echo_user

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import bench_floor  # noqa: E402
import bench_throttling  # noqa: E402
from harness import scope_factory  # noqa: E402


async def test_each_floor_admits_the_caller_the_stack_admits_and_counts_the_same(tmp_path: Path) -> None:
    (gold,), header = bench_throttling.stacks(tmp_path, ("Gold",))
    gold.throttle.app = echo_user  # the endpoint of the stack (its throttling stage is fused in) and of the floors
    make = scope_factory("GET", bench_throttling.PATH, [(bench_floor.HEADER, header)])
    ours = await call_scope(gold, make())
    assert ours.status == 200
    for count, headers, checks in (
        (False, False, False),
        (True, False, False),
        (True, True, False),
        (True, True, True),
    ):
        floor = bench_floor.floor(echo_user, gold, header, count=count, headers=headers, checks=checks)
        theirs = await call_scope(floor, make())
        assert theirs.status == 200
        assert theirs.json() == ours.json()  # the same principal: subject, alias, tier, API
        if headers:
            assert theirs.headers["ratelimit-policy"] == ours.headers["ratelimit-policy"]
            # a fresh count of its own: one taken, as the stack's first request
            assert theirs.headers["ratelimit"] == ours.headers["ratelimit"]
        else:
            assert "ratelimit" not in theirs.headers


async def test_the_floor_refuses_what_it_does_not_know(tmp_path: Path) -> None:
    (gold,), header = bench_throttling.stacks(tmp_path, ("Gold",))
    await call_scope(gold, scope_factory("GET", bench_throttling.PATH, [(bench_floor.HEADER, header)])())
    floor = bench_floor.floor(echo_user, gold, header, count=True, headers=True)
    twice = scope_factory("GET", bench_throttling.PATH, [(bench_floor.HEADER, header), (bench_floor.HEADER, header)])
    with pytest.raises(ValueError, match="two certificate headers"):
        await call_scope(floor, twice())
    untrusted = scope_factory("GET", bench_throttling.PATH, [(bench_floor.HEADER, header)], client=("192.0.2.1", 1))
    with pytest.raises(ValueError, match="trusted proxy"):
        await call_scope(floor, untrusted())


async def test_the_floor_with_every_check_refuses_what_the_stack_would_not_take_in_one_step(tmp_path: Path) -> None:
    (gold,), header = bench_throttling.stacks(tmp_path, ("Gold",))
    make = scope_factory("GET", bench_throttling.PATH, [(bench_floor.HEADER, header)])
    await call_scope(gold, make())
    floor = bench_floor.floor(echo_user, gold, header, count=True, headers=True, checks=True)
    assert not callable(getattr(floor, "__get__", None))  # an instance, called through its type, as a middleware is
    assert (await call_scope(floor, make())).status == 200
    relayed = make()
    relayed[PEER] = ("192.0.2.1", 1)  # the socket peer, which a trusted client address does not override
    with pytest.raises(ValueError, match="trusted proxy"):
        await call_scope(floor, relayed)
    gold.throttle.guard.down = True
    with pytest.raises(ValueError, match="storage retried"):
        await call_scope(floor, make())
    gold.throttle.guard.down = False
    gold.resolver._generation -= 1  # the truststore moved on since the hint was made
    with pytest.raises(ValueError, match="new truststore"):
        await call_scope(floor, make())
