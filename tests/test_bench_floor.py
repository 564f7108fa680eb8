"""The floor of `bench/bench_floor.py` does the stack's work: same caller, same counts, same headers.

A floor that did less than the stack would flatter the comparison; one that
failed would not be measured at all. Here each floor answers one request
beside the stack in the same configuration."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

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
    for count, headers in ((False, False), (True, False), (True, True)):
        floor = bench_floor.floor(echo_user, gold, header, count=count, headers=headers)
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
